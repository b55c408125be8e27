"""Kernel benchmarks: `python -m minigen.bench {attention,norm,temporal,all}` (DESIGN section 5); `... cpu` is the
CPU-threads table of minigen/bench_cpu.py.

One table per kernel, every contender measured in the same run on the same tensors, so ratios are fair:
    attention   minigen's Triton kernel vs PyTorch SDPA's default choice and each SDPA backend (flash, efficient,
                cudnn, math), in TFLOP/s (formula: `minigen.kernels.attention_flops`), forward and forward+backward
    norms       minigen's fused kernels vs eager PyTorch and `torch.compile` of the same reference, in GB/s of the
                bytes the op must move at least, beside the bandwidth of a plain copy (the roof for these ops)
    temporal    (by name only, not in `all`) minigen's temporal attention, reading (B, T, S, H, D) views of a qkv
                tensor by strides, vs permute -> SDPA -> permute, in TFLOP/s (`temporal_attention_flops`); then full
                3-D attention vs spatial + temporal attention on the same tensors, in ms and as ratios
On a machine without CUDA only the PyTorch references run (on the course's own small sizes), and the output says so:
the Triton numbers need a GPU. Times are medians (triton.testing.do_bench on a GPU).

Two timings on a GPU. The plain rows time a call from Python, as a training loop in eager mode sees it: where the
kernels are short, the host's work (argument checks, the autograd engine, Triton's launcher) can take longer than the
GPU's, and the figure measures the host. The "graph" rows (`--graph`) replay the calls from a CUDA graph, which has
no host work in it, on copies of the inputs many enough that each call finds its inputs outside the L2 cache:
the kernels' own time, what a step under CUDA graphs (or `torch.compile(mode="reduce-overhead")`) sees.
"""
import argparse
import math
import statistics
import time
from contextlib import nullcontext

import torch

from minigen.kernels import _dispatch
from minigen.kernels.flash_attention import attention, attention_flops, attention_reference
from minigen.kernels.norm import (groupnorm_silu, groupnorm_silu_reference, layernorm_modulate,
                                  layernorm_modulate_reference)
from minigen.kernels.temporal_attention import (temporal_attention, temporal_attention_flops,
                                                temporal_attention_reference)

# (label, B, H, N, D). DiT-XL/2: 1152 wide, 16 heads of 72; 256 px -> 32x32 latent, patch 2 -> 256 tokens,
# 512 px -> 1024 tokens. The course's DiT: 28 px digits, patch 2 -> 196 tokens, 6 heads of 64. Video: 8 frames of
# 7x7 tokens attended jointly.
ATTENTION_SHAPES = [
    ("DiT-XL/2 256px", 32, 16, 256, 72),
    ("DiT-XL/2 512px", 16, 16, 1024, 72),
    ("long N4096 d64", 4, 16, 4096, 64),
    ("long N4096 d128", 4, 16, 4096, 128),
    ("course DiT 28px/2", 64, 6, 196, 64),
    ("course video 8x7x7", 32, 4, 392, 32),
]
# (label, B, N, C) for LayerNorm + modulate
LAYERNORM_SHAPES = [
    ("DiT-XL/2 256px", 32, 256, 1152),
    ("DiT-XL/2 512px", 16, 1024, 1152),
    ("course DiT 28px/2", 64, 196, 384),
]
# (label, B, C, H, W, groups) for GroupNorm + SiLU
GROUPNORM_SHAPES = [
    ("U-Net 64x64 C256", 16, 256, 64, 64, 32),
    ("U-Net 32x32 C512", 32, 512, 32, 32, 32),
    ("course U-Net 28px C64", 128, 64, 28, 28, 32),
]
# (label, B, T, S, H, D) for temporal attention: a factorized video block, T frames of S = 16x16 or 32x32 tokens
TEMPORAL_SHAPES = [
    ("video T16 S256", 2, 16, 256, 16, 64),
    ("video T32 S1024", 2, 32, 1024, 16, 64),
]
# without a GPU: the course's sizes at a smaller batch, so the table takes seconds
CPU_SHAPES = {"attention": [("course DiT 28px/2", 2, 6, 196, 64), ("course video 8x7x7", 1, 4, 392, 32)],
              "layernorm": [("course DiT 28px/2", 4, 196, 384)],
              "groupnorm": [("course U-Net 28px C64", 4, 64, 28, 28, 32)],
              "temporal": [("course video 8x7x7", 1, 8, 49, 4, 32)]}
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
GRAPH_CONTENDERS = ("minigen", "sdpa", "eager", "compile")  # the graph rows: minigen and what it is compared with
# attention shapes get graph rows below this many forward flops: above it a call takes hundreds of microseconds of GPU
# time, which no host work can hide behind, and the copies would take gigabytes
GRAPH_MAX_FLOPS = 20e9


