"""Does the fused GroupNorm + SiLU kernel speed up the course's U-Net? One training step (forward, backward,
AdamW) of the gpu preset at batch 256, timed with MINIGEN_KERNELS=reference (PyTorch's ops) and =triton (the
fused kernel), alternating, in the same process on the same GPU.

    PYTHONPATH=. python3 scripts/unet_step_time.py [--steps 50]

Prints ms per step for each backend, the ratio, and the two backends' losses on one batch before training
(they must agree to rounding). Needs a CUDA GPU that runs Triton.
"""
import argparse
import os
import statistics

import torch

from minigen.models.unet import UNET_PRESETS, UNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("unet_step_time: needs a CUDA GPU")
    torch.manual_seed(0)
    model = UNet(UNET_PRESETS["gpu"]).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 1, 28, 28, device="cuda")
    t = torch.randint(0, 1000, (args.batch,), device="cuda")
    y = torch.randint(0, 11, (args.batch,), device="cuda")
    noise = torch.randn_like(x)

    def step():
        loss = (model(x, t, y) - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    first, times = {}, {"reference": [], "triton": []}
    for backend in times:  # the same model and batch through both backends, before any step changes the weights
        os.environ["MINIGEN_KERNELS"] = backend
        with torch.no_grad():
            first[backend] = (model(x, t, y) - noise).square().mean().item()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(args.steps + 3):
        for backend in times:
            os.environ["MINIGEN_KERNELS"] = backend
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            if i >= 3:  # warm-up: compilation, autotuning, cuDNN's algorithm search
                times[backend].append(start.elapsed_time(end))
    ms = {b: statistics.median(v) for b, v in times.items()}
    print(f"U-Net gpu preset, batch {args.batch}, one training step on {torch.cuda.get_device_name()}: "
          f"PyTorch ops {ms['reference']:.2f} ms, fused GroupNorm+SiLU {ms['triton']:.2f} ms, "
          f"ratio {ms['reference'] / ms['triton']:.2f}x; loss before training {first['reference']:.6f} (PyTorch) "
          f"vs {first['triton']:.6f} (fused)")


if __name__ == "__main__":
    main()
