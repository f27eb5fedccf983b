"""The learning-rate range test (Smith 2017; the "LR finder" of fastai).

The test trains a compiled model for a few steps while the learning rate grows
from a tiny to a huge value, records the loss of every step, and stops once the
loss explodes. Where the loss falls fastest, and where it stops falling, tell
which rates are worth training with::

    result = lrtools.lr_range_test(model, x_train, y_train, batch_size=64)
    result.suggestions()          # every method's rate, and whether they agree
    result.plot()                 # the loss against the rate, suggestion marked
    lr = result.suggest("valley")

The test leaves the model as it found it: weights, optimizer slots, step
counter and learning rate (a float, a variable or a schedule) are restored bit
for bit from a snapshot kept in memory (no checkpoint files). It works with any
Keras optimizer, including ``LossScaleOptimizer`` (mixed precision) and
``MultiOptimizer`` (per-group rates), and inside a ``tf.distribute`` scope.

How the swept rate reaches the optimizer: every optimizer that owns a rate
(:func:`lrtools.optimizers.rate_owners`) trains at ``lr * ratio`` where ``ratio``
is its own rate at the start of the test divided by the largest of those rates.
With one optimizer the ratio is 1, so the optimizer trains at exactly the swept
rate. With a ``MultiOptimizer`` the groups keep their proportions and the swept
rate (and so every suggestion) is the rate of the fastest group: multiply it by
each group's ratio to set the others. When every rate is 0 at the start (a
warm-up schedule at step 0), all groups get the swept rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import numbers
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from lrtools._rates import rate_owners

if TYPE_CHECKING:  # pragma: no cover - imported for type hints only
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["DISAGREEMENT_FACTOR", "METHODS", "RangeTestResult", "Suggestions", "lr_range_test"]

METHODS = ("steepest", "valley", "minimum")
"""The suggestion methods of :meth:`RangeTestResult.suggest`."""

DISAGREEMENT_FACTOR = 10.0
"""Suggestions further apart than this factor (one decade) are flagged as disagreeing."""

_MODES = ("exponential", "linear")
# The suggestions ignore this fraction of the planned steps at the start (as fastai does).
_SKIP_FRACTION = 0.1
# suggest_range: the falling part of the curve runs from where the smoothed loss
# has covered this fraction of its total drop to where it has covered 1 - this fraction.
_RANGE_FRACTION = 0.1

Batch = tuple[Any, Any, Any]


# --------------------------------------------------------------------------- smoothing


class _LossSmoother:
    """Exponential moving average with bias correction (fastai's smoothed loss).

    ``avg_t = smoothing * avg_{t-1} + (1 - smoothing) * loss_t``,
    ``smoothed_t = avg_t / (1 - smoothing ** (t + 1))``; ``smoothing=0`` returns
    the losses unchanged. A non-finite loss makes every later value non-finite.
    """

    def __init__(self, smoothing: float):
        self.smoothing = smoothing
        self.average = 0.0
        self.count = 0

    def update(self, loss: float) -> float:
        self.count += 1
        self.average = self.smoothing * self.average + (1.0 - self.smoothing) * loss
        return self.average / (1.0 - self.smoothing**self.count)


def _smooth(losses: np.ndarray, smoothing: float) -> np.ndarray:
    smoother = _LossSmoother(smoothing)
    return np.array([smoother.update(loss) for loss in losses], dtype=float)


# --------------------------------------------------------------------------- suggestions


def _descent(lrs: np.ndarray, smoothed: np.ndarray, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the finite part of the curve up to its minimum, without the first ``skip`` steps.

    At least the two points before and at the minimum are kept.
    """
    finite = np.isfinite(smoothed)
    if not finite[0]:
        raise ValueError(
            f"The loss was not finite (NaN or inf) from the first step (lr={lrs[0]:.3g}), so "
            "there is nothing to suggest. Check the data and the model for NaN, or run the "
            "test again with a smaller start_lr."
        )
    length = len(smoothed) if finite.all() else int(np.argmin(finite))
    lrs, smoothed = lrs[:length], smoothed[:length]
    lowest = int(np.argmin(smoothed))
    if lowest == 0:
        raise ValueError(
            f"The smoothed loss never fell below its value at the first step (lr={lrs[0]:.3g}), "
            "so there is no falling part to suggest a rate from. Run the test again with a "
            "smaller start_lr (the rate is already too high), a larger end_lr or more "
            "num_steps (the rate never got high enough), or less smoothing."
        )
    start = min(skip, lowest - 1)
    return lrs[start : lowest + 1], smoothed[start : lowest + 1]


def _steepest(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    slopes = np.gradient(smoothed, np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def _valley(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    # fastai's valley: the longest decreasing subsequence, read as a contiguous stretch of
    # that many steps ending where the subsequence ends; the suggestion is its middle.
    length = np.ones(len(smoothed), dtype=int)
    for i in range(1, len(smoothed)):
        higher = smoothed[:i] > smoothed[i]
        if higher.any():
            length[i] = length[:i][higher].max() + 1
    end = int(np.argmax(length))
    return float(lrs[end - length[end] // 2])


def _minimum(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    return float(lrs[-1] / 10.0)


_SUGGESTERS = {"steepest": _steepest, "valley": _valley, "minimum": _minimum}


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(map(repr, METHODS))}.")
    return method


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
        return self.rates[_check_method(method)]

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


# --------------------------------------------------------------------------- result


class RangeTestResult:
    """The losses recorded by a range test, with suggestions, a plot and a table.

    :func:`lr_range_test` builds it; build one yourself only to analyse losses
    recorded elsewhere. With several repeats, ``losses`` and
    ``smoothed_losses`` are the mean over the repeats, over the steps that every
    repeat ran (the mean of the smoothed curves equals the smoothed mean curve,
    because the moving average is linear).

    Attributes:
        lrs: the rate of each step, shape ``(n,)``.
        losses: the loss recorded at each step, shape ``(n,)``: the training
            loss of the step's batch (computed before that step's update), or
            the loss on the fixed validation batch after the update.
        smoothed_losses: ``losses`` smoothed by a bias-corrected exponential
            moving average with factor ``smoothing``.
        diverged: ``True`` when the test stopped early because the loss
            exploded or was not finite (in at least one repeat).
        repeat_losses: one array of recorded losses per repeat (each as long
            as that repeat ran).
        repeat_smoothed_losses: the same, smoothed.
        smoothing: the smoothing factor used.
        validation: ``True`` when the losses are validation losses.

    Args:
        lrs: the rate of every planned step; at least as long as the longest repeat.
        repeat_losses: one sequence of losses per repeat, step by step.
        smoothing: the factor of the moving average, in ``[0, 1)``.
        diverged: whether the test stopped early on divergence.
        validation: whether the losses were measured on validation data.

    Raises:
        ValueError: when there is no repeat, a repeat is empty or longer than ``lrs``.

    Example:

    >>> lrs = np.geomspace(1e-4, 1.0, 50)
    >>> losses = 1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2
    >>> result = RangeTestResult(lrs, [losses], smoothing=0.0)
    >>> result.suggest("minimum") == float(lrs[np.argmin(losses)]) / 10
    True
    """

    def __init__(
        self,
        lrs: Sequence[float] | np.ndarray,
        repeat_losses: Sequence[Sequence[float] | np.ndarray],
        *,
        smoothing: float = 0.98,
        diverged: bool = False,
        validation: bool = False,
    ):
        planned = np.asarray(lrs, dtype=float)
        runs = tuple(np.asarray(losses, dtype=float) for losses in repeat_losses)
        if not runs or min(len(run) for run in runs) == 0:
            raise ValueError("repeat_losses needs at least one non-empty sequence of losses.")
        if max(len(run) for run in runs) > len(planned):
            raise ValueError("Each repeat must have at most one loss per rate in lrs.")
        _check_smoothing(smoothing)
        steps = min(len(run) for run in runs)
        self.smoothing = float(smoothing)
        self.diverged = bool(diverged)
        self.validation = bool(validation)
        self.repeat_losses = runs
        self.repeat_smoothed_losses = tuple(_smooth(run, self.smoothing) for run in runs)
        self.lrs = planned[:steps]
        self.losses = np.mean([run[:steps] for run in runs], axis=0)
        self.smoothed_losses = np.mean([run[:steps] for run in self.repeat_smoothed_losses], axis=0)
        self._planned_lrs = planned
        self._skip = int(len(planned) * _SKIP_FRACTION)

    @property
    def repeats(self) -> int:
        """The number of repeats the test ran."""
        return len(self.repeat_losses)

    def suggest(self, method: str = "steepest") -> float:
        """Suggest a learning rate from the smoothed loss curve.

        All methods look only at the finite part of the smoothed curve up to
        its minimum (where the loss still falls), and skip the first 10 % of
        the planned steps (as fastai does): there the bias-corrected average
        rests on a few losses only, and its noise would pass for a steep drop.
        The moving average trails the raw losses by up to
        ``smoothing / (1 - smoothing)`` steps (49 for 0.98): in a 100-step test
        over 8 decades its minimum lies at a higher rate than the raw one, and
        every method inherits that bias towards high rates (on the least-squares
        theory problem with 100 steps over 4 decades, ``suggest_range``'s upper
        bound reached 1.15 times the divergence threshold). For short tests use
        less smoothing (0.9) or more steps; the plot shows the raw curve too.

        - ``"steepest"``: the rate where the smoothed loss falls fastest
          against the log of the rate (smallest ``d loss / d log lr``); the
          classic suggestion (Smith; fastai's ``steep``). Reasoning: there the
          rate is large enough to make quick progress yet well below
          instability. Fails on noisy curves (a spurious dip can be the
          steepest point) and on curves with two drops (it may pick the
          early, small one); it tends to be conservative.
        - ``"valley"``: fastai's ``valley``: the middle of the longest
          downhill stretch (the longest decreasing subsequence of the smoothed
          loss) before the minimum. Reasoning: the middle of a long descent is
          robust to the noise that misleads "steepest". Fails when the curve
          has a long flat start that drifts down slowly (the valley then
          starts too early and the rate is small) or when the test is too short
          to resolve the valley.
        - ``"minimum"``: the rate at the smallest smoothed loss, divided by
          10 (fastai's ``minimum``). Reasoning: the minimum sits at the edge of
          instability, so one decade below is a safe rate. Fails when the test
          ended before the loss rose (``end_lr`` too small: the "minimum" is just
          the last step), and the moving average's lag moves the minimum to
          slightly higher rates than the raw losses show.

        Args:
            method: one of ``"steepest"``, ``"valley"``, ``"minimum"``.

        Returns:
            The suggested rate, a float. With several repeats, the median
            of the repeats' suggestions (on a log scale), so that it always
            lies within the spread :meth:`repeat_suggestions` shows.

        Raises:
            ValueError: for an unknown method, or when the curve has no
                falling part (NaN from the first step, or a loss that never fell).

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> losses = 1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2
        >>> result = RangeTestResult(lrs, [losses], smoothing=0.0)
        >>> result.suggest("steepest") < result.suggest("minimum") * 10
        True
        """
        if self.repeats > 1:
            return float(np.exp(np.median(np.log(self.repeat_suggestions(method)))))
        suggester = _SUGGESTERS[_check_method(method)]
        return suggester(*_descent(self.lrs, self.smoothed_losses, self._skip))

    def repeat_suggestions(self, method: str = "steepest") -> np.ndarray:
        """Return the suggestion of ``method`` for each repeat separately.

        Their spread shows how far to trust :meth:`suggest`: rates that differ
        by a factor 3 across shuffles say the curve is noisy.

        Args:
            method: one of ``"steepest"``, ``"valley"``, ``"minimum"``.

        Returns:
            An array with one rate per repeat.

        Raises:
            ValueError: as :meth:`suggest`, for any repeat.

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> losses = 1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2
        >>> RangeTestResult(lrs, [losses, losses], smoothing=0.0).repeat_suggestions().shape
        (2,)
        """
        suggester = _SUGGESTERS[_check_method(method)]
        return np.array(
            [
                suggester(*_descent(self._planned_lrs[: len(smoothed)], smoothed, self._skip))
                for smoothed in self.repeat_smoothed_losses
            ]
        )

    def suggestions(self) -> Suggestions:
        """Return every method's suggestion and flag when they disagree.

        A single suggestion misleads when the curve is ambiguous; when the
        methods land more than :data:`DISAGREEMENT_FACTOR` (one decade) apart,
        ``disagree`` is ``True`` and the repr says to look at the plot.

        Returns:
            A :class:`Suggestions`; with several repeats it also holds each
            method's lowest and highest suggestion over the repeats.

        Raises:
            ValueError: when the curve has no falling part (see :meth:`suggest`).

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> losses = 1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2
        >>> RangeTestResult(lrs, [losses], smoothing=0.0).suggestions().disagree
        False
        """
        rates = {method: self.suggest(method) for method in METHODS}
        ratio = max(rates.values()) / min(rates.values())
        spreads = {}
        if self.repeats > 1:
            for method in METHODS:
                per_repeat = self.repeat_suggestions(method)
                spreads[method] = (float(per_repeat.min()), float(per_repeat.max()))
        return Suggestions(
            rates=rates, ratio=ratio, disagree=ratio > DISAGREEMENT_FACTOR, spreads=spreads
        )

    def suggest_range(self) -> tuple[float, float]:
        """Return ``(base_lr, max_lr)`` bounds for ``CyclicLR`` and ``OneCycle``.

        Smith's rule: the lower bound is where the loss starts to fall, the
        upper bound where it stops falling. Here "starts" and "stops" are where
        the smoothed loss has covered 10 % and 90 % of its total drop from the
        start of the curve (after the skipped steps, see :meth:`suggest`) to
        its minimum. Fails like ``"minimum"`` when the test ended
        before the loss rose, and on curves with two drops. The smoothed curve
        lags the raw loss by up to ``1 / (1 - smoothing)`` steps, which pushes
        ``max_lr`` towards rates where the raw loss already rises: on the
        book's digits network (chapter 6) the bound came out about twice too
        high for ``CyclicLR`` to return to safely. Treat ``max_lr`` as an upper
        limit, and halve it if the loss jumps at every peak of the cycle.

        Returns:
            ``(base_lr, max_lr)`` with ``base_lr < max_lr``.

        Raises:
            ValueError: when the curve has no falling part (see :meth:`suggest`).

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> losses = 1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2
        >>> base_lr, max_lr = RangeTestResult(lrs, [losses], smoothing=0.0).suggest_range()
        >>> base_lr < max_lr
        True
        """
        lrs, smoothed = _descent(self.lrs, self.smoothed_losses, self._skip)
        drop = smoothed[0] - smoothed[-1]
        started = np.flatnonzero(smoothed <= smoothed[0] - _RANGE_FRACTION * drop)[0]
        stopped = np.flatnonzero(smoothed <= smoothed[-1] + _RANGE_FRACTION * drop)[0]
        return float(lrs[started]), float(lrs[max(stopped, started + 1)])

    def to_frame(self) -> pd.DataFrame:
        """Return the recorded curves as a tidy pandas DataFrame.

        Returns:
            One row per repeat and step, with columns ``repeat``, ``step``,
            ``lr``, ``loss`` and ``smoothed_loss``.

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> RangeTestResult(lrs, [1.0 / (1.0 + lrs)]).to_frame().shape
        (50, 5)
        """
        import pandas as pd

        frames = [
            pd.DataFrame(
                {
                    "repeat": repeat,
                    "step": np.arange(len(losses)),
                    "lr": self._planned_lrs[: len(losses)],
                    "loss": losses,
                    "smoothed_loss": smoothed,
                }
            )
            for repeat, (losses, smoothed) in enumerate(
                zip(self.repeat_losses, self.repeat_smoothed_losses, strict=True)
            )
        ]
        return pd.concat(frames, ignore_index=True)

    def plot(self, ax: Axes | None = None, suggest: bool | str = True) -> Axes:
        """Plot the loss against the rate (log axis), raw and smoothed.

        Draws in the book's seaborn theme (:func:`lrtools.plotting.set_theme`):
        the raw losses as a thin line, the smoothed losses as a thick one, the
        range of the smoothed curves over the repeats as a band (with several
        repeats), and the suggested rate as a dashed vertical line. The y axis
        is cut a little above the highest smoothed loss, so that the final
        explosion does not flatten the interesting part.

        Args:
            ax: the Matplotlib ``Axes`` to draw on; a new figure when ``None``.
            suggest: ``True`` marks the ``"steepest"`` suggestion, a method
                name marks that method's, ``False`` marks none. Nothing is
                marked when the curve has no falling part.

        Returns:
            The ``Axes``.

        Raises:
            ValueError: for an unknown method name.

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> ax = RangeTestResult(lrs, [1.0 / (1.0 + 1e3 * lrs)]).plot(suggest="valley")
        """
        import matplotlib.pyplot as plt

        from lrtools.plotting import axis_label, set_theme

        method = "steepest" if suggest is True else suggest
        if method:
            _check_method(method)
        set_theme()
        if ax is None:
            _, ax = plt.subplots()
        loss_name = "validation loss" if self.validation else axis_label("loss")
        if self.repeats > 1:
            curves = np.array([run[: len(self.lrs)] for run in self.repeat_smoothed_losses])
            ax.fill_between(
                self.lrs,
                curves.min(axis=0),
                curves.max(axis=0),
                alpha=0.2,
                label=f"smoothed, range over {self.repeats} repeats",
            )
        ax.plot(self.lrs, self.losses, linewidth=1.0, alpha=0.5, label=loss_name)
        ax.plot(self.lrs, self.smoothed_losses, linewidth=2.0, label=f"smoothed {loss_name}")
        finite = self.smoothed_losses[np.isfinite(self.smoothed_losses)]
        if finite.size:
            low = min(finite.min(), self.losses[np.isfinite(self.losses)].min())
            high = finite.max()
            margin = 0.1 * (high - low) or 0.1 * abs(high) or 0.1
            ax.set_ylim(low - margin, high + margin)
        if method:
            with contextlib.suppress(ValueError):
                rate = self.suggest(method)
                ax.axvline(rate, linestyle="--", color="black", label=f"{method}: {rate:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel(axis_label("learning_rate") + " (log scale)")
        ax.set_ylabel(loss_name)
        ax.set_title("Learning-rate range test")
        ax.legend()
        return ax

    def __repr__(self) -> str:
        header = (
            f"RangeTestResult(steps={len(self.lrs)}, repeats={self.repeats}, "
            f"lr {self.lrs[0]:.3g} to {self.lrs[-1]:.3g}, diverged={self.diverged}"
        )
        try:
            rates = self.suggestions().rates
        except ValueError as error:
            return f"{header},\n  no suggestion: {error})"
        listed = ", ".join(f"{method}={rate:.3g}" for method, rate in rates.items())
        return f"{header},\n  suggestions: {listed})"


# --------------------------------------------------------------------------- checks


def _check_smoothing(smoothing: Any) -> None:
    if not isinstance(smoothing, numbers.Real) or not 0.0 <= smoothing < 1.0:
        raise ValueError(
            f"smoothing must be a number in [0, 1) (0 turns smoothing off), got {smoothing!r}."
        )


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_arguments(
    model: Any,
    start_lr: Any,
    end_lr: Any,
    mode: str,
    diverge_factor: Any,
    verbose: Any,
) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "The model is not compiled: call model.compile(optimizer=..., loss=...) before "
            "the range test, with the optimizer you will train with."
        )
    for name, rate in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {rate!r}.")
    if start_lr >= end_lr:
        raise ValueError(
            f"start_lr ({start_lr!r}) must be smaller than end_lr ({end_lr!r}): the test "
            "sweeps the rate upwards. Typical values are start_lr=1e-7, end_lr=10."
        )
    if mode not in _MODES:
        raise ValueError(f"Unknown mode {mode!r}: use 'exponential' (Howard) or 'linear' (Smith).")
    if not isinstance(diverge_factor, numbers.Real) or not diverge_factor > 1.0:
        raise ValueError(
            f"diverge_factor must be a number > 1 (math.inf never stops early), "
            f"got {diverge_factor!r}."
        )
    if verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}.")


# --------------------------------------------------------------------------- data


def _is_arrays(data: Any) -> bool:
    leaves = [leaf for leaf in keras.tree.flatten(data) if leaf is not None]
    return bool(leaves) and all(len(getattr(leaf, "shape", ())) >= 1 for leaf in leaves)


def _unpack(batch: Any) -> Batch:
    return keras.utils.unpack_x_y_sample_weight(batch)


def _rows(structure: Any, index: Any) -> Any:
    """Index the first axis of every array in ``structure`` (``None`` stays ``None``)."""
    return keras.tree.map_structure(lambda part: None if part is None else part[index], structure)


def _cycle(batches: list[Batch], rng: np.random.Generator) -> Iterator[Batch]:
    while True:
        for index in rng.permutation(len(batches)):
            yield batches[index]


def _endless(make_pass: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """Yield the items of ``make_pass()`` again and again; refuse an empty pass."""
    while True:
        empty = True
        for item in make_pass():
            empty = False
            yield item
        if empty:
            raise ValueError("x gave no batches: the range test needs at least one batch.")


def _replayed(iterator: Iterator[Any], keep: int, rng: np.random.Generator) -> Iterator[Any]:
    """Yield a one-shot iterator's items, then its first ``keep`` items forever, reshuffled."""
    seen = []
    for item in iterator:
        if len(seen) < keep:
            seen.append(item)
        yield item
    if not seen:
        raise ValueError("x gave no batches: the range test needs at least one batch.")
    yield from _cycle(seen, rng)


class _Batches:
    """Training batches from arrays, a dataset, a ``PyDataset`` or a generator.

    :meth:`stream` gives an endless stream of ``(x, y, sample_weight)``
    batches: arrays are reshuffled each pass (incomplete last batches are
    dropped, so every step has the same shape); a dataset or ``PyDataset`` is
    iterated again (a dataset that shuffles reshuffles); a generator is read
    once, and its first ``keep`` batches are replayed in a new order once it
    runs out. ``max_samples`` keeps a random sample of that many rows of
    arrays, or the first that many samples of any other source, and cycles
    over them.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        max_samples: int | None,
        keep: int,
        rng: np.random.Generator,
    ):
        self.rng = rng
        self.batch_size = batch_size
        self.arrays: tuple[Any, Any] | None = None
        self.batches: list[Batch] | None = None
        if _is_arrays(x):
            self._init_arrays(x, y, max_samples)
            return
        if y is not None:
            raise ValueError(
                "y must be None when x is a dataset, PyDataset or generator: it must yield "
                "(inputs, targets) batches, as for model.fit."
            )
        if isinstance(x, keras.utils.PyDataset):
            source = _endless(lambda: (x[index] for index in range(len(x))))
        elif isinstance(x, Iterator):
            source = _replayed(x, keep, rng)
        elif isinstance(x, Iterable):
            source = _endless(lambda: iter(x))
        else:
            raise TypeError(
                f"x must be arrays, a tf.data.Dataset, a keras.utils.PyDataset or a generator "
                f"of batches, got {type(x).__name__}."
            )
        self.source = (_unpack(batch) for batch in source)
        if max_samples is not None:
            self.batches = self._first_samples(max_samples)

    def _init_arrays(self, x: Any, y: Any, max_samples: int | None) -> None:
        x, y = keras.tree.map_structure(
            lambda part: None if part is None else np.asarray(part), (x, y)
        )
        lengths = {len(leaf) for leaf in keras.tree.flatten((x, y)) if leaf is not None}
        if len(lengths) > 1:
            raise ValueError(f"x and y must have the same number of rows, got {sorted(lengths)}.")
        rows = lengths.pop()
        if rows == 0:
            raise ValueError("x is empty: the range test needs at least one sample.")
        if max_samples is not None and max_samples < rows:
            chosen = np.sort(self.rng.choice(rows, size=max_samples, replace=False))
            x, y = _rows((x, y), chosen)
            rows = max_samples
        self.arrays = (x, y)
        self.rows = rows

    def _first_samples(self, max_samples: int) -> list[Batch]:
        batches, count = [], 0
        for batch in self.source:
            take = min(len(keras.tree.flatten(batch[0])[0]), max_samples - count)
            batches.append(_rows(batch, slice(0, take)))
            count += take
            if count >= max_samples:
                return batches

    def stream(self) -> Iterator[Batch]:
        """Return an endless stream of batches (newly shuffled where the source allows)."""
        if self.arrays is not None:
            return self._array_stream()
        if self.batches is not None:
            return _cycle(self.batches, self.rng)
        return self.source

    def _array_stream(self) -> Iterator[Batch]:
        size = min(self.batch_size, self.rows)
        while True:
            order = self.rng.permutation(self.rows)
            for start in range(0, self.rows - size + 1, size):
                x, y = _rows(self.arrays, order[start : start + size])
                yield x, y, None


def _validation_batch(validation_data: Any) -> Batch:
    """The fixed validation batch: all of a tuple of arrays, else the first batch."""
    if isinstance(validation_data, tuple) and _is_arrays(validation_data):
        x, y, sample_weight = _unpack(validation_data)
        if len(keras.tree.flatten(x)[0]) == 0:
            raise ValueError("validation_data is empty: it needs at least one sample.")
        return x, y, sample_weight
    if isinstance(validation_data, keras.utils.PyDataset):
        return _unpack(validation_data[0])
    if hasattr(validation_data, "__iter__"):
        for batch in validation_data:
            return _unpack(batch)
        raise ValueError("validation_data gave no batch: it needs at least one.")
    raise TypeError(
        "validation_data must be a tuple (x_val, y_val) of arrays, a tf.data.Dataset, a "
        f"PyDataset or a generator of batches, got {type(validation_data).__name__}."
    )


# --------------------------------------------------------------------------- training state


def _scope(model: keras.Model) -> Any:
    """The model's distribution-strategy scope (TensorFlow), else a no-op context."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


class _Snapshot:
    """The values of every variable of a model, its optimizer and its metrics, in memory."""

    def __init__(self, model: keras.Model):
        variables = [*model.variables, *model.optimizer.variables, *model.metrics_variables]
        unique = {id(variable): variable for variable in variables}
        self.variables = list(unique.values())
        self.values = [np.array(variable.numpy()) for variable in self.variables]

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.values, strict=True):
            variable.assign(value)


class _RateDriver:
    """Sets the rate of every rate owner of an optimizer, step by step, and puts it back.

    An owner whose rate is a variable has that variable assigned; an owner
    whose rate is a schedule or a callable gets a temporary variable in its
    place (so the train function is traced again), and the original object back.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.owners = rate_owners(model.optimizer)
        self.originals = [owner._learning_rate for owner in self.owners]
        current = [float(keras.ops.convert_to_numpy(o.learning_rate)) for o in self.owners]
        largest = max(current)
        self.ratios = [rate / largest if largest > 0 else 1.0 for rate in current]
        self.train_function = model.train_function
        self.variables = []
        for owner, original in zip(self.owners, self.originals, strict=True):
            if isinstance(original, keras.Variable):
                self.variables.append(original)
                continue
            with _scope(model):
                variable = keras.Variable(
                    0.0,
                    dtype=keras.config.floatx(),
                    trainable=False,
                    aggregation="only_first_replica",
                    name="range_test_learning_rate",
                )
            owner._learning_rate = variable  # the optimizer tracks it, so JAX sees it too
            self.variables.append(variable)
            model.train_function = None  # trace again, reading the new variable

    def set(self, lr: float) -> None:
        for variable, ratio in zip(self.variables, self.ratios, strict=True):
            variable.assign(lr * ratio)

    def restore(self) -> None:
        owned = zip(self.owners, self.originals, self.variables, strict=True)
        for owner, original, variable in owned:
            if variable is not original:
                owner._learning_rate = original
                owner._untrack_variable(variable)
        self.model.train_function = self.train_function


# --------------------------------------------------------------------------- the test


def _rate_grid(start_lr: float, end_lr: float, num_steps: int, mode: str) -> np.ndarray:
    if mode == "exponential":
        return np.geomspace(start_lr, end_lr, num_steps)
    return np.linspace(start_lr, end_lr, num_steps)


def _run(
    model: keras.Model,
    driver: _RateDriver,
    rates: np.ndarray,
    batches: Iterator[Batch],
    validation: Batch | None,
    smoothing: float,
    diverge_factor: float,
    progbar: keras.utils.Progbar,
    done: int,
) -> tuple[list[float], bool]:
    """Run one sweep; return the recorded losses and whether it diverged."""
    smoother = _LossSmoother(smoothing)
    losses: list[float] = []
    best = math.inf
    for step, (lr, (x, y, sample_weight)) in enumerate(zip(rates, batches, strict=False)):
        driver.set(float(lr))
        logs = model.train_on_batch(x, y, sample_weight, return_dict=True)
        if validation is not None:
            logs = model.test_on_batch(*validation, return_dict=True)
        loss = float(logs["loss"])
        losses.append(loss)
        smoothed = smoother.update(loss)
        progbar.update(done + step + 1, [("lr", lr), ("loss", loss)])
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > diverge_factor * best:
            return losses, True
    return losses, False


def lr_range_test(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exponential",
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    validation_data: Any = None,
    max_samples: int | None = None,
    repeats: int = 1,
    restore: bool = True,
    verbose: str | int = "auto",
) -> RangeTestResult:
    """Run the learning-rate range test on a compiled model.

    Trains ``model`` for up to ``num_steps`` steps while the rate grows from
    ``start_lr`` to ``end_lr``:

    - ``mode="exponential"`` (Howard, fastai):
      ``lr_t = start_lr * (end_lr / start_lr) ** (t / (num_steps - 1))``
    - ``mode="linear"`` (Smith 2017):
      ``lr_t = start_lr + (end_lr - start_lr) * t / (num_steps - 1)``

    records the loss of every step, smooths it (bias-corrected exponential
    moving average with factor ``smoothing``), and stops early once the
    smoothed loss exceeds ``diverge_factor`` times its lowest value so far, or
    a loss is not finite. The divergence rule assumes a non-negative loss.

    The model is trained with its own compiled optimizer, loss and train step
    (``model.train_on_batch``), so every optimizer setting (momentum, clipping,
    weight decay, loss scaling) is part of the test. See the module docstring
    for how the swept rate is shared among the groups of a ``MultiOptimizer``.

    Args:
        model: a compiled ``keras.Model``.
        x: input arrays (or a dict/list of them), a ``tf.data.Dataset``, a
            ``keras.utils.PyDataset`` or a generator of ``(x, y)`` batches, as
            ``model.fit`` takes them. The data cycles when it has fewer
            batches than steps.
        y: target arrays when ``x`` holds arrays; ``None`` otherwise.
        batch_size: rows per step when ``x`` holds arrays.
        start_lr: the first rate, > 0.
        end_lr: the last rate, > ``start_lr``.
        num_steps: the most steps to run, >= 2.
        mode: ``"exponential"`` or ``"linear"`` growth of the rate.
        smoothing: moving-average factor in ``[0, 1)``; 0 turns smoothing off.
        diverge_factor: stop once the smoothed loss exceeds this factor times
            its best so far; > 1 (``math.inf`` never stops early on a finite loss).
        validation_data: ``(x_val, y_val)`` arrays (used whole), or a dataset
            or generator (its first batch): the loss recorded is then the loss
            on this fixed batch after each step (slower, less noisy). Keep it
            to a few hundred samples.
        max_samples: test on a random sample of this many rows of the arrays
            (or the first this many samples of another source), as the
            articles advise for a first, fast look.
        repeats: run the test this many times from the same start with
            different shuffles, to see how reliable the suggestion is.
        restore: put the model's weights, the optimizer's variables and the
            metrics' state back as they were before the test (bit for bit).
            With ``False`` the model keeps the state the (last) test left. The
            learning rate itself (value, variable or schedule) is always put back.
        verbose: ``"auto"`` or 1 shows a progress bar, 2 one line at the end,
            0 nothing.

    Returns:
        A :class:`RangeTestResult`.

    Raises:
        TypeError: if ``model`` is not a Keras model or ``x`` is not a data
            source ``model.fit`` takes.
        ValueError: for an uncompiled model, ``start_lr >= end_lr``,
            non-positive rates, ``num_steps < 2``, an unknown mode, bad
            ``smoothing``, ``diverge_factor``, ``batch_size``,
            ``max_samples``, ``repeats`` or ``verbose``, or empty data.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> data = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> result = lr_range_test(model, data, data[:, :1], num_steps=30, verbose=0)
    >>> bool(result.lrs[0] == 1e-7)
    True
    """
    _check_arguments(model, start_lr, end_lr, mode, diverge_factor, verbose)
    num_steps = _check_count("num_steps", num_steps, 2)
    batch_size = _check_count("batch_size", batch_size, 1)
    repeats = _check_count("repeats", repeats, 1)
    if max_samples is not None:
        max_samples = _check_count("max_samples", max_samples, 1)
    _check_smoothing(smoothing)

    # Seeded from Python's generator, so keras.utils.set_random_seed makes the test repeatable.
    rng = np.random.default_rng(random.getrandbits(64))
    source = _Batches(x, y, batch_size, max_samples, keep=num_steps, rng=rng)
    validation = None if validation_data is None else _validation_batch(validation_data)
    rates = _rate_grid(start_lr, end_lr, num_steps, mode)
    progbar = keras.utils.Progbar(
        num_steps * repeats,
        verbose=1 if verbose == "auto" else verbose,
        stateful_metrics=["lr", "loss"],
    )

    streams = [source.stream() for _ in range(repeats)]
    first_batch = next(streams[0])
    with _scope(model):
        # Build the model, metrics and optimizer now (model.fit would build them on its
        # first step), so that the snapshot holds every variable.
        model._symbolic_build(data_batch=first_batch)
    streams[0] = itertools.chain([first_batch], streams[0])
    snapshot = _Snapshot(model) if restore or repeats > 1 else None
    driver = _RateDriver(model)
    repeat_losses, diverged = [], False
    try:
        for repeat, stream in enumerate(streams):
            if repeat > 0:
                snapshot.restore()
            losses, stopped = _run(
                model,
                driver,
                rates,
                stream,
                validation,
                smoothing,
                diverge_factor,
                progbar,
                done=sum(map(len, repeat_losses)),
            )
            repeat_losses.append(losses)
            diverged = diverged or stopped
    finally:
        driver.restore()
        if restore:
            snapshot.restore()
    steps_run = sum(map(len, repeat_losses))
    if steps_run < progbar.target:  # the bar finalises itself when it reaches its target
        progbar.update(steps_run, finalize=True)
    result = RangeTestResult(
        rates,
        repeat_losses,
        smoothing=smoothing,
        diverged=diverged,
        validation=validation is not None,
    )
    if not np.isfinite(result.losses[0]):
        warnings.warn(
            "The range test's loss was not finite from the first step: there is nothing to "
            "suggest. Check the data and the model for NaN, or lower start_lr.",
            stacklevel=2,
        )
    return result
