"""Read a learning rate off a range-test curve: the smoother and the suggestion methods.

A range test (:func:`lrtools.finder.lr_range_test`) records one loss per rate. This module
turns that curve into a rate, with small pure functions that share one signature,
in the way fastai's suggesters do::

    method(lrs, smoothed_losses, *, skip=0) -> float

``lrs`` are the swept rates (rising), ``smoothed_losses`` the loss at each rate
smoothed by :func:`smooth`, and ``skip`` the number of first steps to ignore.
Every method looks only at the *falling part* of the curve (:func:`descent`):
the finite losses up to the lowest one, without the first ``skip`` steps. When
there is no falling part (a loss that is NaN from the start, never falls, or
falls by less than :data:`MIN_RELATIVE_DROP`, a flat or dead curve), every method
raises ``ValueError`` saying so instead of returning a confident number. Every
suggestion lies inside the swept range ``[lrs[0], lrs[-1]]``.

:data:`METHODS` maps each method's name to its function; :data:`DEFAULT_METHOD`
is the one :meth:`lrtools.finder.RangeTestResult.suggest` and ``plot()`` use when none is named.

Example:

>>> import numpy as np
>>> lrs = np.geomspace(1e-4, 1.0, 50)
>>> losses = smooth(1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2, 0.0)
>>> {name: round(method(lrs, losses, skip=5), 4) for name, method in METHODS.items()}
{'steepest': 0.001, 'valley': 0.002, 'minimum': 0.0019, 'consensus': 0.0016}
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np

from lrtools._checks import check_choice

__all__ = [
    "DEFAULT_METHOD",
    "DISAGREEMENT_FACTOR",
    "METHODS",
    "MIN_RELATIVE_DROP",
    "SKIP_FRACTION",
    "LossSmoother",
    "Suggestions",
    "check_method",
    "consensus",
    "descent",
    "minimum",
    "smooth",
    "steepest",
    "suggest_range",
    "valley",
]

DEFAULT_METHOD = "valley"
"""The suggestion method used when none is named, chosen by measurement.

