"""The Triton temporal attention against its fp32 reference (DESIGN section 5: the 2x tolerance rule).

On a CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py before triton is imported;
MINIGEN_TEST_GPU=1 runs them compiled on CUDA, and bf16 is tested too). q, k, v are views of one (B, T, S, 3, H, D)
qkv tensor, as a video block's projection makes them, so every test reads non-contiguous inputs by their strides.
Sizes are odd on purpose (T = 7, 13, 33, 97; S = 5, 3; head dim 40) and small, because the interpreter runs every
program one after another. The tests that need no Triton (reference vs SDPA, errors, FLOPs, the bench) run
without it.
"""
import sys

import kernel_checks
import pytest
import torch

from minigen.kernels import _dispatch, temporal_attention, temporal_attention_flops, temporal_attention_reference

TA = sys.modules["minigen.kernels.temporal_attention"]  # (minigen.kernels.temporal_attention is the function)

DEVICE = "cuda" if torch.cuda.is_available() and not _dispatch.interpreting() else "cpu"
LOW = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])  # the interpreter has no bf16
ATOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}

NO_TRITON = "triton is not installed" if _dispatch.triton is None else \
    "triton was imported before TRITON_INTERPRET=1 was set; run with it set" \
    if DEVICE == "cpu" and not _dispatch.interpreting() else None  # why the Triton path cannot run here, or None
needs_triton = pytest.mark.skipif(NO_TRITON is not None, reason=NO_TRITON or "")


def make_qkv(B, T, S, H, D, dtype, seed=0):
    """A leaf qkv (B, T, S, 3, H, D) and its three (B, T, S, H, D) views q, k, v (non-contiguous)."""
    qkv = torch.randn(B, T, S, 3, H, D, generator=torch.Generator().manual_seed(seed))
    qkv = qkv.to(DEVICE, dtype).requires_grad_(True)
    return qkv, qkv.unbind(3)


def run_and_grad(fn, qkv, do, **kw):
    """fn on the views of `qkv`; the output and the gradients of q, k and v (slices of qkv's gradient)."""
    qkv.grad = None
    out = fn(*qkv.unbind(3), **kw)
    if do is None:
        out.sum().backward()  # grad_output: a (B, T, S, H, D) expand of one value, all strides 0
    else:
        out.backward(do)
    return out.detach(), list(qkv.grad.unbind(3))


def compare(qkv, do, **kw):
    """Kernel vs fp32 reference vs PyTorch in qkv's dtype, forward and the three gradients."""
    dtype = qkv.dtype
    out, grads = run_and_grad(lambda *a, **k_: temporal_attention(*a, backend="triton", **k_), qkv, do, **kw)
    ref, ref_grads = run_and_grad(temporal_attention_reference, qkv.detach().float().requires_grad_(True),
                                  None if do is None else do.float(), **kw)
    low, low_grads = run_and_grad(temporal_attention_reference, qkv, do, **kw)
    assert out.shape == qkv.shape[:3] + qkv.shape[4:]
    kernel_checks.check_2x("out", out, ref, low, ATOL[dtype])
    for name, g, r, lo in zip(("dq", "dk", "dv"), grads, ref_grads, low_grads):
        kernel_checks.check_2x(name, g, r, lo, ATOL[dtype])