def median_ms(fn, device, grad_to_none=None, reps=3):
    """Median wall time of fn() in milliseconds (triton's do_bench on a GPU: it flushes L2 and syncs)."""
    if device.type == "cuda":
        if _dispatch.triton is not None:
            return _dispatch.triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                                                     return_mode="median")
        fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(20):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cold_calls(step, tensors, device, at_least=8, at_most=64):
    """Zero-argument calls of `step(*copy)`, one per copy of `tensors` (leaves stay leaves that require grad), enough
    copies that cycling through them moves four times the L2 cache (within [at_least, at_most]): each call finds its
    inputs in device memory, as one layer of a real network does, not in the cache the previous call left them in."""
    is_tensor = [isinstance(t, torch.Tensor) for t in tensors]  # others (GroupNorm's group count) pass as they are
    per_copy = sum(t.numel() * t.element_size() for t, ok in zip(tensors, is_tensor) if ok)
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20) if device.type == "cuda" \
        else 64 << 20  # H100: 50 MB, H200: 60 MB
    copies = min(at_most, max(at_least, math.ceil(4 * l2 / max(per_copy, 1))))
    calls = []
    for _ in range(copies):
        copy = [t.detach().clone().requires_grad_(t.requires_grad) if ok else t for t, ok in zip(tensors, is_tensor)]
        calls.append(lambda copy=copy: step(*copy))
    return calls


class CaptureError(RuntimeError):
    """An error while capturing a CUDA graph; its argument is the error that broke the capture."""


def graph_ms(calls, device, reps=10):
    """Median GPU time of one of `calls` in milliseconds, with no host work in it: the calls are captured once into a
    CUDA graph (after a warm-up on a side stream, so compilation, autotuning and library workspaces stay outside
    it) and the graph is replayed `reps` times."""
    if device.type != "cuda":
        raise RuntimeError(f"graph_ms: CUDA graphs need a CUDA device, got {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for call in calls[:3]:
            call()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            # every call's outputs stay allocated, as a network's activations do: were they dropped, the next call
            # would get the same memory and write over lines still in L2, and the writes would never be paid for
            outputs = [call() for call in calls]
    except Exception as error:
        raise CaptureError(error.__context__ or error) from error  # (graph's exit raises its own error over the first)
    graph.replay()  # the first replay uploads the graph
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / len(calls))
    del graph, outputs
    return statistics.median(times)


def _forward_and_backward(fn, n_inputs):
    """step(*inputs, grad_output, *consts) -> the gradients of the first `n_inputs` inputs: torch.autograd.grad, so
    nothing accumulates into .grad however often the step runs."""
    def step(*tensors):
        inputs, grad_output = tensors[:n_inputs], tensors[n_inputs]
        return torch.autograd.grad(fn(*inputs, *tensors[n_inputs + 1:]), inputs, grad_output)
    return step


_graphs_failed = []  # set by a failed capture: the later graph rows are skipped


def _graph_or_none(step, tensors, device, name):
    """graph_ms over cold copies, or None with the reason on one line (a contender that cannot be captured).

    An error inside a capture (something that syncs, or allocates outside the graph) can leave the capture stream
    current and the allocator's capture state unfinished; so after one, the stream goes back to the default and
    the remaining graph rows are skipped rather than trusted."""
    if _graphs_failed:
        return None
    try:
        return graph_ms(cold_calls(step, tensors, device), device)
    except CaptureError as error:
        print(f"  {name}: capture failed, {_one_line(error.args[0])}; no further graph rows in this run")
        torch.cuda.set_stream(torch.cuda.default_stream(device))
        _graphs_failed.append(name)
        return None
    except Exception as error:  # noqa: BLE001 (as _time_or_none: e.g. a backend that does not take this shape)
        print(f"  {name}: {_one_line(error)}")
        return None


def _graph_timings(fn, inputs, grad_output, consts, device, title):
    """[("fwd graph", ms), ("fwd+bwd graph", ms)] for fn(*inputs, *consts), replayed from CUDA graphs (None where
    that failed); the backward takes the gradients of `inputs` for `grad_output`."""
    return [("fwd graph", _graph_or_none(fn, (*inputs, *consts), device, f"{title} fwd graph")),
            ("fwd+bwd graph", _graph_or_none(_forward_and_backward(fn, len(inputs)), (*inputs, grad_output, *consts),
                                             device, f"{title} fwd+bwd graph"))]