Evidence (the book's appendix "Measured", ``benchmarks/suggestions.py``): trained at each
rule's rate, ``"valley"`` ended 1.4 points of validation accuracy below the best rate of a
grid on average over 4 networks x 3 seeds, 2.2 at worst, against 4.9 for ``"minimum"``
and 27.7 for ``"steepest"`` (which left the Adam CNN at chance on every seed).

:meth:`~lrtools.finder.RangeTestResult.suggest`, ``repeat_suggestions()``, ``plot()`` and
:func:`lrtools.plotting.plot_range_test` all read this one constant.
"""

DISAGREEMENT_FACTOR = 10.0
"""Suggestions further apart than this factor (one decade) are flagged as disagreeing."""

SKIP_FRACTION = 0.1
"""The fraction of the planned steps the suggestions ignore at the start (as fastai does)."""

MIN_RELATIVE_DROP = 0.01
"""The smallest fall of the smoothed loss, relative to its first value, that counts as learning.

A curve whose lowest smoothed loss lies less than 1 % below its first value is flat
(a dead network, a frozen model, a rate range far too small): it gets no suggestion.
The drop is measured from the first smoothed loss (the first raw loss) to the lowest one,
relative to the first (to 1 when the first loss is exactly 0).
Rounding cannot fake a 1 % fall: float32 losses carry a relative error of about
``6e-8`` per step, so even 100 steps of accumulated rounding stay ``1e3`` times below it.
"""

# suggest_range: the falling part runs from where the smoothed loss has covered this
# fraction of its total drop to where it has covered 1 - this fraction.
_RANGE_FRACTION = 0.1


# --------------------------------------------------------------------------- smoothing


class LossSmoother:
    """Exponential moving average with bias correction (fastai's smoothed loss), step by step.

    ``avg_t = smoothing * avg_{t-1} + (1 - smoothing) * loss_t`` and
    ``smoothed_t = avg_t / (1 - smoothing ** (t + 1))``; ``smoothing=0`` returns the
    losses unchanged. A non-finite loss makes every later value non-finite.

    Args:
        smoothing: the factor of the moving average, in ``[0, 1)``.

    Example:

    >>> smoother = LossSmoother(0.5)
    >>> smoother.update(4.0), smoother.update(1.0)
    (4.0, 2.0)
    """

    def __init__(self, smoothing: float):
        self.smoothing = smoothing
        self.average = 0.0
        self.count = 0

    def update(self, loss: float) -> float:
        """Add the next loss; return the smoothed loss so far."""
        self.count += 1
        self.average = self.smoothing * self.average + (1.0 - self.smoothing) * loss
        return self.average / (1.0 - self.smoothing**self.count)


def smooth(losses: Any, smoothing: float) -> np.ndarray:
    """Return ``losses`` smoothed by :class:`LossSmoother` (a bias-corrected moving average).

    Example:

    >>> smooth([4.0, 1.0], 0.5).tolist()
    [4.0, 2.0]
    """
    smoother = LossSmoother(smoothing)
    return np.array([smoother.update(float(loss)) for loss in losses], dtype=float)


# --------------------------------------------------------------------------- the falling part


def _finite_prefix(lrs: np.ndarray, smoothed: np.ndarray) -> int:
    """The number of steps before the first non-finite smoothed loss; refuses none."""
    finite = np.isfinite(smoothed)
    if not finite[0]:
        raise ValueError(
            f"The loss was not finite (NaN or inf) from the first step (lr={lrs[0]:.3g}), so "
            "there is nothing to suggest. Check the data and the model for NaN, or run the "
            "test again with a smaller start_lr."
        )
    return len(smoothed) if finite.all() else int(np.argmin(finite))


def _check_fell(lrs: np.ndarray, smoothed: np.ndarray, lowest: int) -> None:
    """Refuse a curve that never fell, or fell by less than :data:`MIN_RELATIVE_DROP`."""
    scale = abs(smoothed[0]) or 1.0
    drop = (smoothed[0] - smoothed[lowest]) / scale
    if lowest == 0 and np.ptp(smoothed) >= MIN_RELATIVE_DROP * scale:
        raise ValueError(
            f"The smoothed loss never fell below its value at the first step (lr={lrs[0]:.3g}), "
            "so there is no falling part to suggest a rate from. Run the test again with a "
            "smaller start_lr (the rate is already too high), a larger end_lr or more "
            "num_steps (the rate never got high enough), or less smoothing."
        )
    if drop < MIN_RELATIVE_DROP:
        raise ValueError(
            f"The curve is flat: the smoothed loss fell by only {max(drop, 0.0):.2%} of its "
            f"first value over the whole sweep (less than {MIN_RELATIVE_DROP:.0%}), so the "
            "network learned nothing and there is no rate to suggest. Check that the model "
            "can train (trainable weights, a loss that depends on them, labels that match the "
            "outputs) and that end_lr is large enough."
        )


def descent(lrs: Any, smoothed_losses: Any, *, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return the falling part of a curve: the finite steps up to the lowest loss, after ``skip``.

    At least the two steps before and at the lowest loss are kept, whatever ``skip``.

    Args:
        lrs: the swept rates, rising.
        smoothed_losses: the smoothed loss at each rate (as long as ``lrs``).
        skip: how many first steps to leave out.

    Returns:
        ``(lrs, smoothed_losses)`` of the falling part.

    Raises:
        ValueError: when there is no falling part: the loss is not finite from the first
            step, never falls below its first value, or falls by less than
            :data:`MIN_RELATIVE_DROP` of it (a flat curve).

    Example:

    >>> lrs, losses = descent([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.5, 0.2, 3.0])
    >>> lrs.tolist()
    [0.001, 0.01, 0.1]
    """
    lrs = np.asarray(lrs, dtype=float)
    smoothed = np.asarray(smoothed_losses, dtype=float)
    if lrs.shape != smoothed.shape or lrs.size == 0:
        raise ValueError(
            f"lrs and smoothed_losses must be non-empty and of the same length, got "
            f"{lrs.size} and {smoothed.size}."
        )
    length = _finite_prefix(lrs, smoothed)
    lrs, smoothed = lrs[:length], smoothed[:length]
    lowest = int(np.argmin(smoothed))
    _check_fell(lrs, smoothed, lowest)
    start = min(skip, lowest - 1)
    return lrs[start : lowest + 1], smoothed[start : lowest + 1]


# --------------------------------------------------------------------------- the methods


def steepest(lrs: Any, smoothed_losses: Any, *, skip: int = 0) -> float:
    """The rate where the smoothed loss falls fastest against ``log lr`` (fastai's ``steep``).

    ``argmin_t d smoothed_t / d log lr_t`` over the falling part (:func:`descent`).

    Example:

    >>> steepest([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.5, 0.1, 3.0])
    0.01
    """
    lrs, smoothed = descent(lrs, smoothed_losses, skip=skip)
    slopes = np.gradient(smoothed, np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def valley(lrs: Any, smoothed_losses: Any, *, skip: int = 0) -> float:
    """fastai's ``valley``: the middle of the longest downhill stretch before the minimum.

    The longest decreasing subsequence of the falling part, read as a contiguous
    stretch of that many steps ending where the subsequence ends; the suggestion is
    its middle step.

    Example:

    >>> valley([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.5, 0.1, 3.0])
    0.001
    """
    lrs, smoothed = descent(lrs, smoothed_losses, skip=skip)
    length = np.ones(len(smoothed), dtype=int)
    for i in range(1, len(smoothed)):
        higher = smoothed[:i] > smoothed[i]
        if higher.any():
            length[i] = length[:i][higher].max() + 1
    end = int(np.argmax(length))
    return float(lrs[end - length[end] // 2])


def minimum(lrs: Any, smoothed_losses: Any, *, skip: int = 0) -> float:
    """fastai's ``minimum``: the rate at the lowest smoothed loss, divided by 10.

    When that lies below the first swept rate, the first swept rate (the
    suggestion never leaves the swept range).

    Example:

    >>> minimum([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.5, 0.1, 3.0])
    0.01
    """
    first = float(np.asarray(lrs, dtype=float)[0])
    lrs, _ = descent(lrs, smoothed_losses, skip=skip)
    return max(float(lrs[-1] / 10.0), first)


def consensus(lrs: Any, smoothed_losses: Any, *, skip: int = 0) -> float:
    """The geometric mean of ``steepest``, ``valley`` and ``minimum``.

    ``exp(mean(log r_m))``: on a log axis, the centre of the three rules, so that
    none of them alone decides.

    Example:

    >>> round(consensus([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.5, 0.1, 3.0]), 5)
    0.00464
    """
    rates = [rule(lrs, smoothed_losses, skip=skip) for rule in (steepest, valley, minimum)]
    return float(np.exp(np.mean(np.log(rates))))


METHODS = types.MappingProxyType(
    {"steepest": steepest, "valley": valley, "minimum": minimum, "consensus": consensus}
)
"""The suggestion methods by name; each is ``method(lrs, smoothed_losses, *, skip=0) -> float``."""


def check_method(method: Any) -> str:
    """Return ``method`` if it names one of :data:`METHODS`.

    Raises:
        TypeError: if it is not a string.
        ValueError: if it is not one of :data:`METHODS`; the message lists them.
    """
    try:
        return check_choice("method", method, METHODS)
    except ValueError:
        raise ValueError(
            f"Unknown method {method!r}: use one of {', '.join(map(repr, METHODS))}."
        ) from None


def suggest_range(lrs: Any, smoothed_losses: Any, *, skip: int = 0) -> tuple[float, float]:
    """Return ``(base_lr, max_lr)``: where the falling part has covered 10 % and 90 % of its drop.

    Args:
        lrs: the swept rates, rising.
        smoothed_losses: the smoothed loss at each rate.
        skip: how many first steps to leave out.

    Returns:
        ``(base_lr, max_lr)`` with ``base_lr < max_lr``, both inside the swept range.

    Raises:
        ValueError: when there is no falling part (see :func:`descent`).

    Example:

    >>> suggest_range([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.2, 3.0])
    (0.01, 0.1)
    """
    lrs, smoothed = descent(lrs, smoothed_losses, skip=skip)
    drop = smoothed[0] - smoothed[-1]
    started = int(np.flatnonzero(smoothed <= smoothed[0] - _RANGE_FRACTION * drop)[0])
    stopped = int(np.flatnonzero(smoothed <= smoothed[-1] + _RANGE_FRACTION * drop)[0])
    return float(lrs[started]), float(lrs[max(stopped, started + 1)])


# --------------------------------------------------------------------------- all at once


@dataclasses.dataclass(frozen=True)
class Suggestions:
    """Every method's suggested rate at once, and whether they agree.

    Attributes:
        rates: method name -> suggested rate, for each of :data:`METHODS`.
        ratio: the largest suggestion divided by the smallest.
        disagree: ``True`` when ``ratio`` exceeds :data:`DISAGREEMENT_FACTOR`
            (one decade): the curve is ambiguous, so look at the plot rather
            than trust any single number.
        spreads: with several repeats, method name -> ``(lowest, highest)``
            suggestion over the repeats; empty for a single run.

    Example:

    >>> s = Suggestions(rates={"steepest": 0.01, "valley": 0.02, "minimum": 0.03},
    ...                 ratio=3.0, disagree=False, spreads={})
    >>> s["valley"]
    0.02
    """

    rates: dict[str, float]
    ratio: float
    disagree: bool
    spreads: dict[str, tuple[float, float]]

    def __getitem__(self, method: str) -> float:
        return self.rates[check_method(method)]

    def __repr__(self) -> str:
        lines = []
        for method, rate in self.rates.items():
            line = f"  {method:<9} {rate:.3g}"
            if method in self.spreads:
                low, high = self.spreads[method]
                line += f"  (repeats: {low:.3g} to {high:.3g})"
            lines.append(line)
        verdict = (
            f"DISAGREE: they span a factor {self.ratio:.3g} > {DISAGREEMENT_FACTOR:g}; "
            "look at result.plot() before choosing"
            if self.disagree
            else f"agree within a factor {self.ratio:.3g}"
        )
        return "Suggestions(\n" + "\n".join(lines) + f"\n  {verdict}\n)"
