"""Does the fused GroupNorm + SiLU kernel speed up the course's U-Net? One training step (forward, backward,
AdamW) of the gpu recipe's preset (UNet-L) at batch 256, timed with MINIGEN_KERNELS=reference (PyTorch's ops)
and =triton (the fused kernel), alternating, in the same process on the same GPU.

    PYTHONPATH=. python3 scripts/unet_step_time.py [--steps 50] [--batch 256]

First it checks that the two paths compute the same thing: one forward and backward of a copy of the model with
its zero-initialised layers perturbed (a fresh U-Net outputs exactly zero whatever its norms do), in eval mode (no
dropout), printing the largest differences of the outputs and of the parameter gradients. Then it prints ms per
step for each backend and their ratio. Needs a CUDA GPU that runs Triton.
"""
import argparse
import copy
import os
import statistics

import torch

from minigen.models.unet import UNET_PRESETS, UNet


def agreement(model, x, t, y):
    """Largest |difference| between the backends, relative to the output's (or gradient's) largest magnitude."""
    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in probe.parameters():
            p.add_(0.05 * torch.randn_like(p))
    got = {}
    for backend in ("reference", "triton"):
        os.environ["MINIGEN_KERNELS"] = backend
        probe.zero_grad(set_to_none=True)
        out = probe(x, t, y)
        out.square().mean().backward()
        got[backend] = [out.detach()] + [p.grad.detach().clone() for p in probe.parameters()]
    rel = [((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
           for a, b in zip(got["triton"], got["reference"])]
    return rel[0], max(rel[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("unet_step_time: needs a CUDA GPU")
    torch.manual_seed(0)
    model = UNet(UNET_PRESETS["UNet-L"]).cuda()  # what recipe("diffusion", "gpu") trains
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 1, 28, 28, device="cuda")
    t = torch.randint(0, 1000, (args.batch,), device="cuda")
    y = torch.randint(0, 11, (args.batch,), device="cuda")
    noise = torch.randn_like(x)
    out_err, grad_err = agreement(model, x, t, y)
    print(f"fused vs PyTorch GroupNorm+SiLU in the U-Net (fp32): output differs by {out_err:.1e}, parameter "
          f"gradients by {grad_err:.1e} at most (relative to their largest value)", flush=True)

    def step():
        loss = (model(x, t, y) - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {"reference": [], "triton": []}
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
    print(f"U-Net UNet-L preset, batch {args.batch}, one training step on {torch.cuda.get_device_name()}: "
          f"PyTorch ops {ms['reference']:.2f} ms, fused GroupNorm+SiLU {ms['triton']:.2f} ms, "
          f"speed-up {ms['reference'] / ms['triton']:.2f}x")


if __name__ == "__main__":
    main()
