"""Shared helper for exercise checkers: compare a student's tensor with the reference and explain."""
import torch


def assert_close(name: str, got, expected: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-4,
                 hint: str = "") -> None:
    """Raise AssertionError naming `name` with the shapes or the largest difference; else print a pass."""
    if not torch.is_tensor(got):
        raise AssertionError(f"{name}: expected a tensor, got {type(got).__name__}. {hint}".strip())
    if got.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}. {hint}".strip())
    if not torch.allclose(got.float(), expected.float(), atol=atol, rtol=rtol):
        worst = (got.float() - expected.float()).abs().max().item()
        raise AssertionError(f"{name}: values differ from the reference (max |diff| {worst:.3g}). {hint}".strip())
    print(f"{name}: correct")
