"""The Triton flash attention against its fp32 reference (DESIGN section 5: the 2x tolerance rule).

On a CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py before triton is imported; MINIGEN_TEST_GPU=1 runs them compiled on CUDA); on a GPU
machine it runs compiled, and bf16 is tested too. Sizes are odd on purpose (97, 113, 1023; head dims 40, 72) and
small, because the interpreter runs every program one after another.
"""
import kernel_checks
import pytest
import torch

from minigen.kernels import _dispatch, attention, attention_reference, flash_attention

pytestmark = pytest.mark.skipif(_dispatch.triton is None, reason="triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() and not _dispatch.interpreting() else "cpu"
LOW = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])  # the interpreter has no bf16
ATOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}

if DEVICE == "cpu" and not _dispatch.interpreting():
    pytestmark = pytest.mark.skip(reason="triton was imported before TRITON_INTERPRET=1 was set; run with it set")


def check_2x(name, out, ref32, low, dtype):
    kernel_checks.check_2x(name, out, ref32, low, ATOL[dtype])


def make_qkv(B, H, N, M, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (N, M, M))
    return [t.to(DEVICE, dtype).requires_grad_(True) for t in (q, k, v)]


def run_and_grad(fn, q, k, v, do, **kw):
    for t in (q, k, v):
        t.grad = None
    out = fn(q, k, v, **kw)
    out.backward(do)
    return out.detach(), [t.grad.clone() for t in (q, k, v)]


def compare(q, k, v, do, **kw):
    """Kernel vs fp32 reference vs PyTorch in q's dtype, forward and the three gradients."""
    dtype = q.dtype
    out, grads = run_and_grad(lambda *a, **k_: attention(*a, backend="triton", **k_), q, k, v, do, **kw)
    q32, k32, v32 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    ref, ref_grads = run_and_grad(attention_reference, q32, k32, v32, do.float(), **kw)
    low, low_grads = run_and_grad(attention_reference, q, k, v, do, **kw)
    check_2x("out", out, ref, low, dtype)
    for name, g, r, lo in zip(("dq", "dk", "dv"), grads, ref_grads, low_grads):
        check_2x(name, g, r, lo, dtype)


@pytest.mark.parametrize("N, M, D, causal, padded, dtype", [
    (97, 97, 40, False, False, torch.float32),
    (113, 113, 72, True, False, torch.float16),
    (97, 113, 64, False, True, torch.float32),
    (113, 113, 40, True, True, torch.float16),
    (64, 64, 128, False, False, torch.float16),
    (33, 33, 16, True, False, torch.float32),
    (97, 128, 40, False, False, torch.float32),  # keys a tile multiple, no mask: the unmasked fast path
])
def test_forward_and_gradients(N, M, D, causal, padded, dtype):
    q, k, v = make_qkv(1, 2, N, M, D, dtype)
    mask = None
    if padded:  # sample 0 keeps its first 70 keys, sample 1 a random half
        mask = torch.arange(M) < 70
        mask = torch.stack([mask, torch.rand(M, generator=torch.Generator().manual_seed(1)) < 0.5]).to(DEVICE)
        q, k, v = make_qkv(2, 2, N, M, D, dtype)
    do = torch.randn(q.shape[0], 2, N, D, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    compare(q, k, v, do, causal=causal, key_padding_mask=mask)


@pytest.mark.parametrize("dtype", LOW[1:])
def test_bf16_on_gpu(dtype):
    q, k, v = make_qkv(2, 2, 257, 257, 72, dtype)
    compare(q, k, v, torch.randn_like(q), causal=True)


def test_long_sequence_forward():
    q, k, v = (t.detach() for t in make_qkv(1, 1, 1023, 1023, 16, torch.float32))
    out = attention(q, k, v, backend="triton")
    ref = attention_reference(q, k, v)
    check_2x("out N=1023", out, ref, ref, torch.float32)


def test_strided_inputs_and_stride0_grad_output():
    """q, k, v cut out of one packed (B, N, 3, H, D) tensor, v with D not the last-moving axis; out.sum() gives
    a grad_output with all strides 0."""
    B, N, H, D = 1, 97, 2, 40
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(B, N, 3, H, D, generator=g).to(DEVICE).requires_grad_(True)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, H, N, D), strides (.., 3HD -> D, ..)
    v_store = torch.randn(B, H, D, N, generator=g).to(DEVICE).requires_grad_(True)
    v = v_store.transpose(2, 3)  # (B, H, N, D) with stride_d = N
    assert not q.is_contiguous() and v.stride(-1) != 1
    out = attention(q, k, v, backend="triton")
    out.sum().backward()
    got = (qkv.grad.clone(), v_store.grad.clone())
    qkv.grad = v_store.grad = None
    attention_reference(q, k, v).sum().backward()
    check_2x("out", out, attention_reference(q, k, v), attention_reference(q, k, v), torch.float32)
    check_2x("dqkv", got[0], qkv.grad, qkv.grad, torch.float32)
    check_2x("dv", got[1], v_store.grad, v_store.grad, torch.float32)