def _sdpa_context(name):
    """A context that restricts SDPA to one backend, or nothing for the default choice."""
    if name == "default":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    pick = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([pick])


def _attention_contenders(device):
    """name -> attention function; on the CPU only the reference."""
    if device.type != "cuda":
        return {"reference": attention_reference}
    contenders = {}
    if _dispatch.triton_can_run(device)[0]:
        contenders["minigen"] = lambda q, k, v: attention(q, k, v, backend="triton")
    for name in ("default",) + SDPA_BACKENDS:
        def sdpa(q, k, v, name=name):
            with _sdpa_context(name):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        contenders[f"sdpa-{name}" if name != "default" else "sdpa"] = sdpa
    return contenders


def _time_or_none(fn, device, grad_to_none=None, name=""):
    """Time fn, or None (printed as '-') with the reason on one line when it fails: an SDPA backend that does not
    take this shape or dtype, or a kernel that does not compile here; the rest of the table still gets measured."""
    try:
        return median_ms(fn, device, grad_to_none)
    except Exception as error:  # noqa: BLE001 (a benchmark reports failures, it does not stop at them)
        print(f"  {name}: {_one_line(error)}")
        return None


def _one_line(error):
    """An error as its type and the first line of its message, cut to 150 characters."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:150]}"


def _grads(fn, inputs, grad_output, consts, dtype):
    """fn(*inputs, *consts) in `dtype`, and the gradients of `inputs`, on fresh leaves (so nothing accumulates)."""
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in inputs]
    cast = [c.to(dtype) if isinstance(c, torch.Tensor) and c.is_floating_point() else c for c in consts]
    out = fn(*leaves, *cast)
    out.backward(grad_output.to(dtype))
    return [out.detach()] + [t.grad for t in leaves]


def agreement(ours, torch_fn, inputs, grad_output, names, consts=()):
    """The tests' 2x rule on the benchmark's own tensors: max error of our kernel and of PyTorch in the same dtype,
    both against PyTorch in fp32, for the output and each gradient of `inputs` (`consts` take no gradient).
    Returns one line, 'ok' or 'FAILED'."""
    dtype = inputs[0].dtype
    ref = _grads(torch_fn, inputs, grad_output, consts, torch.float32)
    got, low = (_grads(fn, inputs, grad_output, consts, dtype) for fn in (ours, torch_fn))
    parts, ok = [], True
    for name, g, lo, r in zip(names, got, low, ref):
        err, base = ((t.float() - r).abs().max().item() for t in (g, lo))
        ok &= err <= 2 * base + 1e-2 * max(1.0, r.abs().max().item())
        parts.append(f"{name} {err:.1e} (torch {base:.1e})")
    return f"{'ok' if ok else 'FAILED'}: max error vs fp32, minigen (torch same dtype): " + ", ".join(parts)


def _only(shapes, only):
    """The shapes whose label contains `only` (all when it is None)."""
    return [s for s in shapes if only is None or only.lower() in s[0].lower()]


def bench_attention(device, dtype, only=None, graph=False):
    rows = []
    shapes = _only(ATTENTION_SHAPES if device.type == "cuda" else CPU_SHAPES["attention"], only)
    for label, B, H, N, D in shapes:
        q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        contenders = _attention_contenders(device)
        if "minigen" in contenders:
            sdpa = torch.nn.functional.scaled_dot_product_attention
            print(f"  {label}: " + agreement(contenders["minigen"], sdpa, (q, k, v), do, ("out", "dq", "dk", "dv")))
        for name, fn in contenders.items():
            fwd = _time_or_none(lambda: fn(q, k, v), device, name=f"{name} fwd {label}")
            both = _time_or_none(lambda: fn(q, k, v).backward(do), device, [q, k, v], f"{name} fwd+bwd {label}")
            timings = [("fwd", fwd), ("fwd+bwd", both)]
            if graph and name in GRAPH_CONTENDERS and attention_flops(B, H, N, N, D) < GRAPH_MAX_FLOPS:
                timings += _graph_timings(fn, (q, k, v), do, (), device, f"{name} {label}")
            for mode, ms in timings:
                flops = attention_flops(B, H, N, N, D, backward=mode.startswith("fwd+bwd"))
                rows.append(dict(kernel="attention", shape=f"{label} B{B} H{H} N{N} D{D}", mode=mode, contender=name,
                                 ms=ms, value=None if ms is None else flops / (ms * 1e-3) / 1e12))
    return rows


def _norm_contenders(device, reference, kernel, compile_):
    contenders = {}
    if device.type == "cuda" and _dispatch.triton_can_run(device)[0]:
        contenders["minigen"] = kernel
    contenders["eager"] = reference
    if device.type == "cuda" and compile_:
        contenders["compile"] = torch.compile(reference, dynamic=False)
    return contenders


def _bench_norm(device, label, x, args, reference, kernel, compile_, extra_bytes, graph=False):
    rows = []
    dy = torch.randn_like(x)
    if device.type == "cuda" and _dispatch.triton_can_run(device)[0]:
        print(f"  {label}: " + agreement(kernel, reference, (x,), dy, ("out", "dx"), consts=args))
    x_bytes = x.numel() * x.element_size()
    dst = torch.empty_like(x, requires_grad=False)
    copy_ms = median_ms(lambda: dst.copy_(x.detach()), device)
    gbs = lambda ms, n: None if ms is None else n / (ms * 1e-3) / 1e9  # noqa: E731 (bytes n in ms -> GB/s)
    copy_gbs = gbs(copy_ms, 2 * x_bytes)  # read + write
    if graph:
        copy_graph_gbs = gbs(_graph_or_none(lambda src, dst: dst.copy_(src), (x.detach(), dst), device,
                                            f"copy graph {label}"), 2 * x_bytes)
    for name, fn in _norm_contenders(device, reference, kernel, compile_).items():
        fwd = _time_or_none(lambda: fn(x, *args), device, name=f"{name} fwd {label}")
        both = _time_or_none(lambda: fn(x, *args).backward(dy), device, [x], f"{name} fwd+bwd {label}")
        # bytes at least: forward reads x, writes y; backward reads x and dy, writes dx (+ the small vectors)
        timings = [("fwd", fwd, 2, copy_gbs), ("fwd+bwd", both, 5, copy_gbs)]
        if graph and name in GRAPH_CONTENDERS:
            timings += [(mode, ms, n, copy_graph_gbs)
                        for (mode, ms), n in zip(_graph_timings(fn, (x,), dy, args, device, f"{name} {label}"), (2, 5))]
        for mode, ms, n, roof in timings:
            rows.append(dict(kernel=reference.__name__.replace("_reference", ""), shape=label, mode=mode,
                             contender=name, ms=ms, value=gbs(ms, n * x_bytes + extra_bytes), roof=roof))
    return rows


def _layernorm_kernel(x, shift, scale):
    return layernorm_modulate(x, shift, scale, backend="triton")


def _groupnorm_kernel(x, num_groups, weight, bias):
    return groupnorm_silu(x, num_groups, weight, bias, backend="triton")


def _norm_problems(device, dtype, only=None, per_kernel=None):
    """The norm benchmark's problems, LayerNorm + modulate shapes then GroupNorm + SiLU shapes (at most `per_kernel`
    of each): dicts of the kernel's name, the shape's label (short and with sizes), x, the other arguments, the
    reference and the Triton function, and the bytes of the small vectors."""
    cuda = device.type == "cuda"
    for label, B, N, C in _only(LAYERNORM_SHAPES if cuda else CPU_SHAPES["layernorm"], only)[:per_kernel]:
        shift, scale = (torch.randn(B, C, device=device, dtype=dtype) for _ in range(2))
        yield dict(kernel="layernorm_modulate", short=label, label=f"{label} B{B} N{N} C{C}",
                   x=torch.randn(B, N, C, device=device, dtype=dtype, requires_grad=True), args=(shift, scale),
                   reference=layernorm_modulate_reference, triton=_layernorm_kernel,
                   extra_bytes=2 * shift.numel() * shift.element_size())
    for label, B, C, H, W, G in _only(GROUPNORM_SHAPES if cuda else CPU_SHAPES["groupnorm"], only)[:per_kernel]:
        w, b = torch.randn(C, device=device, dtype=dtype), torch.randn(C, device=device, dtype=dtype)
        yield dict(kernel="groupnorm_silu", short=label, label=f"{label} B{B} G{G}",
                   x=torch.randn(B, C, H, W, device=device, dtype=dtype, requires_grad=True), args=(G, w, b),
                   reference=groupnorm_silu_reference, triton=_groupnorm_kernel,
                   extra_bytes=2 * w.numel() * w.element_size())


def bench_norm(device, dtype, compile_=True, only=None, graph=False):
    rows = []
    for p in _norm_problems(device, dtype, only):
        rows += _bench_norm(device, p["label"], p["x"], p["args"], p["reference"], p["triton"], compile_,
                            p["extra_bytes"], graph)
    return rows


def _temporal_contenders(device):
    """name -> temporal attention function of (q, k, v): minigen's kernel where Triton runs on a GPU, and
    permute -> SDPA (default choice) -> permute; on the CPU the reference and SDPA."""
    contenders = {}
    if device.type == "cuda" and _dispatch.triton_can_run(device)[0]:
        contenders["minigen"] = lambda q, k, v: temporal_attention(q, k, v, backend="triton")
    elif device.type != "cuda":
        contenders["reference"] = temporal_attention_reference
    contenders["sdpa"] = lambda q, k, v: temporal_attention(q, k, v, backend="sdpa")
    return contenders


def _full_3d(q, k, v):
    """Joint space-time attention over all T*S tokens of each video: (B, T, S, H, D) -> the same, as views."""
    B, T, S, H, D = q.shape
    q, k, v = (t.reshape(B, T * S, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T*S, D)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).unflatten(1, (T, S))


def _spatial(q, k, v):
    """Attention within each frame, over its S tokens: (B, T, S, H, D) -> the same, as views."""
    B, T, S, H, D = q.shape
    q, k, v = (t.reshape(B * T, S, H, D).transpose(1, 2) for t in (q, k, v))  # (B*T, H, S, D)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).unflatten(0, (B, T))


def bench_temporal(device, dtype, only=None, shapes=None):
    """Temporal attention over q, k, v cut out of one (B, T, S, 3, H, D) qkv tensor (as a factorized video block
    makes them): the contenders of `_temporal_contenders` in TFLOP/s, then the block comparison, in ms on the same
    tensors: full 3-D attention (SDPA over T*S tokens) vs spatial (SDPA over S per frame) + temporal. Returns
    (temporal rows, block rows); `shapes` replaces the table of (label, B, T, S, H, D)."""
    if shapes is None:
        shapes = TEMPORAL_SHAPES if device.type == "cuda" else CPU_SHAPES.get("temporal", [])
    rows, block = [], []
    for label, B, T, S, H, D in _only(shapes, only):
        shape = f"{label} B{B} T{T} S{S} H{H} D{D}"
        qkv = torch.randn(B, T, S, 3, H, D, device=device, dtype=dtype, requires_grad=True)
        do = torch.randn(B, T, S, H, D, device=device, dtype=dtype)
        contenders = _temporal_contenders(device)
        if "minigen" in contenders:
            print(f"  {label}: " + agreement(contenders["minigen"], contenders["sdpa"], qkv.detach().unbind(3), do,
                                             ("out", "dq", "dk", "dv")))
        ms = {}
        for name, fn in contenders.items():
            fwd = _time_or_none(lambda: fn(*qkv.unbind(3)), device, name=f"{name} fwd {label}")
            both = _time_or_none(lambda: fn(*qkv.unbind(3)).backward(do), device, [qkv], f"{name} fwd+bwd {label}")
            for mode, t in (("fwd", fwd), ("fwd+bwd", both)):
                ms[name, mode] = t
                flops = temporal_attention_flops(B, T, S, H, D, backward=mode == "fwd+bwd")
                rows.append(dict(kernel="temporal_attention", shape=shape, mode=mode, contender=name, ms=t,
                                 value=None if t is None else flops / (t * 1e-3) / 1e12))
        for name, fn in (("full 3-D", _full_3d), ("spatial", _spatial)):
            ms[name, "fwd"] = _time_or_none(lambda: fn(*qkv.unbind(3)), device, name=f"{name} fwd {label}")
            ms[name, "fwd+bwd"] = _time_or_none(lambda: fn(*qkv.unbind(3)).backward(do), device, [qkv],
                                                f"{name} fwd+bwd {label}")
        for mode in ("fwd", "fwd+bwd"):
            block.append(dict(kernel="temporal_block", shape=shape, mode=mode, full=ms["full 3-D", mode],
                              spatial=ms["spatial", mode], temporal={n: ms[n, mode] for n in contenders}))
    return rows, block


def format_block_table(block):
    """The block comparison as text: ms of full 3-D attention, of the spatial step and of each temporal contender,
    then full / (spatial + temporal) for each: how much faster the factorized block is."""
    names = list(dict.fromkeys(n for b in block for n in b["temporal"]))
    head = f"{'shape':<40}{'pass':<10}{'full 3-D':>10}{'spatial':>10}" + "".join(f"{'t ' + n:>12}" for n in names)
    head += "".join(f"{'full/(sp+t ' + n + ')':>24}" for n in names)
    lines = [head, "-" * len(head)]
    ms = lambda t: "-" if t is None else f"{t:.3g}"  # noqa: E731
    for b in block:
        line = f"{b['shape']:<40}{b['mode']:<10}{ms(b['full']):>10}{ms(b['spatial']):>10}"
        line += "".join(f"{ms(b['temporal'][n]):>12}" for n in names)
        for n in names:
            parts = (b["full"], b["spatial"], b["temporal"][n])
            line += f"{'-' if None in parts else f'{parts[0] / (parts[1] + parts[2]):.2f}x':>24}"
        lines.append(line)
    return "(ms; 't NAME' = the temporal step by NAME; ratios > 1: the factorized block is that much faster)\n" + \
        "\n".join(lines)


def format_table(rows, unit):
    """Rows -> text: one line per (shape, pass), one column per contender, then minigen's ratio to the baseline."""
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    baseline = "sdpa" if "sdpa" in contenders else "eager"
    has_roof = any("roof" in r for r in rows)
    head = f"{'shape':<40}{'pass':<15}" + "".join(f"{c:>12}" for c in contenders)
    head += f"{'copy':>10}" if has_roof else ""
    head += f"{'minigen/' + baseline:>16}" if "minigen" in contenders else ""
    lines = [head, "-" * len(head)]
    for key in dict.fromkeys((r["shape"], r["mode"]) for r in rows):
        got = {r["contender"]: r for r in rows if (r["shape"], r["mode"]) == key}
        cell = lambda c: "-" if c not in got or got[c]["value"] is None else f"{got[c]['value']:.3g}"  # noqa: E731
        line = f"{key[0]:<40}{key[1]:<15}" + "".join(f"{cell(c):>12}" for c in contenders)
        if has_roof:
            roof = next(iter(got.values())).get("roof")
            line += f"{'-' if roof is None else f'{roof:.3g}':>10}"
        if "minigen" in contenders:
            ours, base = got.get("minigen", {}).get("value"), got.get(baseline, {}).get("value")
            line += f"{(f'{ours / base:.2f}x' if ours and base else '-'):>16}"
        lines.append(line)
    return f"({unit})\n" + "\n".join(lines)


