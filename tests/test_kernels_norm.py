"""Fused LayerNorm + adaLN modulate, gated residual and GroupNorm + SiLU against their fp32 references
(DESIGN section 5: 2x tolerance rule; odd sizes; non-contiguous inputs; a stride-0 grad_output)."""
import kernel_checks
import pytest
import torch

from minigen.kernels import (_dispatch, gated_residual, gated_residual_reference, groupnorm_silu,
                             groupnorm_silu_reference, layernorm_modulate, layernorm_modulate_reference)

DEVICE = "cuda" if torch.cuda.is_available() and not _dispatch.interpreting() else "cpu"
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
LOW = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])

if _dispatch.triton is None:
    pytestmark = pytest.mark.skip(reason="triton is not installed")
elif DEVICE == "cpu" and not _dispatch.interpreting():
    pytestmark = pytest.mark.skip(reason="triton was imported before TRITON_INTERPRET=1 was set; run with it set")


def check_2x(name, out, ref32, low, dtype):
    """Norm outputs grow with |scale|, so the atol is relative to the reference's magnitude."""
    kernel_checks.check_2x(name, out, ref32, low, ATOL[dtype] * max(1.0, ref32.abs().max().item()))


def compare(kernel, reference, inputs, dtype, grad_output):
    """Forward and every input's gradient: kernel in `dtype`, reference in fp32 and in `dtype`."""
    def run(fn, cast):
        leaves = [t.detach().to(DEVICE, cast).requires_grad_(True) for t in inputs]
        out = fn(*leaves)
        out.backward(grad_output.to(DEVICE, cast))
        return out.detach(), [t.grad for t in leaves]
    out, grads = run(kernel, dtype)
    ref, ref_grads = run(reference, torch.float32)
    low, low_grads = run(reference, dtype)
    check_2x("out", out, ref, low, dtype)
    for i, (g, r, lo) in enumerate(zip(grads, ref_grads, low_grads)):
        check_2x(f"grad {i}", g, r, lo, dtype)


