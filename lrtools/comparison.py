"""Call a win, a loss or a tie between two training set-ups only as far as the seeds allow.

Two set-ups trained from the same seeds start from the same weights and see the same batches,
so their difference within a seed is free of most of the seed-to-seed spread. The book compares
set-ups this way: the mean of the paired differences, its standard error over the seeds, and a
verdict that names a winner only when the mean lies at least ``z`` standard errors from zero
(two by default). The verdict is a reading aid, not a significance test: with three seeds a
95 % t interval would be 4.3 standard errors wide on each side, and a chapter that needs that
certainty uses more seeds or a larger ``z``.

Example:

>>> difference = paired_difference([0.97, 0.96, 0.98], [0.95, 0.95, 0.96])
>>> print(difference)
+0.0167 ± 0.0033 over 3 seeds
>>> difference.verdict()
'higher'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lrtools._checks import check_real

__all__ = ["PairedDifference", "paired_difference"]


@dataclass(frozen=True)
class PairedDifference:
    """The per-seed differences ``a - b`` of one measure, with their mean and standard error.

    Attributes:
        differences: one difference per seed, in the order given.
    """

    differences: tuple[float, ...]

    @property
    def n(self) -> int:
        """How many seeds (pairs) the differences come from."""
        return len(self.differences)

    @property
    def mean(self) -> float:
        """The mean difference over the seeds."""
        return float(np.mean(self.differences))

    @property
    def standard_error(self) -> float:
        """``std(differences, ddof=1) / sqrt(n)``: how far the mean could move with new seeds."""
        return float(np.std(self.differences, ddof=1) / math.sqrt(self.n))

    def verdict(self, z: float = 2.0) -> str:
        """``"higher"`` or ``"lower"`` (``a`` against ``b``) when the mean is ``z`` standard
        errors or more from zero, else ``"no measurable difference"``.

        Args:
            z: how many standard errors the mean must lie from zero.

        Returns:
            One of the three strings.

        Raises:
            ValueError: if ``z`` is not positive.
        """
        if check_real("z", z) <= 0:
            raise ValueError(f"`z` must be positive, got {z!r}.")
        if abs(self.mean) < z * self.standard_error or self.mean == 0:
            return "no measurable difference"
        return "higher" if self.mean > 0 else "lower"

    def __str__(self) -> str:
        return f"{self.mean:+.4f} ± {self.standard_error:.4f} over {self.n} seeds"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Pair ``a[i]`` with ``b[i]`` (the same seed) and summarise ``a - b``.

    Args:
        a: one set-up's measure, one value per seed.
        b: the other set-up's measure, for the same seeds in the same order.

    Returns:
        A :class:`PairedDifference`.

    Raises:
        ValueError: if the lengths differ, if there are fewer than two pairs (no standard
            error), or if a value is not finite.

    Example:

    >>> paired_difference([0.30, 0.28], [0.29, 0.30]).verdict()
    'no measurable difference'
    """
    a_values = np.asarray(a, dtype="float64").ravel()
    b_values = np.asarray(b, dtype="float64").ravel()
    if a_values.shape != b_values.shape:
        raise ValueError(f"a has {a_values.size} values and b {b_values.size}: pair them by seed")
    if a_values.size < 2:
        raise ValueError(f"need at least two seeds for a standard error, got {a_values.size}")
    if not (np.isfinite(a_values).all() and np.isfinite(b_values).all()):
        raise ValueError("every value must be finite (a run that diverged has no difference)")
    return PairedDifference(tuple(float(d) for d in a_values - b_values))
