"""Without triton installed, minigen.kernels still imports and every function runs on its reference.

The check runs in a fresh interpreter where `import triton` fails (sys.modules["triton"] = None), so it does not
depend on what this test session has imported already.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["triton"] = None  # any `import triton` now raises ImportError
    import torch
    import minigen.kernels as K
    from minigen.kernels import _dispatch

    assert _dispatch.triton is None and _dispatch.TRITON_MISSING_REASON
    assert _dispatch.choose_backend("attention", None, torch.device("cpu"), fallback="sdpa") == "sdpa"
    assert _dispatch.triton_can_run(torch.device("cpu"))[0] is False

    q = torch.randn(1, 2, 9, 16, requires_grad=True)
    out = K.attention(q, q, q, causal=True)
    torch.testing.assert_close(out, K.attention_reference(q, q, q, causal=True))
    out.sum().backward()
    x, mod = torch.randn(2, 5, 8), torch.randn(2, 8)
    torch.testing.assert_close(K.layernorm_modulate(x, mod, mod), K.layernorm_modulate_reference(x, mod, mod))
    torch.testing.assert_close(K.gated_residual(x, x, mod), K.gated_residual_reference(x, x, mod))
    img = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(K.groupnorm_silu(img, 2, None, None), K.groupnorm_silu_reference(img, 2, None, None))
    try:
        K.attention(q, q, q, backend="triton")
    except RuntimeError as error:
        assert "Triton is not installed" in str(error), error
    else:
        raise AssertionError("backend='triton' without triton should raise")
    print("references ok without triton")
""")


def test_everything_runs_on_references_without_triton():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MINIGEN_KERNELS", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "references ok without triton" in result.stdout