def device_label(device):
    triton_version = getattr(_dispatch.triton, "__version__", "not installed")
    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({threads} thread{'s' if threads != 1 else ''})"
    return f"{name}, torch {torch.__version__}, triton {triton_version}"


def record(rows, dtype):
    """Store minigen's figure beside PyTorch's best-known default for each (kernel, shape, pass) in
    docs/results.md (minigen.results), under the device's name. Only rows measured on a GPU have a minigen figure."""
    from minigen import results
    for r in rows:
        if r["contender"] != "minigen" or r["value"] is None:
            continue
        flops = r["kernel"] in ("attention", "temporal_attention")
        base_name = "sdpa" if flops else "eager"
        base = next((b["value"] for b in rows if (b["kernel"], b["shape"], b["mode"], b["contender"])
                     == (r["kernel"], r["shape"], r["mode"], base_name)), None)
        label = {"sdpa": "PyTorch SDPA, default backend", "eager": "eager PyTorch"}[base_name]
        if r["kernel"] == "temporal_attention":
            label = "permute -> PyTorch SDPA, default backend -> permute"
        unit = "TFLOP/s" if flops else "GB/s"
        if r.get("roof") is not None:
            label += f" (copy {r['roof']:.0f} GB/s)"
        results.record("07_kernels", f"{r['kernel']} {r['mode']} {r['shape']} {str(dtype).replace('torch.', '')}",
                       r["value"], baseline=base, baseline_label=label, unit=unit)


