"""What the compiler makes of a kernel, without a GPU.

Triton's interpreter runs kernels on the CPU but never compiles them, so it cannot say how a kernel will run: how
many registers a thread needs (more than ~128 halves how many programs share an SM; past 255 they spill to slow
local memory), how much shared memory it takes, and whether a loop's loads became asynchronous copies that overlap
the next tile's loads with this tile's arithmetic (software pipelining). Triton's own compiler and the `ptxas`
that ships with it can answer that on any machine: compile for an NVIDIA architecture (sm_90: H100, H200) down to a
cubin and read it.

    compile_kernel(kernel, constexprs, num_warps=, num_stages=, ints=)  -> Compiled    (triton imported uncompiled:
                                                                                       TRITON_INTERPRET unset)
    compile_in_subprocess([spec, ...])                                  -> [Compiled]  (from anywhere, e.g. under
                                                                                       the interpreter)

A spec is a dict: kernel ("flash_attention._attn_fwd_kernel", a name in minigen.kernels), constexprs, num_warps,
num_stages, ints (example values of integer arguments). As in a real launch, every pointer is taken as 16-byte
aligned and every integer in `ints` divisible by 16 is marked so (Triton specializes on both); other integers are
unknown to the compiler. `scripts/kernel_resources.py`, the kernel tests and notebook 07 use it.
"""
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FP32_POINTERS = {"mean_ptr", "rstd_ptr", "dshift_ptr", "dscale_ptr", "dgate_ptr", "dw_ptr", "db_ptr", "lse_ptr",
                 "delta_ptr"}  # statistics and partial sums are fp32 whatever the activations' dtype
FLOAT_ARGS = {"eps", "qk_scale", "sm_scale"}
SKIP = 77  # the subprocess's exit code when this Triton's compiler API is not the one written against
MARK = "compile_check results: "  # the line of the subprocess's output that holds them


class CompilerUnavailable(RuntimeError):
    """This Triton cannot compile ahead of time the way this module asks (another version's compiler API)."""


@dataclasses.dataclass
class Compiled:
    kernel: str
    registers: int | None  # per thread (None: no cuobjdump to read them)
    spilled_bytes: int | None  # stack bytes per thread, where registers spilled; 0 when none did
    shared_bytes: int  # shared memory per program
    pipelined: bool  # some loop's loads became asynchronous copies into shared memory

    def __str__(self) -> str:
        regs = "?" if self.registers is None else self.registers
        spill = "" if not self.spilled_bytes else f", {self.spilled_bytes} B spilled"
        loads = "pipelined loads" if self.pipelined else "synchronous loads"
        return f"{regs} registers/thread{spill}, {self.shared_bytes} B shared memory, {loads}"


def _jit_function(kernel):
    import triton
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        if not hasattr(kernel, "fn"):
            raise CompilerUnavailable(f"{kernel!r} is not a compiled Triton kernel (is TRITON_INTERPRET set?)")
        kernel = kernel.fn  # unwrap triton.autotune / triton.heuristics
    return kernel


def _resource_usage(cubin: bytes) -> dict:
    """REG and STACK of a cubin, from the cuobjdump that ships with Triton's NVIDIA backend (empty if absent)."""
    import triton
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True).stdout
    fields = [w.split(":") for line in out.splitlines() if "REG:" in line for w in line.split() if ":" in w]
    return {k: int(v) for k, v in fields if v.isdigit()}


def compile_kernel(kernel, constexprs: dict, *, num_warps: int = 4, num_stages: int = 3, ints: dict | None = None,
                   dtype: str = "bf16", arch: int = 90) -> Compiled:
    """Compile `kernel` (a @triton.jit function, possibly autotuned) for sm_`arch` with `constexprs` and read the
    result; pointers other than the fp32 statistics are `dtype`."""
    import triton
    if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 3):
        raise CompilerUnavailable(f"triton {triton.__version__}: the ahead-of-time compile here needs 3.3 or newer")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = _jit_function(kernel)
    ints = ints or {}
    sig = {n: "constexpr" if n in constexprs else "*fp32" if n in FP32_POINTERS else "*u8" if n == "mask_ptr"
           else f"*{dtype}" if n.endswith("_ptr") else "fp32" if n in FLOAT_ARGS else "i32" for n in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if n not in constexprs and (n.endswith("_ptr") or ints.get(n, 1) % 16 == 0)}
    # errors of the API's shape (another Triton's ASTSource, attrs, asm or metadata) mean "cannot tell here"; a
    # CompilationError or an MLIR failure inside triton.compile is the kernel's own fault and stays an error
    api_errors = (TypeError, AttributeError, KeyError, AssertionError)
    try:
        source = ASTSource(fn, sig, constexprs, attrs)
    except api_errors as error:
        raise CompilerUnavailable(f"triton {triton.__version__}: {type(error).__name__}: {error}") from error
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                  options=dict(num_warps=num_warps, num_stages=num_stages))
        cubin, ttgir, shared = compiled.asm["cubin"], compiled.asm["ttgir"], compiled.metadata.shared
    except api_errors as error:
        raise CompilerUnavailable(f"triton {triton.__version__}: {type(error).__name__}: {error}") from error
    usage = _resource_usage(cubin)
    return Compiled(kernel=fn.__name__, registers=usage.get("REG"), spilled_bytes=usage.get("STACK"),
                    shared_bytes=shared, pipelined="async_copy" in ttgir or "async_tma_copy" in ttgir)


def _compile_spec(spec: dict) -> Compiled:
    module, name = spec["kernel"].rsplit(".", 1)
    kernel = getattr(importlib.import_module(f"minigen.kernels.{module}"), name)
    return compile_kernel(kernel, spec["constexprs"], num_warps=spec.get("num_warps", 4),
                          num_stages=spec.get("num_stages", 3), ints=spec.get("ints"), dtype=spec.get("dtype", "bf16"))


def compile_in_subprocess(specs: list[dict], timeout: float = 600) -> list[Compiled]:
    """compile_kernel for each spec, in a fresh Python with the interpreter off (Triton reads TRITON_INTERPRET once,
    at import, so a process running kernels in the interpreter cannot also compile them)."""
    root = Path(__file__).resolve().parents[2]
    # FP fusion as on a GPU by default (the tests turn it off for the interpreter's sake; the compiled code differs)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1", "PYTHONPATH": os.pathsep.join(
        [str(root)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    try:
        result = subprocess.run([sys.executable, "-m", "minigen.kernels.compile_check"], input=json.dumps(specs),
                                cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"compiling {len(specs)} kernels took longer than {timeout} s") from error
    if result.returncode == SKIP:
        raise CompilerUnavailable(result.stdout.strip())
    results = [line[len(MARK):] for line in result.stdout.splitlines() if line.startswith(MARK)]
    if result.returncode != 0 or not results:
        raise RuntimeError(f"compiling the kernels failed:\n{result.stderr[-3000:]}")
    return [Compiled(**row) for row in json.loads(results[-1])]


def main() -> None:
    """The subprocess's side: specs as JSON on stdin, one JSON list of results on the last line of stdout."""
    specs = json.loads(sys.stdin.read())
    try:
        results = [_compile_spec(spec) for spec in specs]
    except CompilerUnavailable as error:
        print(error)
        sys.exit(SKIP)
    print(MARK + json.dumps([dataclasses.asdict(r) for r in results]))


if __name__ == "__main__":
    main()
