"""The measurements, in the order they run: the one list ``run``, ``report`` and the tests read.

Every measurement is a module with the same parts:

* ``NAME``: its key in ``results.json``; ``TABLES``: the CSV files it writes;
  ``FIGURE``: the PNG file of its figure;
* ``Settings`` (a frozen dataclass) and its two instances ``FULL`` and ``QUICK``
  (``--quick`` only makes the numbers smaller);
* ``measure(settings) -> {csv name: DataFrame}``: loads its data, trains and times;
  the only part that takes minutes;
* ``summarize(tables, settings) -> dict``: its entry of ``results.json`` (set-up,
  headline figures, targets), computed from the tables alone;
* ``draw(tables, entry) -> Figure``: its figure, from the tables and the entry.

Example:

>>> list(MEASUREMENTS)[:2]
['overhead', 'range_vs_search']
"""

from __future__ import annotations

from types import ModuleType

from benchmarks import (
    overhead,
    range_test_overhead,
    range_vs_search,
    suggestions,
    time_to_accuracy,
)

MEASUREMENTS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (overhead, range_vs_search, range_test_overhead, time_to_accuracy, suggestions)
}
"""Measurement name -> its module."""

PARTS = ("NAME", "TABLES", "FIGURE", "Settings", "FULL", "QUICK", "measure", "summarize", "draw")
"""What every measurement module defines."""