@needs_triton
@pytest.mark.parametrize("T, S, H, D, causal, dtype", [
    (7, 5, 2, 16, False, torch.float32),
    (13, 3, 2, 40, True, torch.float16),
    (16, 2, 2, 16, True, torch.float32),
    (7, 5, 1, 40, False, torch.float16),
    (33, 2, 1, 16, True, torch.float32),  # 64-frame tile
    (97, 1, 1, 16, True, torch.float32),  # 128-frame tile: two key tiles, the online softmax's rescaling
])
def test_forward_and_gradients(T, S, H, D, causal, dtype):
    qkv, _ = make_qkv(2, T, S, H, D, dtype)
    do = torch.randn(2, T, S, H, D, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    compare(qkv, do, causal=causal)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_stride0_grad_output(dtype):
    """out.sum().backward(): dO is an expand with all strides 0, read by its strides as it is."""
    qkv, _ = make_qkv(1, 7, 3, 2, 16, dtype, seed=3)
    compare(qkv, None, causal=dtype == torch.float16)


@needs_triton
@pytest.mark.parametrize("dtype", LOW[1:])
def test_bf16_on_gpu(dtype):
    qkv, _ = make_qkv(2, 16, 33, 4, 64, dtype)
    compare(qkv, torch.randn(2, 16, 33, 4, 64, device=DEVICE, dtype=dtype), causal=True)


@needs_triton
def test_kernel_reads_strided_inputs_in_place():
    """q, k, v with permuted, non-unit head-dim strides (v transposed in D and H), a scale, no copies asked for;
    the output is a new contiguous tensor."""
    g = torch.Generator().manual_seed(4)
    B, T, S, H, D = 1, 5, 3, 2, 24
    q = torch.randn(B, S, T, H, D, generator=g).to(DEVICE).transpose(1, 2)  # (B, T, S, H, D), S before T in memory
    k = torch.randn(B, T, S, D, H, generator=g).to(DEVICE).transpose(3, 4)  # head-dim stride H
    v = torch.randn(D, B, T, S, H, generator=g).to(DEVICE).permute(1, 2, 3, 4, 0)  # head dim outermost
    out = temporal_attention(q, k, v, scale=0.3, backend="triton")
    assert out.is_contiguous()
    kernel_checks.check_2x("strided", out, temporal_attention_reference(q, k, v, scale=0.3),
                           temporal_attention_reference(q, k, v, scale=0.3), ATOL[torch.float32])


@pytest.mark.parametrize("backend", ["triton", "sdpa", "reference"])
def test_one_frame_gives_v(backend):
    """With T = 1 each query sees only its own frame: the output is v, causal or not."""
    if backend == "triton" and NO_TRITON:
        pytest.skip(NO_TRITON)
    _, (q, k, v) = make_qkv(2, 1, 5, 2, 16, torch.float32)
    for causal in (False, True):
        torch.testing.assert_close(temporal_attention(q, k, v, causal=causal, backend=backend), v)


def test_reference_matches_sdpa_forward_and_gradients():
    """The readable reference and permute -> SDPA -> permute agree, with and without causal, gradients included."""
    for causal in (False, True):
        qkv, _ = make_qkv(2, 9, 5, 3, 24, torch.float32, seed=5)
        do = torch.randn(2, 9, 5, 3, 24, generator=torch.Generator().manual_seed(6)).to(DEVICE)
        out, grads = run_and_grad(lambda *a, **k: temporal_attention(*a, backend="sdpa", **k), qkv, do, causal=causal)
        ref, ref_grads = run_and_grad(temporal_attention_reference, qkv, do, causal=causal)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_reference_is_attention_across_frames():
    """Spelled out for one (b, s, h): softmax over the T frames of q.k / sqrt(D), causal = frames <= t."""
    _, (q, k, v) = make_qkv(1, 6, 4, 2, 8, torch.float64)
    out = temporal_attention_reference(q, k, v, causal=True)
    b, s, h = 0, 3, 1
    qs, ks, vs = (t[b, :, s, h] for t in (q, k, v))  # (T, D)
    scores = qs @ ks.T / 8 ** 0.5
    scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool, device=scores.device).triu(1), float("-inf"))
    torch.testing.assert_close(out[b, :, s, h], torch.softmax(scores, -1) @ vs)