def test_packed_qkv_with_strides_divisible_by_8_only():
    """DiT's layout: q, k, v cut from one (B, N, 3, H, 72) tensor, so every row stride is a multiple of 8, not 16:
    the kernels get the strides divided by STRIDE_ALIGN = 8 and multiply them back (`_stride_align`, `_rescale`).
    Causal and not, with a stride-0 grad_output."""
    B, N, H, D = 2, 33, 2, 72
    g = torch.Generator().manual_seed(4)
    qkv = torch.randn(B, N, 3, H, D, generator=g).to(DEVICE).requires_grad_(True)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, N, D), strides (3NHD, D, 3HD, 1)
    assert flash_attention._stride_align(q, k, v) == 8
    for causal in (False, True):
        out = attention(q, k, v, causal=causal, backend="triton")
        out.sum().backward()
        got = qkv.grad.clone()
        qkv.grad = None
        ref = attention_reference(q, k, v, causal=causal)
        ref.sum().backward()
        check_2x("out", out, ref, ref, torch.float32)
        check_2x("dqkv", got, qkv.grad, qkv.grad, torch.float32)
        qkv.grad = None


def test_stride_alignment_ignores_size_one_dims_and_keeps_huge_strides_64_bit():
    """A size-1 dimension's stride never reaches an address (any value is legal there), so it neither lowers the
    alignment nor travels (0 is passed); a stride of 2**31 or more gives alignment 1, since divided it would travel
    as a 32-bit integer and the product in the kernel would wrap."""
    odd_batch = torch.empty_strided((1, 2, 16, 72), (12345, 16 * 72, 72, 1), device="meta")
    assert flash_attention._stride_align(odd_batch) == 8 and flash_attention._strides(8, odd_batch) == [0, 144, 9, 1]
    huge = torch.empty_strided((2, 1, 16, 16), (2 ** 32 + 256, 256, 16, 1), device="meta")
    assert flash_attention._stride_align(huge) == 1 and flash_attention._strides(1, huge)[0] == 2 ** 32 + 256


def test_query_with_no_key_gives_zeros():
    q, k, v = (t.detach() for t in make_qkv(2, 1, 17, 17, 16, torch.float32))
    mask = torch.ones(2, 17, dtype=torch.bool, device=DEVICE)
    mask[1] = False  # sample 1 has nothing to attend to
    out = attention(q, k, v, key_padding_mask=mask, backend="triton")
    ref = attention_reference(q, k, v, key_padding_mask=mask)
    assert torch.all(out[1] == 0) and torch.all(ref[1] == 0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_autotune_candidates_on_a_gpu(monkeypatch):
    """What a compiled run tunes over: every candidate, the first two with MINIGEN_AUTOTUNE=0, and only the small
    first one for fp32 inputs (no tensor cores to tune for; big fp32 tiles take minutes to compile)."""
    monkeypatch.setattr(flash_attention, "interpreting", lambda: False)
    monkeypatch.delenv("MINIGEN_AUTOTUNE", raising=False)  # scripts/gpu_check.sh sets it for the other tests
    pairs = [(64, 32, 4, 2), (128, 64, 4, 3), (128, 128, 8, 3)]
    configs = flash_attention._configs(pairs)
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in configs] == pairs
    monkeypatch.setenv("MINIGEN_AUTOTUNE", "0")
    assert len(flash_attention._configs(pairs)) == 2
    # the two a quick run keeps are both usable at BLOCK_D = 128 (d = 72 pads to it): the second does not spill
    fp16 = {"q_ptr": torch.zeros(1, dtype=torch.float16)}
    A = flash_attention
    for pairs_, prune in ((A._FWD_PAIRS, A._prune_fwd), (A._DKDV_PAIRS, A._prune_dkdv), (A._DQ_PAIRS, A._prune_dq)):
        assert len(prune(flash_attention._configs(pairs_), fp16, BLOCK_D=128)) == 2
    configs = flash_attention._configs(pairs)
    assert flash_attention._prune_fwd(configs, {"q_ptr": torch.zeros(1)}, BLOCK_D=64) == configs[:1]
    assert flash_attention._prune_fwd(configs, {"q_ptr": torch.zeros(1, dtype=torch.float16)}, BLOCK_D=64) == configs


