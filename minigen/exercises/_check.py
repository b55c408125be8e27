"""Shared by the exercise checkers: the verdict a notebook prints, and the solutions a student can ask for.

A checker is a function that runs the student's code on fixed inputs and raises AssertionError with a hint when
something is wrong. `@checker("topic.name")` turns it into what a notebook calls: it prints a verdict instead of
raising (so Run All goes on past an unfinished exercise), says "not attempted yet" for a stub that raises
NotImplementedError, and points at `minigen.exercises.solution("topic.name")`. Tests call it with `strict=True`,
which raises instead. Solutions are ordinary functions in the topic's module, registered with `@solution_for`.
"""
import functools
import inspect

import torch

SOLUTIONS: dict[str, tuple] = {}  # "topic.name" -> the solution function(s), in the order the checker takes them


def solution_for(key: str):
    """Register the decorated function as (part of) the solution of exercise `key`."""
    def register(fn):
        SOLUTIONS[key] = SOLUTIONS.get(key, ()) + (fn,)
        return fn
    return register


def checker(key: str):
    """Make `check(*student_functions)` print its verdict (see the module docstring)."""
    def wrap(check):
        @functools.wraps(check)
        def run(*fns, strict: bool = False) -> None:
            if strict:
                return check(*fns)
            names = " and ".join(getattr(f, "__name__", "your function") for f in fns)
            stuck = f"(stuck? minigen.exercises.solution({key!r}) prints a solution)"
            try:
                check(*fns)
            except NotImplementedError:
                print(f"not attempted yet: write {names} in the cell above, then run this cell again {stuck}")
            except AssertionError as error:
                print(f"not yet: {error}\n{stuck}")
            except Exception as error:  # the student's code crashed: show what, do not stop the notebook
                print(f"{names} raised {type(error).__name__}: {error}\n{stuck}")
        run.key = key
        return run
    return wrap


def solution(key: str) -> None:
    """Print the solution of exercise `key` ("topic.name", e.g. "vae.gaussian_kl"), ready to paste."""
    import importlib

    topic = key.split(".")[0]
    try:
        importlib.import_module(f"minigen.exercises.{topic}")
    except ModuleNotFoundError:
        raise KeyError(f"no exercise topic {topic!r}; topics: pixels, autoencoder, vae, flow, diffusion, kernels, "
                       "dit, gan, edits, clip, t2i, video")
    if key not in SOLUTIONS:
        known = sorted(k for k in SOLUTIONS if k.startswith(topic + "."))
        raise KeyError(f"no exercise {key!r}; exercises of {topic}: {', '.join(known)}")
    print("\n\n".join(inspect.getsource(fn).split("\n", 1)[1].rstrip() for fn in SOLUTIONS[key]))


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