def _recorded_rows():
    """The kernel figures (TFLOP/s, GB/s) stored in docs/results.json by `--record` runs."""
    import json
    from minigen import results
    path = results.results_path()
    return [r for r in (json.loads(path.read_text()) if path.exists() else [])
            if r["notebook"] == "07_kernels" and r["unit"] in ("TFLOP/s", "GB/s")]


def recorded_table(gpu_only=True):
    """The kernel figures stored in docs/results.json by `--record` runs, as a table: minigen, its baseline, the
    ratio, and the machine and date of the run. How a reader without a GPU sees what one measured."""
    rows = [r for r in _recorded_rows() if not (gpu_only and r["machine"].startswith("CPU"))]
    if not rows:
        return "No kernel figures recorded yet: run `python -m minigen.bench all --record` on a GPU."
    width = max(68, *(len(r["metric"]) + 2 for r in rows))
    lines = [f"{'kernel, pass, shape, dtype':<{width}}{'minigen':>10}{'baseline':>10}{'ratio':>8}  baseline is",
             "-" * (width + 58)]
    for r in rows:
        ratio = f"{r['value'] / r['baseline']:.2f}x" if r["baseline"] else "-"
        base = "-" if r["baseline"] is None else f"{r['baseline']:.4g}"
        lines.append(f"{r['metric']:<{width}}{r['value']:>10.4g}{base:>10}{ratio:>8}  {r['baseline_label']}")
    machines = sorted({f"{r['machine']} on {r['date']}" for r in rows})
    units = "TFLOP/s for attention, GB/s for the norms"
    return f"Recorded by `python -m minigen.bench all --record` ({units}); measured on " + "; ".join(machines) + \
        "\n" + "\n".join(lines)