def test_autotune_drops_the_candidates_that_spill_registers(monkeypatch):
    """Compiled for sm_90, exactly these candidates spilled registers (scripts/kernel_resources.py): at BLOCK_D = 128
    the forward's 128x64 and dQ's 128x32 tiles with 4 warps, dK/dV's 32x128 with 4 warps, 64x128 with 8 and 64x64
    with 4; at BLOCK_D = 64 only dK/dV's 32x128 with 4 warps. The pruning drops them and keeps every other one."""
    monkeypatch.setattr(flash_attention, "interpreting", lambda: False)
    monkeypatch.delenv("MINIGEN_AUTOTUNE", raising=False)
    fp16 = {"q_ptr": torch.zeros(1, dtype=torch.float16)}
    spilled = {("fwd", 128): {(128, 64, 4, 3), (128, 64, 4, 4)},
               ("dkdv", 128): {(32, 128, 4, 3), (32, 128, 4, 5), (64, 128, 8, 3), (64, 64, 4, 3)},
               ("dq", 128): {(128, 32, 4, 5)},
               ("dkdv", 64): {(32, 128, 4, 3), (32, 128, 4, 5)}}
    lists = {"fwd": flash_attention._FWD_PAIRS, "dkdv": flash_attention._DKDV_PAIRS, "dq": flash_attention._DQ_PAIRS}
    prunes = {"fwd": flash_attention._prune_fwd, "dkdv": flash_attention._prune_dkdv, "dq": flash_attention._prune_dq}
    for (kind, block_d), drop in {**{(k, d): set() for k in lists for d in (64, 128)}, **spilled}.items():
        kept = prunes[kind](flash_attention._configs(lists[kind]), fp16, BLOCK_D=block_d)
        got = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept}
        assert got == set(lists[kind]) - drop, (kind, block_d)


def test_dispatch_picks_sdpa_on_cpu(monkeypatch):
    """PyTorch's fused attention is the CPU's fast path (the full-matrix reference runs only when asked for)."""
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    assert _dispatch.choose_backend("attention", None, torch.device("cpu"), fallback="sdpa") == "sdpa"
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")
    assert _dispatch.choose_backend("attention", None, torch.device("cpu"), fallback="sdpa") == "reference"
    monkeypatch.setenv("MINIGEN_KERNELS", "triton")
    if _dispatch.interpreting():  # the interpreter runs Triton on CPU tensors
        assert _dispatch.choose_backend("attention", None, torch.device("cpu"), fallback="sdpa") == "triton"
    else:  # compiled Triton (MINIGEN_TEST_GPU=1) cannot take a CPU tensor: asked for, it is a clear error
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            _dispatch.choose_backend("attention", None, torch.device("cpu"), fallback="sdpa")
    monkeypatch.setenv("MINIGEN_KERNELS", "fast")
    with pytest.raises(ValueError, match="MINIGEN_KERNELS"):
        _dispatch.choose_backend("attention", None, torch.device("cpu"), fallback="sdpa")


def test_sizes_over_the_kernels_limits_are_named_or_fall_back_to_sdpa():
    """One rule for both attention kernels: a size over the Triton kernel's limit is a ValueError naming it when
    backend="triton" was asked for, else one warning and PyTorch SDPA; other backends pass through."""
    sizes = [("head dim D", 136, 128), ("T", 129, 128)]
    with pytest.raises(ValueError, match=r"op: q has head dim D = 136 > 128, T = 129 > 128; the Triton kernel "
                                         r"takes D <= 128 and T <= 128 \(use backend='sdpa'\)"):
        _dispatch.within_triton_limits("op", "triton", "triton", sizes)
    with pytest.warns(UserWarning, match="head dim D = 136 > 128, T = 129 > 128; op uses PyTorch SDPA"):
        assert _dispatch.within_triton_limits("op", "triton", None, sizes) == "sdpa"
    assert _dispatch.within_triton_limits("op", "triton", None, [("T", 128, 128)]) == "triton"
    assert _dispatch.within_triton_limits("op", "reference", "reference", sizes) == "reference"
    if _dispatch.triton is not None:  # without Triton, backend="triton" is first an error saying it is missing
        q = torch.zeros(1, 1, 3, 136)
        with pytest.raises(ValueError, match="attention: q has head dim D = 136 > 128"):
            attention(q, q, q, backend="triton")