def test_default_is_sdpa_on_cpu_and_cuda_until_measured(monkeypatch):
    """No GPU measurement recorded yet, so no backend asked means permute -> SDPA on every device; Triton only
    when asked for (backend="triton" or MINIGEN_KERNELS=triton)."""
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    assert _dispatch.TRITON_WINS["temporal_attention"] == (False, False)
    for device in ("cpu", "cuda"):
        for training in (False, True):
            assert _dispatch.choose_backend("temporal_attention", None, torch.device(device), fallback="sdpa",
                                            training=training) == "sdpa"
    calls, sdpa = [], TA._temporal_sdpa
    monkeypatch.setattr(TA, "_temporal_sdpa", lambda *a: calls.append(1) or sdpa(*a))
    _, (q, k, v) = make_qkv(1, 4, 3, 2, 16, torch.float32)
    temporal_attention(q, k, v)
    assert calls == [1]


@pytest.mark.parametrize("change, message", [
    (dict(q=torch.zeros(1, 4, 3, 16)), r"q must have 5 dimensions, expected \(B, T, S, H, D\)"),
    (dict(k=torch.zeros(1, 4, 3, 2, 8)), r"k must have shape \(1, 4, 3, 2, 16\)"),
    (dict(v=torch.zeros(1, 4, 5, 2, 16)), r"v must have shape \(1, 4, 3, 2, 16\)"),
    (dict(v=torch.zeros(1, 4, 3, 2, 16, dtype=torch.float64)), "v has dtype torch.float64"),
    (dict(q=torch.zeros(1, 4, 3, 2, 16, dtype=torch.int64)), "q must be a floating-point tensor"),
    (dict(q=torch.zeros(1, 4, 3, 2, 16, device="meta")), "k is on cpu but the input is on meta"),
    (dict(q=[0.0]), "q must be a torch.Tensor"),
    (dict(causal=1), "causal must be a bool"),
    (dict(scale=-1.0), "scale must be a positive number"),
])
def test_clear_errors(change, message):
    args = dict(q=torch.zeros(1, 4, 3, 2, 16), k=torch.zeros(1, 4, 3, 2, 16), v=torch.zeros(1, 4, 3, 2, 16),
                causal=False, scale=None)
    args.update(change)
    with pytest.raises((TypeError, ValueError), match=message):
        temporal_attention(args["q"], args["k"], args["v"], causal=args["causal"], scale=args["scale"])


@needs_triton
def test_triton_limits_are_clear_errors_when_asked_for():
    """Head dim over 128 or T over 128 frames: backend="triton" says why; the default falls back (to SDPA)."""
    for shape, message in (((1, 3, 2, 1, 136), "head dim D = 136 > 128"), ((1, 129, 1, 1, 16), "T = 129 > 128")):
        q = torch.zeros(shape, device=DEVICE)
        with pytest.raises(ValueError, match=message):
            temporal_attention(q, q, q, backend="triton")
    q = torch.zeros(1, 3, 2, 1, 20, device=DEVICE, dtype=torch.float64)
    with pytest.raises(TypeError, match="the Triton kernel takes float16, bfloat16 or float32"):
        temporal_attention(q, q, q, backend="triton")


def test_flops_count_the_matmuls():
    """Forward: the reference's two matmuls per (b, s, h), 2*T*T*D each, as PyTorch's FLOP counter counts them;
    forward+backward 3.5x that and causal half, as `attention_flops` (FlashAttention's convention) counts them."""
    from torch.utils.flop_counter import FlopCounterMode
    B, T, S, H, D = 2, 5, 3, 4, 8
    _, (q, k, v) = make_qkv(B, T, S, H, D, torch.float32)
    with FlopCounterMode(display=False) as counter:
        temporal_attention_reference(q.detach(), k.detach(), v.detach())
    assert counter.get_total_flops() == 2 * (2 * T * T * D) * B * S * H == temporal_attention_flops(B, T, S, H, D)
    fwd = temporal_attention_flops(B, T, S, H, D)
    assert temporal_attention_flops(B, T, S, H, D, backward=True) == 3.5 * fwd
    assert temporal_attention_flops(B, T, S, H, D, causal=True) == fwd / 2
    from minigen.kernels import attention_flops
    assert temporal_attention_flops(B, T, S, H, D, causal=True, backward=True) == \
        attention_flops(B * S, H, T, T, D, causal=True, backward=True)


