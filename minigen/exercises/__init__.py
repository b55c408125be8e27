"""Checkers for the notebooks' exercises, one module per notebook topic (`minigen.exercises.vae`, ...).

Each `check_*` function runs the student's code on fixed inputs, compares it with the reference
implementation, and prints a short verdict; a wrong answer raises AssertionError with a hint, so the
checker cell fails loudly in nbval too.
"""