def test_default_attention_on_cpu_is_sdpa_and_matches_reference(monkeypatch):
    """No backend asked: SDPA, equal to the reference (a fully padded sample returns zeros in both)."""
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    q, k, v = (t.detach().cpu() for t in make_qkv(2, 3, 17, 19, 24, torch.float32))
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[1] = False
    calls, sdpa = [], flash_attention._attention_sdpa
    monkeypatch.setattr(flash_attention, "_attention_sdpa", lambda *a: calls.append(1) or sdpa(*a))
    flash_attention.attention(q, k, v)
    assert calls == [1]
    monkeypatch.undo()
    out = attention(q, k, v, key_padding_mask=mask, causal=True)
    torch.testing.assert_close(out, attention_reference(q, k, v, key_padding_mask=mask, causal=True))
    assert out[1].abs().max() == 0


def test_sdpa_backend_matches_reference():
    q, k, v = (t.detach() for t in make_qkv(2, 2, 33, 40, 24, torch.float32))
    mask = torch.rand(2, 40, generator=torch.Generator().manual_seed(4)).to(DEVICE) < 0.8
    for causal in (False, True):
        out = attention(q, k, v, causal=causal, key_padding_mask=mask, backend="sdpa")
        ref = attention_reference(q, k, v, causal=causal, key_padding_mask=mask)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(q=torch.zeros(2, 3, 4)), "q must have 4 dimensions"),
    (dict(k=torch.zeros(1, 2, 5, 8)), r"k must have shape \(1, 2, \*, 16\)"),
    (dict(v=torch.zeros(1, 2, 5, 16, dtype=torch.float64)), "v has dtype torch.float64"),
    (dict(q=torch.zeros(1, 2, 5, 16, dtype=torch.int64)), "q must be a floating-point tensor"),
    (dict(key_padding_mask=torch.ones(1, 4, dtype=torch.bool)), "key_padding_mask must have shape"),
    (dict(key_padding_mask=torch.ones(1, 5)), "key_padding_mask must be bool"),
    (dict(q=torch.zeros(1, 2, 5, 16, device="meta")), "k is on cpu but the input is on meta"),
])
def test_clear_errors(change, message):
    args = dict(q=torch.zeros(1, 2, 5, 16), k=torch.zeros(1, 2, 5, 16), v=torch.zeros(1, 2, 5, 16),
                key_padding_mask=None)
    args.update(change)
    with pytest.raises((TypeError, ValueError), match=message):
        attention(args["q"], args["k"], args["v"], key_padding_mask=args["key_padding_mask"])


