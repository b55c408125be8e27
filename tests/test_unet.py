"""The U-Net denoiser: shapes, conditioning, zero-init, clear errors, and that it learns."""
import os

import pytest
import torch

from minigen.diffusion import Diffusion, ddim_sample, make_schedule
from minigen.kernels import _dispatch
from minigen.exercises import diffusion as ex
from minigen.models.unet import UNET_PRESETS, ResBlock, UNet, UNetConfig, num_parameters, timestep_embedding


def _perturbed(config: UNetConfig) -> UNet:
    model = UNet(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # undo the zero-init so outputs depend on every input
    return model


def test_shapes_parameter_counts_and_zero_init():
    assert {k: num_parameters(UNet(c)) for k, c in UNET_PRESETS.items()} == {
        "UNet-S": 135348, "UNet-B": 551140, "UNet-L": 1762132, "UNet-F": 554348, "UNet-F-L": 3133132}
    assert num_parameters(UNet(UNET_PRESETS["UNet-L"])) * 2 < 4 * 2**20  # fits a 4 MB fp16 course checkpoint
    model = UNet(UNET_PRESETS["UNet-S"])
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999])
    out = model(x, t, torch.tensor([1, 2, 10]))
    assert out.shape == x.shape and torch.all(out == 0)   # zero-init output layer: eps_hat = 0 at step 0


def test_conditioning_on_time_and_label_and_null_label():
    model = _perturbed(UNET_PRESETS["UNet-S"]).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([100, 100])
    a = model(x, t, torch.tensor([3, 3]))
    assert not torch.allclose(a, model(x, t, torch.tensor([4, 4])))
    assert not torch.allclose(a, model(x, torch.tensor([700, 700]), torch.tensor([3, 3])))
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([10, 10])))  # y=None is the null label
    emb = timestep_embedding(torch.tensor([0, 5]), 8)
    assert emb.shape == (2, 8) and torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_clear_errors():
    model = UNet(UNET_PRESETS["UNet-S"])
    with pytest.raises(ValueError, match=r"x of shape \(B, 1, 28, 28\)"):
        model(torch.randn(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="t of shape"):
        model(torch.randn(2, 1, 28, 28), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels in"):
        model(torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(UNetConfig(width=16, num_classes=None))(torch.randn(1, 1, 28, 28), torch.zeros(1, dtype=torch.long),
                                                   torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        UNet(UNetConfig(image_size=30))


def test_learns_and_samples():
    torch.manual_seed(0)
    model = UNet(UNetConfig(width=8, attention=True))
    diffusion = Diffusion(model, make_schedule("cosine", 100), num_classes=10)
    x = torch.rand(8, 1, 28, 28).round() * 2 - 1
    y = torch.arange(8) % 10
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = diffusion.loss((x, y))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    out = ddim_sample(model.eval(), diffusion.schedule, (4, 1, 28, 28), steps=3, y=torch.arange(4), guidance=2.0,
                      null_label=10, clip_x0=1.0)
    assert out.shape == (4, 1, 28, 28) and torch.isfinite(out).all()


def test_exercise_checkers_accept_the_solution_and_reject_a_wrong_one():
    def q_sample(ab, x0, t, noise):
        a = ab[t].float().reshape(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def ddim_step(x_t, eps, ab_t, ab_prev):
        x0 = (x_t - (1 - ab_t) ** 0.5 * eps) / ab_t ** 0.5
        return ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * eps

    ex.check_q_sample(q_sample, strict=True)
    ex.check_ddim_step(ddim_step, strict=True)
    with pytest.raises(AssertionError, match="q_sample"):
        ex.check_q_sample(lambda ab, x0, t, noise: q_sample(ab, x0, t, noise) + 0.01, strict=True)
    with pytest.raises(AssertionError, match="ddim_step"):
        ex.check_ddim_step(lambda x_t, eps, ab_t, ab_prev: ddim_step(x_t, eps, ab_t, ab_prev) * 1.01, strict=True)


def test_group_norm_silu_is_the_two_pytorch_ops_on_cpu_and_keeps_the_parameters():
    """minigen.nn.group_norm_silu: bit for bit F.silu(norm(x)) on the CPU (the notebooks' numbers do not move), and
    the GroupNorm module still owns the parameters, so checkpoints are the same whichever backend ran."""
    import torch.nn.functional as F
    from minigen.nn import group_norm_silu
    norm = torch.nn.GroupNorm(4, 12)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 12, 7, 5, requires_grad=True)
    out = group_norm_silu(norm, x)
    assert torch.equal(out, F.silu(norm(x)))
    out.sum().backward()
    assert norm.weight.grad is not None and x.grad is not None
    assert "down.0.0.norm1.weight" in UNet(UNET_PRESETS["UNet-S"]).state_dict()


_GPU = os.environ.get("MINIGEN_TEST_GPU") == "1" and torch.cuda.is_available()


@pytest.mark.skipif(not (_GPU or _dispatch.interpreting()),
                    reason="needs a GPU (MINIGEN_TEST_GPU=1) or Triton's interpreter (TRITON_INTERPRET=1)")
def test_unet_runs_its_group_norms_through_the_triton_kernel(monkeypatch):
    """With the Triton backend (the default on a GPU; on the CPU the interpreter), the U-Net's output and parameter
    gradients match the PyTorch path: the fused GroupNorm + SiLU is what the model runs."""
    from minigen.kernels import norm as norm_kernels
    device = "cuda" if _GPU else "cpu"
    # fp32 means fp32 on a GPU too: TF32 convolutions (cuDNN's default; matmuls are fp32 by default) round their
    # inputs to 10 bits, which turns the kernel's 1e-7 differences into 1e-3 ones downstream
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = _perturbed(UNET_PRESETS["UNet-S"]).to(device)
    x, t, y = (v.to(device) for v in (torch.randn(2, 1, 28, 28), torch.tensor([10, 900]), torch.tensor([3, 10])))

    def run(backend):
        monkeypatch.setenv("MINIGEN_KERNELS", backend)
        model.zero_grad()
        out = model(x, t, y)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    calls = []
    monkeypatch.setattr(norm_kernels.GroupNormSiLU, "apply", lambda *a, f=norm_kernels.GroupNormSiLU.apply:
                        calls.append(a[0].shape) or f(*a))
    out, grads = run("triton")
    assert len(calls) == sum(isinstance(m, ResBlock) for m in model.modules()) + 1  # every norm1, and norm_out
    ref, ref_grads = run("reference")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)
