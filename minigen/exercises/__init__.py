"""Checkers for the notebooks' exercises, one module per notebook topic (`minigen.exercises.vae`, ...).

Every exercise follows one pattern in its notebook: a stub the student fills in (it raises NotImplementedError
until then), a cell that runs the checker on the student's function and prints the verdict (a wrong answer
prints what is wrong and a hint; Run All goes on), and the solution on request:

    from minigen.exercises import solution
    solution("vae.gaussian_kl")      # prints a solution, ready to paste

tests/test_exercises.py runs every checker on a stub and on a plausible mistake (both must be rejected) and on
the solution (must pass).
"""
from ._check import SOLUTIONS, solution

__all__ = ["solution", "SOLUTIONS"]