def randn(*shape, seed=0, scale=1.0, offset=0.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale + offset


@pytest.mark.parametrize("B, N, C, dtype", [(2, 97, 72, torch.float32), (2, 113, 40, torch.float16),
                                            (1, 7, 1152, torch.float32),
                                            (2, 41, 1152, torch.float32)] + [(2, 33, 96, d) for d in LOW[1:]])
def test_layernorm_modulate(B, N, C, dtype):
    inputs = [randn(B, N, C, scale=2.0, offset=3.0), randn(B, C, seed=1), randn(B, C, seed=2, scale=0.3)]
    compare(lambda x, s, t: layernorm_modulate(x, s, t, backend="triton"), layernorm_modulate_reference, inputs,
            dtype, grad_output=randn(B, N, C, seed=3))


def test_layernorm_modulate_strided_and_stride0_grad():
    """x transposed (non-contiguous), shift/scale chunks of one (B, 2C) adaLN output, grad_output of all 0 strides."""
    B, N, C = 2, 97, 40
    x_store = randn(B, C, N).to(DEVICE).requires_grad_(True)
    ada = randn(B, 2 * C, seed=1).to(DEVICE).requires_grad_(True)
    results = []
    for fn in (lambda *a: layernorm_modulate(*a, backend="triton"), layernorm_modulate_reference):
        shift, scale = ada.chunk(2, dim=1)  # (B, C) each, batch stride 2C
        fn(x_store.transpose(1, 2), shift, scale).sum().backward()
        results.append((x_store.grad.clone(), ada.grad.clone()))
        x_store.grad = ada.grad = None
    for name, got, want in zip(("dx", "dada"), *results):
        check_2x(name, got, want, want, torch.float32)


@pytest.mark.parametrize("B, N, C, dtype", [(2, 97, 72, d) for d in [torch.float32] + LOW]
                         + [(2, 41, 1152, torch.float32)])  # several row chunks per program
def test_gated_residual(B, N, C, dtype):
    inputs = [randn(B, N, C), randn(B, N, C, seed=1), randn(B, C, seed=2)]
    compare(lambda x, y, g: gated_residual(x, y, g, backend="triton"), gated_residual_reference, inputs, dtype,
            grad_output=randn(B, N, C, seed=3))


@pytest.mark.parametrize("shape, groups, dtype", [((2, 12, 9, 11), 4, torch.float32),
                                                  ((2, 64, 17, 17), 32, torch.float16),
                                                  ((1, 6, 97), 3, torch.float32)]
                         + [((2, 64, 16, 16), 32, d) for d in LOW[1:]])
def test_groupnorm_silu(shape, groups, dtype):
    C = shape[1]
    inputs = [randn(*shape, scale=2.0, offset=5.0), randn(C, seed=1, offset=1.0), randn(C, seed=2)]
    compare(lambda x, w, b: groupnorm_silu(x, groups, w, b, backend="triton"),
            lambda x, w, b: groupnorm_silu_reference(x, groups, w, b), inputs, dtype,
            grad_output=randn(*shape, seed=3))


def test_groupnorm_silu_channels_last_no_affine_stride0_grad():
    x = randn(2, 8, 5, 7, offset=-2.0).to(DEVICE, memory_format=torch.channels_last).requires_grad_(True)
    got = groupnorm_silu(x, 2, None, None, backend="triton")
    got.sum().backward()  # grad_output (2, 8, 5, 7) with strides all 0
    dx = x.grad.clone()
    x.grad = None
    want = groupnorm_silu_reference(x, 2, None, None)
    want.sum().backward()
    check_2x("out", got, want, want, torch.float32)
    check_2x("dx", dx, x.grad, x.grad, torch.float32)


@pytest.mark.parametrize("call, message", [
    (lambda: layernorm_modulate(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5)), "x must have 3 dim"),
    (lambda: layernorm_modulate(torch.zeros(2, 3, 5), torch.zeros(2, 4), torch.zeros(2, 5)),
     r"shift must have shape \(2, 5\)"),
    (lambda: layernorm_modulate(torch.zeros(2, 3, 5), torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.float16)),
     "scale has dtype torch.float16"),
    (lambda: gated_residual(torch.zeros(2, 3, 5), torch.zeros(2, 3, 4), torch.zeros(2, 5)), "y must have shape"),
    (lambda: groupnorm_silu(torch.zeros(2, 6, 4, 4), 4, None, None), "num_groups=4 must be a positive int"),
    (lambda: groupnorm_silu(torch.zeros(2, 6, 4, 4), 3, torch.zeros(5), None), r"weight must have shape \(6\)"),
    (lambda: groupnorm_silu(torch.zeros(2, 6, 4, 4, dtype=torch.int32), 3, None, None), "x must be a floating"),
])
def test_clear_errors(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_autotune_candidates_on_a_gpu(monkeypatch):
    """The tiles a compiled run tunes over (the interpreter uses one fixed tile): near 4096 elements first, the rows
    loop's BLOCK_R dividing ROWS, the smallest allowed tile when none fits the window, two with MINIGEN_AUTOTUNE=0."""
    import sys
    norm = sys.modules["minigen.kernels.norm"]

    def kept(tuned, **args):
        return [(c.kwargs, c.num_warps) for c in tuned.early_config_prune(tuned.configs, {}, **args)]

    monkeypatch.delenv("MINIGEN_AUTOTUNE", raising=False)
    fwd = kept(norm._ln_modulate_fwd_tuned, BLOCK_C=2048, N=256, C=1152)  # DiT-XL: C = 1152 pads to 2048
    assert fwd[0] == ({"BLOCK_R": 2}, 4) and {m["BLOCK_R"] for m, _ in fwd} == {1, 2, 4}
    assert all(m["BLOCK_R"] <= 16 for m, _ in kept(norm._ln_modulate_bwd_tuned, BLOCK_C=128, ROWS=16, N=97, C=72))
    assert kept(norm._groupnorm_silu_bwd_tuned, BLOCK_CG=512, S=9, C=512, GROUP_C=512) == [({"BLOCK_S": 16}, 4)]
    monkeypatch.setenv("MINIGEN_AUTOTUNE", "0")
    assert len(kept(norm._groupnorm_silu_fwd_tuned, BLOCK_CG=8, S=4096, C=256, GROUP_C=8)) == 2


def test_dispatch(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    assert _dispatch.choose_backend("layernorm_modulate", None, cpu) == "reference"
    monkeypatch.setenv("MINIGEN_KERNELS", "sdpa")  # meant for attention: the norms take their reference
    assert _dispatch.choose_backend("layernorm_modulate", None, cpu) == "reference"
    with pytest.raises(ValueError, match="backend='sdpa' is not a backend for it"):
        layernorm_modulate(torch.zeros(1, 2, 4), torch.zeros(1, 4), torch.zeros(1, 4), backend="sdpa")


def test_triton_runs_by_default_only_where_a_gpu_measurement_says_it_wins(monkeypatch):
    """On a GPU that can run Triton: the norms' forwards (1.2-2.4x eager on the H200) take the kernel, calls that
    autograd records (fwd+bwd 0.34-0.68x) and attention (below SDPA at every recorded shape) take their fallback;
    asking for Triton still gets it."""
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    monkeypatch.setattr(_dispatch, "triton_can_run", lambda device: (True, ""))
    gpu = torch.device("cuda")
    choose = _dispatch.choose_backend
    for op in ("layernorm_modulate", "groupnorm_silu"):
        assert choose(op, None, gpu, training=False) == "triton"
        assert choose(op, None, gpu, training=True) == "reference"
        assert choose(op, "triton", gpu, training=True) == "triton"
    assert choose("gated_residual", None, gpu) == "reference"
    for training in (False, True):
        assert choose("attention", None, gpu, fallback="sdpa", training=training) == "sdpa"
    monkeypatch.setenv("MINIGEN_KERNELS", "triton")
    assert choose("attention", None, gpu, fallback="sdpa", training=True) == "triton"
    x = torch.zeros(2, 3, requires_grad=True)
    assert _dispatch.records_grad(x, None) and not _dispatch.records_grad(x.detach())
    with torch.no_grad():
        assert not _dispatch.records_grad(x)


def test_kernels_compile_for_hopper_without_a_gpu():
    """Triton's compiler, which the interpreter never runs: every norm kernel to an sm_90 cubin, interpreter off."""
    rows = dict(BLOCK_R=2, BLOCK_C=2048)  # DiT-XL's C = 1152
    groups = dict(GROUP_C=8, BLOCK_CG=8, BLOCK_S=512)  # C = 256 in 32 groups
    # the integer arguments of a launch at those sizes (Triton marks those divisible by 16; DiT's adaLN vectors are
    # chunks of a (B, 6C) tensor)
    ints = dict(N=256, C=1152, S=64 * 64, shift_b_stride=6 * 1152, scale_b_stride=6 * 1152, gate_b_stride=6 * 1152,
                dy_b_stride=256 * 1152, dy_n_stride=1152, dout_b_stride=256 * 1152, dout_n_stride=1152)
    specs = [dict(kernel=f"norm.{name}", constexprs=constexprs, num_warps=8, num_stages=1,
                  ints=dict(ints, C=256) if "groupnorm" in name else ints)
             for name, constexprs in (("_ln_modulate_fwd_kernel", rows),
                                      ("_ln_modulate_bwd_kernel", dict(rows, ROWS=16)),
                                      ("_gated_residual_fwd_kernel", rows),
                                      ("_gated_residual_bwd_kernel", dict(rows, ROWS=16)),
                                      ("_groupnorm_silu_fwd_kernel", groups), ("_groupnorm_silu_bwd_kernel", groups))]
    built = kernel_checks.compile_for_hopper(specs)
    for result in built:
        print(result.kernel, result)
    assert [r.kernel for r in built] == [s["kernel"].split(".")[1] for s in specs]
    assert all(not r.spilled_bytes for r in built)