# The chapter's targets (bf16 on an H100/H200): (what, row filter, threshold, how the ratio is read)
TARGETS = [
    ("attention forward >= 1.0x default SDPA at the DiT shapes", r"^attention fwd DiT-XL", 1.0, "sdpa"),
    ("attention forward+backward >= 0.8x default SDPA at the DiT shapes", r"^attention fwd\+bwd DiT-XL", 0.8, "sdpa"),
    ("fused norms >= 80% of copy bandwidth", r"^(layernorm_modulate|groupnorm_silu)\S* fwd", 0.8, "copy"),
]


def recorded_targets(rows=None):
    """Which of TARGETS the recorded GPU rows meet, each with its worst row; computed, never typed."""
    import re
    if rows is None:
        rows = [r for r in _recorded_rows() if not r["machine"].startswith("CPU")]
    lines = []
    for what, pattern, threshold, kind in TARGETS:
        found = []
        for r in (r for r in rows if re.search(pattern, r["metric"]) and r["baseline"]):
            copy = re.search(r"copy ([0-9.]+) GB/s", r["baseline_label"])
            if kind == "copy" and copy:
                found.append((r["value"] / float(copy[1]), r["metric"]))
            elif kind == "sdpa":
                found.append((r["value"] / r["baseline"], r["metric"]))
        if not found:
            lines.append(f"not measured  {what}")
            continue
        (worst, worst_row), (best, best_row) = min(found), max(found)
        met = sum(ratio >= threshold for ratio, _ in found)
        verdict = "met" if met == len(found) else "NOT met"
        lines.append(f"{verdict:<8} {what}: {met} of {len(found)} rows\n"
                     f"{'':9}worst {worst:.2f}x ({worst_row}); best {best:.2f}x ({best_row})")
    return "\n".join(lines)