def test_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter never runs Triton's compiler; this does: ttir -> ttgir -> PTX -> cubin for sm_90 (ptxas
    ships with triton), in a subprocess with the interpreter off. It catches what only compiled mode rejects, and
    checks that the forward at DiT-XL's head dim 72 pipelines its loads: with the strides known to be multiples of
    8 (STRIDE_ALIGN), the key/value loads become asynchronous copies into a ring of num_stages buffers, so shared
    memory grows with the stages; when the compiler could not tell, it loaded synchronously and both used the
    same (see `attention._stride_align`)."""
    # DiT-XL's head dim 72 (padded to 128), bf16, causal and key padding: every feature at once; as in a launch,
    # head-dim strides of 1 are compile-time constants, and the tiles are ones the autotuner keeps
    c = dict(HEAD_DIM=72, BLOCK_D=128, CAUSAL=True, HAS_MASK=True, PRECISION="tf32", NEED_MASK=True, STRIDE_ALIGN=8)

    def unit(*names):
        return {f"{n}_d_stride": 1 for n in names}
    fwd = dict(c, CAUSAL=False, HAS_MASK=False, NEED_MASK=False, BLOCK_M=128, BLOCK_N=64, **unit(*"qkvo"))
    specs = [
        dict(kernel="flash_attention._attn_fwd_kernel", constexprs=dict(c, BLOCK_M=128, BLOCK_N=64, **unit(*"qkvo")),
             num_warps=8),
        dict(kernel="flash_attention._attn_fwd_kernel", num_warps=8,  # the fast path: no mask at all
             constexprs=dict(c, HEAD_DIM=64, BLOCK_D=64, CAUSAL=False, HAS_MASK=False, NEED_MASK=False,
                             STRIDE_ALIGN=16, BLOCK_M=128, BLOCK_N=128, **unit(*"qkvo"))),
        dict(kernel="flash_attention._attn_bwd_delta_kernel", num_warps=4,
             constexprs=dict(HEAD_DIM=72, BLOCK_D=128, STRIDE_ALIGN=8, BLOCK_M=64, **unit("o", "do"))),
        dict(kernel="flash_attention._attn_bwd_dkdv_kernel", num_warps=8,
             constexprs=dict(c, BLOCK_M=32, BLOCK_N=128, **unit("q", "k", "v", "do", "dk"))),
        dict(kernel="flash_attention._attn_bwd_dq_kernel", num_warps=8,
             constexprs=dict(c, BLOCK_M=128, BLOCK_N=32, **unit("q", "k", "v", "do", "dq"))),
        dict(kernel="flash_attention._attn_fwd_kernel", constexprs=fwd, num_warps=8, num_stages=1),
        dict(kernel="flash_attention._attn_fwd_kernel", constexprs=fwd, num_warps=8, num_stages=3),
    ]
    built = kernel_checks.compile_for_hopper(specs)
    for spec, result in zip(specs, built):
        print(spec["kernel"], result)
    one, three = built[-2].shared_bytes, built[-1].shared_bytes
    assert three > one, f"the d = 72 forward's loop is not pipelined: {one} B of shared memory at 1 stage, {three} at 3"


def test_bench_trace_profiles_each_contender(monkeypatch, capsys):
    import minigen.bench as bench
    monkeypatch.setattr(bench, "CPU_SHAPES", {"attention": [("tiny", 1, 2, 17, 16)], "layernorm": [("tiny", 1, 5, 8)],
                                              "groupnorm": [("tiny", 1, 4, 3, 3, 2)]})
    bench.trace("all", device="cpu", steps=2)
    out = capsys.readouterr().out
    for title in ("attention tiny: reference", "layernorm_modulate tiny: eager", "groupnorm_silu tiny: eager"):
        assert f"== {title}, 2 forward+backward calls" in out
    assert "aten::native_layer_norm_backward" in out and "aten::native_group_norm_backward" in out


def test_bench_on_cpu_runs_references_and_says_so(monkeypatch, capsys):
    import minigen.bench as bench
    monkeypatch.setattr(bench, "CPU_SHAPES", {"attention": [("tiny", 1, 2, 17, 16)],
                                              "layernorm": [("tiny", 1, 5, 8)],
                                              "groupnorm": [("tiny", 1, 4, 3, 3, 2)]})
    rows = bench.run("all", device="cpu")
    out = capsys.readouterr().out
    assert "only the PyTorch references run" in out and "TFLOP/s" in out and "GB/s" in out
    assert {r["contender"] for r in rows} == {"reference", "eager"}
    assert all(r["value"] is not None and r["value"] > 0 for r in rows)


def test_bench_graph_calls_each_run_on_their_own_copy_of_the_inputs(monkeypatch, capsys):
    """The `--graph` rows replay calls on copies of the inputs (so each finds them outside L2); the copies must be
    distinct leaves with the originals' values, non-tensor arguments pass through, and the forward+backward step
    gives the gradients autograd gives. Capturing needs CUDA, which a CPU run says and skips."""
    import minigen.bench as bench
    from minigen.kernels.norm import groupnorm_silu_reference
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    dy, w, b = torch.randn_like(x), torch.randn(4), torch.randn(4)
    copies = [call() for call in bench.cold_calls(lambda *t: t, (x, dy, 2, w, b), torch.device("cpu"))]
    assert 16 <= len(copies) <= 64
    assert len({c[0].data_ptr() for c in copies}) == len(copies) and all(c[2] == 2 for c in copies)
    assert all(c[0].is_leaf and c[0].requires_grad and not c[1].requires_grad for c in copies)
    assert all(torch.equal(c[0], x) and torch.equal(c[4], b) for c in copies)
    step = bench._forward_and_backward(groupnorm_silu_reference, 1)
    (dx,) = bench.cold_calls(step, (x, dy, 2, w, b), torch.device("cpu"))[0]()
    (want,) = torch.autograd.grad(groupnorm_silu_reference(x, 2, w, b), x, dy)
    assert torch.equal(dx, want) and x.grad is None
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        bench.graph_ms([lambda: None], torch.device("cpu"))
    monkeypatch.setattr(bench, "CPU_SHAPES", {"attention": [], "layernorm": [("tiny", 1, 5, 8)], "groupnorm": []})
    rows = bench.run("norm", device="cpu", graph=True)
    assert "graph rows need CUDA graphs" in capsys.readouterr().out
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}


def test_bench_graph_rows_tables_and_records_survive_a_failed_capture(monkeypatch, capsys, tmp_path):
    """The graph rows' path without a GPU: _graph_or_none stands in for the capture. Rows come out for every mode,
    a missing copy roof prints '-' and records without it, and after a capture fails the other graph rows are
    skipped (None) instead of run on a stream left in capture."""
    import minigen.bench as bench
    from minigen import results
    monkeypatch.setattr(results, "results_path", lambda: tmp_path / "results.json")
    monkeypatch.setenv("MINIGEN_PROFILE", "gpu")  # (the ci profile records nothing)
    monkeypatch.setattr(bench, "_graphs_failed", [])
    calls = []

    def fake_graph_ms(calls_, device):
        calls.append(len(calls_))
        if len(calls) == 1:
            raise RuntimeError("the copy's capture failed")  # before capture: only this row is lost
        if len(calls) == 3:
            raise bench.CaptureError(RuntimeError("operation not permitted when stream is capturing"))
        return 0.01
    monkeypatch.setattr(bench, "graph_ms", fake_graph_ms)
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: None)
    monkeypatch.setattr(torch.cuda, "default_stream", lambda device: None)
    x = torch.randn(2, 5, 8, requires_grad=True)
    args = (torch.randn(2, 8), torch.randn(2, 8))
    from minigen.kernels.norm import layernorm_modulate_reference as ref
    rows = bench._bench_norm(torch.device("cpu"), "tiny", x, args, ref, ref, False, 64, graph=True)
    out = capsys.readouterr().out
    assert "capture failed" in out and "no further graph rows" in out
    got = {(r["contender"], r["mode"]): r for r in rows}
    assert set(got) == {("eager", m) for m in ("fwd", "fwd+bwd", "fwd graph", "fwd+bwd graph")}
    assert got["eager", "fwd graph"]["value"] > 0 and got["eager", "fwd graph"]["roof"] is None
    assert got["eager", "fwd+bwd graph"]["value"] is None and len(calls) == 3  # skipped after the capture failed
    table = bench.format_table(rows, "GB/s")
    assert "fwd+bwd graph" in table and table.splitlines()[-1].split()[-1] == "-"
    for r in rows:
        r["contender"] = "minigen" if r["mode"] == "fwd graph" else r["contender"]
    bench.record(rows, torch.float32)
    assert "layernorm_modulate fwd graph tiny float32" in bench.recorded_table(gpu_only=False)


def test_kernel_exercise_checkers_accept_a_solution_and_reject_a_wrong_one(capsys):
    """Notebook 07's three checkers: each passes a right answer and names the problem in a wrong one."""
    from minigen.exercises import kernels as ex

    def merge(m_a, l_a, acc_a, m_b, l_b, acc_b):
        m = torch.maximum(m_a, m_b)
        wa, wb = torch.exp(m_a - m), torch.exp(m_b - m)
        return m, wa * l_a + wb * l_b, wa[:, None] * acc_a + wb[:, None] * acc_b

    def stride_align(shape, strides):
        align = 16
        for size, stride in zip(shape[:3], strides[:3]):
            while size > 1 and stride % align:
                align //= 2
        return align

    ex.check_merge_partials(merge, strict=True)
    ex.check_modulate_traffic(lambda B, N, C, b: (6 * B * N * C * b, 2 * B * N * C * b), strict=True)
    ex.check_stride_align(stride_align, strict=True)
    assert capsys.readouterr().out.count("correct") == 6
    with pytest.raises(AssertionError, match="l:"):
        ex.check_merge_partials(lambda m_a, l_a, acc_a, m_b, l_b, acc_b: (torch.maximum(m_a, m_b), l_a + l_b,
                                                                          acc_a + acc_b), strict=True)
    with pytest.raises(AssertionError, match="eager ops"):
        ex.check_modulate_traffic(lambda B, N, C, b: (2 * B * N * C * b, 2 * B * N * C * b), strict=True)
    with pytest.raises(AssertionError, match="size-1"):
        ex.check_stride_align(lambda shape, strides: stride_align((2, 2, 2, 2), strides),  # counts size-1 dims
                              strict=True)
