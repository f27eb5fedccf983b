"""Benchmarks of lrtools: what its tools cost and what they buy, measured side by side.

``python -m benchmarks.run`` measures; :mod:`benchmarks.report` renders the stored
results (the README table and the figures of the book's "Measured" appendix);
:mod:`benchmarks.registry` lists the measurements, one module each.
"""
