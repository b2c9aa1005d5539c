"""Benchmarks: Lifeline next to the bare tools doing the same work (`make bench`; see run.py).

Not part of the test suite: they take minutes and print tables of medians and ratios.
"""
