"""Benchmarks of lrtools: what its tools cost and what they buy, measured side by side.

``python benchmarks/run.py`` measures; :mod:`benchmarks.report` renders the stored
results (the README table and the figures of the book's "Measured" appendix).
"""