def trace(which="all", *, device=None, dtype=None, only=None, steps=5):
    """Where one forward+backward's time goes, which a GB/s or TFLOP/s figure cannot say (launch gaps, extra
    kernels, host work): torch.profiler over `steps` calls of minigen and of PyTorch's default, at the first shape
    of each table (after `only`), printed as the profiler's table of ops and kernels."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    cuda = device.type == "cuda"
    cases = []  # (title, contender, one forward+backward, leaves whose grads are reset)
    if which in ("attention", "all"):
        for label, B, H, N, D in _only(ATTENTION_SHAPES if cuda else CPU_SHAPES["attention"], only)[:1]:
            q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn_like(q)
            for name, fn in _attention_contenders(device).items():
                if name in ("minigen", "sdpa", "reference"):
                    cases.append((f"attention {label}", name, lambda fn=fn: fn(q, k, v).backward(do), [q, k, v]))
    if which in ("norm", "all"):
        for p in _norm_problems(device, dtype, only, per_kernel=1):
            dy = torch.randn_like(p["x"])
            for name, fn in _norm_contenders(device, p["reference"], p["triton"], False).items():
                cases.append((f"{p['kernel']} {p['short']}", name,
                              lambda fn=fn, p=p, dy=dy: fn(p["x"], *p["args"]).backward(dy), [p["x"]]))
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    for title, name, step, leaves in cases:
        for _ in range(2):  # warm-up: compilation and autotuning stay out of the trace
            step()
        if cuda:
            torch.cuda.synchronize(device)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(steps):
                for t in leaves:
                    t.grad = None
                step()
            if cuda:
                torch.cuda.synchronize(device)
        print(f"\n== {title}: {name}, {steps} forward+backward calls")
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                        row_limit=12))


def run(which="all", *, device=None, dtype=None, compile=True, record_results=False, only=None, graph=False):
    """Measure and print the tables; returns the rows (dicts) for further use. `record_results` stores minigen's
    GPU figures in docs/results.md; `only` keeps the shapes whose label contains it; `graph` adds the rows timed
    from CUDA graphs (see the module docstring)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    print(f"minigen.bench on {device_label(device)}, {str(dtype).replace('torch.', '')}")
    if device.type != "cuda":
        print("No CUDA device: only the PyTorch references run, on the course's small sizes "
              "(the Triton kernels and the SDPA backends are measured on a GPU).")
    elif not _dispatch.triton_can_run(device)[0]:
        print(f"The Triton kernels cannot run here ({_dispatch.triton_can_run(device)[1]}): PyTorch only.")
    if graph and device.type != "cuda":
        print("The graph rows need CUDA graphs, so a GPU: left out.")
        graph = False
    if graph:
        print("Rows marked 'graph': the calls replayed from one CUDA graph on inputs outside the L2 cache, so no host "
              "work is timed (the plain rows time calls from Python).")
    rows = []
    if which in ("attention", "all"):
        att = bench_attention(device, dtype, only, graph)
        print("\nattention " + format_table(att, "TFLOP/s = attention_flops / time: 4*B*H*N*N*D forward, 3.5x that "
                                            "forward+backward"))
        if record_results:  # table by table, so a later failure does not lose what was measured
            record(att, dtype)
        rows += att
    if which in ("norm", "all"):
        norm = bench_norm(device, dtype, compile_=compile, only=only, graph=graph)
        for kernel in dict.fromkeys(r["kernel"] for r in norm):
            print(f"\n{kernel} " + format_table([r for r in norm if r["kernel"] == kernel],
                                                 "GB/s = bytes moved at least / time; forward reads x and writes y, "
                                                 "backward also reads dy and writes dx; 'copy' = GB/s of copying x "
                                                 "into a preallocated tensor"))
        if record_results:
            record(norm, dtype)
        rows += norm
    if which == "temporal":  # (not part of "all": run it by name)
        if graph:
            print("The temporal table has no graph rows.")
        temporal, block = bench_temporal(device, dtype, only)
        print("\ntemporal_attention " + format_table(temporal, "TFLOP/s = temporal_attention_flops / time: "
                                                     "4*B*S*H*T*T*D forward, 3.5x that forward+backward; sdpa = "
                                                     "permute -> SDPA -> permute"))
        print("\nfull 3-D attention vs a factorized block (spatial + temporal), same tensors "
              + format_block_table(block))
        if record_results:
            record(temporal, dtype)
        rows += temporal + block
    return rows