def test_bench_temporal_runs_on_cpu(monkeypatch, capsys):
    """`python -m minigen.bench temporal` on a CPU: reference and SDPA rows in TFLOP/s, then full 3-D vs
    spatial + temporal in ms with the ratios, at a tiny shape."""
    import minigen.bench as bench
    monkeypatch.setattr(bench, "CPU_SHAPES", {**bench.CPU_SHAPES, "temporal": [("tiny", 1, 5, 6, 2, 16)]})
    rows = bench.run("temporal", device="cpu")
    out = capsys.readouterr().out
    assert "temporal_attention (TFLOP/s" in out and "full/(sp+t sdpa)" in out
    temporal = [r for r in rows if r["kernel"] == "temporal_attention"]
    assert {(r["contender"], r["mode"]) for r in temporal} == {(c, m) for c in ("reference", "sdpa")
                                                               for m in ("fwd", "fwd+bwd")}
    assert all(r["value"] > 0 for r in temporal)
    block = [r for r in rows if r["kernel"] == "temporal_block"]
    assert len(block) == 2 and all(b["full"] > 0 and b["spatial"] > 0 for b in block)


def test_block_contenders_are_attention_in_space_and_in_space_time():
    """The bench's full 3-D and spatial steps are plain attention over T*S tokens and over the S tokens of a frame."""
    import minigen.bench as bench
    _, (q, k, v) = make_qkv(1, 3, 4, 2, 8, torch.float64)
    B, T, S, H, D = q.shape
    joint = bench._full_3d(q, k, v)
    flat = [t.reshape(B, T * S, H, D).transpose(1, 2) for t in (q, k, v)]
    want = torch.softmax(flat[0] @ flat[1].transpose(-1, -2) / D ** 0.5, -1) @ flat[2]
    torch.testing.assert_close(joint, want.transpose(1, 2).reshape(B, T, S, H, D))
    frame = bench._spatial(q, k, v)[:, 1]  # (B, S, H, D) of frame 1
    qs, ks, vs = (t[:, 1].transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
    want = torch.softmax(qs @ ks.transpose(-1, -2) / D ** 0.5, -1) @ vs
    torch.testing.assert_close(frame, want.transpose(1, 2))


@needs_triton
def test_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter never runs Triton's compiler; this does (sm_90, bf16, in a subprocess with the interpreter
    off): it catches what only compiled mode rejects, and checks that at video sizes (T = 16 and 32 frames, head
    dim 64 and 128) neither kernel spills registers with the warps `_num_warps` gives them."""
    def unit(*names):
        return {f"{n}_d_stride": 1 for n in names}
    specs = []
    for T, D, causal in ((16, 64, False), (32, 128, True)):
        common = dict(HEAD_DIM=D, BLOCK_D=D, BLOCK_T=T, CAUSAL=causal, PRECISION="tf32")
        specs += [dict(kernel="temporal_attention._temporal_fwd_kernel", num_warps=TA._num_warps(T),
                       constexprs=dict(common, BLOCK_N=T, **unit(*"qkvo"))),
                  dict(kernel="temporal_attention._temporal_bwd_kernel", num_warps=TA._num_warps(T),
                       constexprs=dict(common, **unit("q", "k", "v", "o", "do", "dq")))]
    built = kernel_checks.compile_for_hopper(specs)
    for spec, result in zip(specs, built):
        print(spec["kernel"], spec["constexprs"]["BLOCK_T"], spec["constexprs"]["HEAD_DIM"], result)
    assert all(not r.spilled_bytes for r in built), "a temporal kernel spills registers at a video size"