def main(argv=None):
    import sys
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["cpu"]:  # the CPU-threads table (minigen/bench_cpu.py): training steps, not kernels
        from minigen import bench_cpu
        return bench_cpu.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m minigen.bench", description=__doc__.splitlines()[0],
                                     epilog="python -m minigen.bench cpu --help: the CPU-threads table")
    parser.add_argument("which", nargs="?", default="all", choices=("attention", "norm", "temporal", "all"),
                        help="'all' is attention and norm; temporal runs by name")
    parser.add_argument("--dtype", default=None, choices=("bf16", "fp16", "fp32"), help="default: bf16 on a GPU")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile time is long)")
    parser.add_argument("--record", action="store_true", help="store minigen's GPU figures in docs/results.md")
    parser.add_argument("--json", default=None, help="also write every measured row to this JSON file")
    parser.add_argument("--only", default=None, help="keep the shapes whose label contains this, e.g. 512px")
    parser.add_argument("--graph", action="store_true",
                        help="also time each call replayed from a CUDA graph on cold inputs: the kernels without the "
                             "host's launch work (GPU only)")
    parser.add_argument("--trace", action="store_true",
                        help="instead of the tables: torch.profiler's view of one shape's forward+backward")
    args = parser.parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[args.dtype]
    if args.trace:
        trace(args.which, dtype=dtype, only=args.only)
        return
    rows = run(args.which, dtype=dtype, compile=not args.no_compile, record_results=args.record,
               only=args.only, graph=args.graph)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
