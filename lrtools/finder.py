"""The learning-rate range test (Smith 2017; the "LR finder" of fastai).

The test trains a compiled model for a few steps while the learning rate grows
from a tiny to a huge value, records the loss of every step, and stops once the
loss explodes. Where the loss falls fastest, and where it stops falling, tell
which rates are worth training with::

    result = lrtools.lr_range_test(model, x_train, y_train, batch_size=64)
    result.suggestions()          # every method's rate, and whether they agree
    result.plot()                 # the loss against the rate, suggestions marked
    lr = result.suggest("valley")

The suggestion methods and the smoother live in :mod:`lrtools.suggestions`, the
figure in :func:`lrtools.plotting.plot_range_test`; this module runs the test and
holds its result.

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
warm-up schedule at step 0), all groups get the swept rate (with a warning when
there are several).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from lrtools._checks import check_choice, check_count, check_flag, check_fraction, check_rate
from lrtools._extras import require
from lrtools._rates import (
    current_rate,
    group_ratios,
    rate_object,
    rate_owners,
    replace_rate,
    restore_rate,
)
from lrtools.suggestions import (  # noqa: F401 - DISAGREEMENT_FACTOR and Suggestions re-exported
    DEFAULT_METHOD,
    DISAGREEMENT_FACTOR,
    METHODS,
    SKIP_FRACTION,
    LossSmoother,
    Suggestions,
    check_method,
    smooth,
    suggest_range,
)

if TYPE_CHECKING:  # pragma: no cover - imported for type hints only
    import pandas as pd
    from matplotlib.axes import Axes

# METHODS, DISAGREEMENT_FACTOR and Suggestions are documented in lrtools.suggestions
# and stay importable from here.
__all__ = ["RangeTestResult", "lr_range_test"]

_MODES = ("exponential", "linear")

Batch = tuple[Any, Any, Any]


# --------------------------------------------------------------------------- result


class RangeTestResult:
    """The losses recorded by a range test, with suggestions, a plot and a table.

    :func:`lr_range_test` builds it; build one yourself only to analyse losses
    recorded elsewhere. With several repeats, ``losses`` and
    ``smoothed_losses`` are the mean over the repeats, over the steps that every
    repeat ran (the mean of the smoothed curves equals the smoothed mean curve,
    because the moving average is linear).

    Attributes:
        lrs: the rate of each recorded loss, shape ``(n,)``.
        losses: the loss recorded at each rate, shape ``(n,)``: the training
            loss of the step's batch (computed before that step's update), or
            the validation loss after the update.
        smoothed_losses: ``losses`` smoothed by a bias-corrected exponential
            moving average with factor ``smoothing``
            (:func:`lrtools.suggestions.smooth`).
        diverged: ``True`` when the test stopped early because the loss
            exploded or was not finite (in at least one repeat).
        repeat_losses: one array of recorded losses per repeat (each as long
            as that repeat ran).
        repeat_smoothed_losses: the same, smoothed.
        smoothing: the smoothing factor used.
        validation: ``True`` when the losses are validation losses.

    Args:
        lrs: the rate of every planned measurement; at least as long as the longest repeat.
        repeat_losses: one sequence of losses per repeat, measurement by measurement.
        smoothing: the factor of the moving average, in ``[0, 1)``.
        diverged: whether the test stopped early on divergence.
        validation: whether the losses were measured on validation data.

    Raises:
        ValueError: when there is no repeat, a repeat is empty or longer than ``lrs``,
            or ``smoothing`` lies outside ``[0, 1)``.

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
        self.smoothing = _check_smoothing(smoothing)
        steps = min(len(run) for run in runs)
        self.diverged = bool(diverged)
        self.validation = bool(validation)
        self.repeat_losses = runs
        self.repeat_smoothed_losses = tuple(smooth(run, self.smoothing) for run in runs)
        self.lrs = planned[:steps]
        self.losses = np.mean([run[:steps] for run in runs], axis=0)
        self.smoothed_losses = np.mean([run[:steps] for run in self.repeat_smoothed_losses], axis=0)
        self._planned_lrs = planned
        self._skip = int(len(planned) * SKIP_FRACTION)

    @property
    def repeats(self) -> int:
        """The number of repeats the test ran."""
        return len(self.repeat_losses)

    def suggest(self, method: str = DEFAULT_METHOD) -> float:
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
          10 (fastai's ``minimum``), but never below the first swept rate.
          Reasoning: the minimum sits at the edge of instability, so one decade
          below is a safe rate. Fails when the test ended before the loss rose
          (``end_lr`` too small: the "minimum" is just the last step), and the
          moving average's lag moves the minimum to slightly higher rates than
          the raw losses show.
        - ``"consensus"``: the geometric mean of the three above, so that no
          single rule decides.

        Every suggestion lies inside the swept range. A flat curve (the smoothed
        loss falls by less than :data:`lrtools.suggestions.MIN_RELATIVE_DROP`,
        1 %, of its first value: the network learned nothing) gets no suggestion.

        Args:
            method: one of :data:`lrtools.suggestions.METHODS`; by default
                :data:`lrtools.suggestions.DEFAULT_METHOD`, ``"valley"``: over 4
                networks x 3 seeds it ended 1.4 points below a grid's best rate on
                average, against 4.9 for ``"minimum"`` and 27.7 for ``"steepest"``.

        Returns:
            The suggested rate, a float. With several repeats, the median
            of the repeats' suggestions (on a log scale), so that it always
            lies within the spread :meth:`repeat_suggestions` shows.

        Raises:
            ValueError: for an unknown method, or when the curve has no
                falling part (NaN from the first step, a loss that never fell,
                or a flat curve).

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> losses = 1.0 / (1.0 + 1e3 * lrs) + 50.0 * lrs**2
        >>> result = RangeTestResult(lrs, [losses], smoothing=0.0)
        >>> result.suggest("steepest") < result.suggest("minimum") * 10
        True
        """
        suggester = METHODS[check_method(method)]
        if self.repeats > 1:
            return float(np.exp(np.median(np.log(self.repeat_suggestions(method)))))
        return suggester(self.lrs, self.smoothed_losses, skip=self._skip)

    def repeat_suggestions(self, method: str = DEFAULT_METHOD) -> np.ndarray:
        """Return the suggestion of ``method`` for each repeat separately.

        Their spread shows how far to trust :meth:`suggest`: rates that differ
        by a factor 3 across shuffles say the curve is noisy.

        Args:
            method: one of :data:`lrtools.suggestions.METHODS`.

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
        suggester = METHODS[check_method(method)]
        return np.array(
            [
                suggester(self._planned_lrs[: len(smoothed)], smoothed, skip=self._skip)
                for smoothed in self.repeat_smoothed_losses
            ]
        )

    def suggestions(self) -> Suggestions:
        """Return every method's suggestion and flag when they disagree.

        A single suggestion misleads when the curve is ambiguous; when the
        methods land more than :data:`lrtools.suggestions.DISAGREEMENT_FACTOR`
        (one decade) apart, ``disagree`` is ``True`` and the repr says to look
        at the plot.

        Returns:
            A :class:`lrtools.suggestions.Suggestions`; with several repeats it
            also holds each method's lowest and highest suggestion over the repeats.

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
        its minimum (:func:`lrtools.suggestions.suggest_range`). Fails like
        ``"minimum"`` when the test ended before the loss rose, and on curves
        with two drops. The smoothed curve lags the raw loss by up to
        ``1 / (1 - smoothing)`` steps, which pushes ``max_lr`` towards rates
        where the raw loss already rises: on the book's digits network
        (chapter 6) the bound came out about twice too high for ``CyclicLR``
        to return to safely. Treat ``max_lr`` as an upper limit, and halve it
        if the loss jumps at every peak of the cycle.

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
        return suggest_range(self.lrs, self.smoothed_losses, skip=self._skip)

    def to_frame(self) -> pd.DataFrame:
        """Return the recorded curves as a tidy pandas DataFrame.

        Returns:
            One row per repeat and step, with columns ``repeat``, ``step``,
            ``lr``, ``loss`` and ``smoothed_loss``.

        Raises:
            ImportError: without pandas; the message names the ``[plot]`` extra.

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> RangeTestResult(lrs, [1.0 / (1.0 + lrs)]).to_frame().shape
        (50, 5)
        """
        pd = require("pandas", feature="RangeTestResult.to_frame()")
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
        """Plot the loss against the rate: :func:`lrtools.plotting.plot_range_test`.

        Args:
            ax: the Matplotlib ``Axes`` to draw on; a new figure when ``None``.
            suggest: ``True`` marks every method's rate and highlights
                :data:`lrtools.suggestions.DEFAULT_METHOD`'s; a method name
                highlights that one instead; ``False`` marks none.

        Returns:
            The ``Axes``.

        Raises:
            ValueError: for an unknown method name.
            ImportError: without matplotlib; the message names the ``[plot]`` extra.

        Example:

        >>> lrs = np.geomspace(1e-4, 1.0, 50)
        >>> ax = RangeTestResult(lrs, [1.0 / (1.0 + 1e3 * lrs)]).plot(suggest="valley")
        """
        require("matplotlib.pyplot", feature="RangeTestResult.plot()")
        from lrtools import plotting

        return plotting.plot_range_test(self, ax=ax, suggest=suggest)

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


def _check_smoothing(smoothing: Any) -> float:
    return check_fraction("smoothing", smoothing, low_open=False, high_open=True)


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "The model is not compiled: call model.compile(optimizer=..., loss=...) before "
            "the range test, with the optimizer you will train with."
        )


def _multi_worker(model: keras.Model) -> Any:
    """The model's ``MultiWorkerMirroredStrategy``, or None."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy if type(strategy).__name__ in _MULTI_WORKER_STRATEGIES else None


# tf.distribute.MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy.
_MULTI_WORKER_STRATEGIES = ("CollectiveAllReduceStrategy", "MultiWorkerMirroredStrategy")


class _MultiWorkerStep:
    """One training step under ``MultiWorkerMirroredStrategy``, where Keras 3 cannot
    ``train_on_batch`` (keras-team/keras#20585): the step ``train_on_batch`` would run.

    Every worker passes the same batch, so every replica computes the gradient of the
    whole batch. Keras scales each replica's loss by ``1 / replicas`` and the optimizer
    sums the replicas' gradients, so the update is the one a single process makes, and
    the summed scaled losses are the batch's loss. Traced on first use, after the rate
    driver has put its variables in place.
    """

    def __init__(self, model: keras.Model, strategy: Any):
        self.model, self.strategy, self.function = model, strategy, None

    def _trace(self) -> Any:
        import tensorflow as tf

        model, strategy = self.model, self.strategy

        def replica_step(x: Any, y: Any, sample_weight: Any) -> Any:
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                scaled = model.optimizer.scale_loss(loss)
            weights = model.trainable_weights
            model.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
            return loss

        def step(x: Any, y: Any, sample_weight: Any) -> Any:
            losses = strategy.run(replica_step, args=(x, y, sample_weight))
            return strategy.reduce("SUM", losses, axis=None)

        return tf.function(step)

    def __call__(self, x: Any, y: Any, sample_weight: Any) -> float:
        if self.function is None:
            self.function = self._trace()
        return float(self.function(x, y, sample_weight))


def _check_sweep(start_lr: Any, end_lr: Any, mode: Any) -> tuple[float, float, str]:
    start_lr, end_lr = check_rate("start_lr", start_lr), check_rate("end_lr", end_lr)
    if start_lr >= end_lr:
        raise ValueError(
            f"start_lr ({start_lr!r}) must be smaller than end_lr ({end_lr!r}): the test "
            "sweeps the rate upwards. Typical values are start_lr=1e-7, end_lr=10."
        )
    return start_lr, end_lr, check_choice("mode", mode, _MODES)


def _check_diverge_factor(diverge_factor: Any) -> float:
    if isinstance(diverge_factor, bool) or not isinstance(diverge_factor, numbers.Real):
        raise TypeError(f"`diverge_factor` must be a number > 1, got {diverge_factor!r}.")
    if not diverge_factor > 1.0:  # math.inf is allowed: never stop early on a finite loss
        raise ValueError(
            f"`diverge_factor` must be > 1 (math.inf never stops early), got {diverge_factor!r}."
        )
    return float(diverge_factor)


def _check_verbose(verbose: Any) -> int:
    if isinstance(verbose, bool) or verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2, got {verbose!r}.")
    return 1 if verbose == "auto" else int(verbose)


def _accumulation(optimizer: keras.optimizers.Optimizer) -> int:
    """The optimizer's gradient-accumulation steps: train steps per applied update (1 without)."""
    steps = getattr(optimizer, "gradient_accumulation_steps", None)
    inner = getattr(optimizer, "inner_optimizer", None)
    if not steps and inner is not None:
        steps = getattr(inner, "gradient_accumulation_steps", None)
    return int(steps) if steps else 1


# --------------------------------------------------------------------------- data


def _is_arrays(data: Any) -> bool:
    leaves = [leaf for leaf in keras.tree.flatten(data) if leaf is not None]
    return bool(leaves) and all(len(getattr(leaf, "shape", ())) >= 1 for leaf in leaves)


def _check_not_plain(name: str, data: Any) -> None:
    """Refuse a file name, and plain Python numbers where arrays belong, saying what to do."""
    if isinstance(data, str | bytes | os.PathLike):
        raise TypeError(
            f"`{name}` is a file name ({os.fspath(data)!r}): the range test needs the data "
            "itself. Load it first (np.load, pandas.read_csv(...).to_numpy(), "
            "tf.data.Dataset.load, ...) and pass the arrays or the dataset."
        )
    if isinstance(data, list | tuple | dict) and data:
        leaves = keras.tree.flatten(data)
        if any(isinstance(leaf, numbers.Number) for leaf in leaves):
            example = (
                f"{name}=np.asarray({name}, dtype='float32')"
                if name in ("x", "y")
                else f"{name}=(np.asarray(x_val), np.asarray(y_val))"
            )
            raise TypeError(
                f"`{name}` holds plain Python numbers (a list?): convert it to arrays first, "
                f"for example {example}."
            )


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
        _check_not_plain("x", x)
        _check_not_plain("y", y)
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
        x_rows = {len(leaf) for leaf in keras.tree.flatten(x) if leaf is not None}
        y_rows = {len(leaf) for leaf in keras.tree.flatten(y) if leaf is not None}
        if len(x_rows | y_rows) > 1:
            raise ValueError(
                f"x has {_listed(x_rows)} rows but y has {_listed(y_rows)}: x and y must have "
                "the same number of rows (one target per sample). Check that they come from "
                "the same split, and that y is not transposed."
            )
        rows = (x_rows | y_rows).pop()
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


def _listed(counts: set[int]) -> str:
    return " and ".join(map(str, sorted(counts))) or "no"


def _validation_set(validation_data: Any, batch_size: int) -> dict[str, Any]:
    """The arguments of ``model.evaluate`` for the whole validation set, read again each time."""
    if isinstance(validation_data, tuple) and _is_arrays(validation_data):
        x, y, sample_weight = _unpack(validation_data)
        if len(keras.tree.flatten(x)[0]) == 0:
            raise ValueError("validation_data is empty: it needs at least one sample.")
        return {"x": x, "y": y, "sample_weight": sample_weight, "batch_size": batch_size}
    if isinstance(validation_data, Iterator) or not isinstance(validation_data, Iterable):
        raise TypeError(
            "With val_every, validation_data must be readable again and again: a tuple "
            "(x_val, y_val) of arrays, a tf.data.Dataset or a keras.utils.PyDataset, got "
            f"{type(validation_data).__name__} (a generator is used up after one pass)."
        )
    return {"x": validation_data}


def _measurement(
    model: keras.Model, validation_data: Any, val_every: Any, batch_size: int, num_steps: int
) -> tuple[Callable[[float], float], int]:
    """How a step's loss is recorded, and every how many steps.

    Returns ``(measure, every)``: ``measure(train_loss)`` gives the loss to record.
    """
    _check_not_plain("validation_data", validation_data)
    if val_every is None:
        if validation_data is None:
            return (lambda train_loss: train_loss), 1
        batch = _validation_batch(validation_data)
        return (lambda _: float(model.test_on_batch(*batch, return_dict=True)["loss"])), 1
    every = check_count("val_every", val_every, 1)
    if every > num_steps // 2:
        raise ValueError(
            f"`val_every` must be at most num_steps // 2 = {num_steps // 2} so that the test "
            f"measures at least two points, got {every}."
        )
    if validation_data is None:
        raise ValueError(
            "`val_every` needs validation_data: pass validation_data=(x_val, y_val) (or a "
            "dataset) to measure on it every val_every steps, or drop val_every."
        )
    arguments = _validation_set(validation_data, batch_size)

    def evaluate(_: float) -> float:
        return float(model.evaluate(**arguments, verbose=0, return_dict=True)["loss"])

    return evaluate, every


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

    An owner whose rate is a variable has that variable assigned (and its value
    put back at the end); an owner whose rate is a schedule or a callable gets a
    temporary variable in its place (so the train function is traced again), and
    the original object back. Every access goes through :mod:`lrtools._rates`.

    The model's train function is put back only when a temporary variable was
    traced into it. Otherwise the function the test traced reads the model's own
    variables, so the model keeps it: a later ``fit`` or range test does not trace
    again (before, a fresh model lost it and every range test paid a new trace).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.owners = rate_owners(model.optimizer)
        self.originals = [rate_object(owner) for owner in self.owners]
        self.ratios = group_ratios([current_rate(owner) for owner in self.owners])
        self.train_function = model.train_function
        self.values: list[np.ndarray | None] = []
        self.variables = []
        for owner, original in zip(self.owners, self.originals, strict=True):
            if isinstance(original, keras.Variable):
                self.values.append(np.array(keras.ops.convert_to_numpy(original)))
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
            replace_rate(owner, variable)  # the optimizer tracks it, so JAX sees it too
            self.values.append(None)
            self.variables.append(variable)
            model.train_function = None  # trace again, reading the new variable

    def set(self, lr: float) -> None:
        for variable, ratio in zip(self.variables, self.ratios, strict=True):
            variable.assign(lr * ratio)

    def restore(self) -> None:
        owned = zip(self.owners, self.originals, self.values, strict=True)
        for owner, original, value in owned:
            restore_rate(owner, original)
            if value is not None:
                original.assign(value)  # the rate variable's own value, even with restore=False
        if any(value is None for value in self.values):  # traced with a temporary variable
            self.model.train_function = self.train_function


class _Sweep:
    """The state of the range test's sweeps: the rate driver, the rates, progress and losses.

    Each call of :meth:`run` sweeps the rates once over a stream of batches: one
    applied update per rate (``accumulation`` train steps when the optimizer
    accumulates gradients), a loss recorded every ``every`` updates through
    ``measure``, and an early stop once the smoothed loss exceeds
    ``diverge_factor`` times its best or a loss is not finite.
    """

    def __init__(
        self,
        model: keras.Model,
        driver: _RateDriver,
        rates: np.ndarray,
        measurement: tuple[Callable[[float], float], int],
        *,
        smoothing: float,
        diverge_factor: float,
        progbar: keras.utils.Progbar,
    ):
        self.model, self.driver, self.rates = model, driver, rates
        self.measure, self.every = measurement
        self.smoothing, self.diverge_factor, self.progbar = smoothing, diverge_factor, progbar
        self.accumulation = _accumulation(model.optimizer)
        strategy = _multi_worker(model)
        self.multi_worker_step = None if strategy is None else _MultiWorkerStep(model, strategy)
        self.repeat_losses: list[list[float]] = []
        self.diverged = False
        self.steps_done = 0

    @property
    def measured_rates(self) -> np.ndarray:
        """The rate at each recorded loss."""
        return self.rates[self.every - 1 :: self.every]

    def _update(self, batches: Iterator[Batch]) -> float:
        """Train until the optimizer applies one update; return the mean training loss.

        With gradient accumulation, ``optimizer.iterations`` counts applied updates:
        train on at most ``accumulation`` batches, until it moves.
        """
        optimizer, losses = self.model.optimizer, []
        if self.accumulation > 1:
            before = int(keras.ops.convert_to_numpy(optimizer.iterations))
        for _ in range(self.accumulation):
            x, y, sample_weight = next(batches)
            if self.multi_worker_step is not None:
                losses.append(self.multi_worker_step(x, y, sample_weight))
            else:
                logs = self.model.train_on_batch(x, y, sample_weight, return_dict=True)
                losses.append(float(logs["loss"]))
            # A property: with accumulation a new value each read, the applied updates so far.
            if (
                self.accumulation == 1
                or int(keras.ops.convert_to_numpy(optimizer.iterations)) > before
            ):
                break
        return float(np.mean(losses))

    def run(self, batches: Iterator[Batch]) -> None:
        """Sweep the rates once; append the recorded losses and whether it diverged."""
        smoother, losses, best = LossSmoother(self.smoothing), [], math.inf
        self.repeat_losses.append(losses)
        for step, lr in enumerate(self.rates):
            self.driver.set(float(lr))
            train_loss = self._update(batches)
            self.steps_done += 1
            self.progbar.update(self.steps_done, [("lr", lr), ("loss", train_loss)])
            if (step + 1) % self.every and math.isfinite(train_loss):
                continue
            loss = self.measure(train_loss)
            losses.append(loss)
            smoothed = smoother.update(loss)
            best = min(best, smoothed)
            unstable = not math.isfinite(smoothed) or smoothed > self.diverge_factor * best
            if unstable or not math.isfinite(train_loss):
                self.diverged = True
                return

    def finish(self) -> None:
        """Close the progress bar when a sweep stopped early."""
        if self.steps_done < self.progbar.target:  # it finalises itself at its target
            self.progbar.update(self.steps_done, finalize=True)


# --------------------------------------------------------------------------- the test


def _rate_grid(start_lr: float, end_lr: float, num_steps: int, mode: str) -> np.ndarray:
    if mode == "exponential":
        return np.geomspace(start_lr, end_lr, num_steps)
    return np.linspace(start_lr, end_lr, num_steps)


def _build(model: keras.Model, stream: Iterator[Batch]) -> Iterator[Batch]:
    """Build the model, metrics and optimizer on the stream's first batch; return the stream.

    ``model.fit`` would build them on its first step; building them now lets the
    snapshot hold every variable.
    """
    first_batch = next(stream)
    with _scope(model):
        model._symbolic_build(data_batch=first_batch)
    return _chain([first_batch], stream)


def _chain(head: list[Batch], tail: Iterator[Batch]) -> Iterator[Batch]:
    yield from head
    yield from tail


def _sweep_all(
    sweep: _Sweep, streams: list[Iterator[Batch]], snapshot: _Snapshot | None, restore: bool
) -> None:
    """Run every repeat from the same start; put the rate (and, with ``restore``, all) back."""
    try:
        for repeat, stream in enumerate(streams):
            if repeat > 0:
                snapshot.restore()
            sweep.run(stream)
    finally:
        sweep.driver.restore()
        if restore:
            snapshot.restore()
    sweep.finish()


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
    val_every: int | None = None,
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
    Under ``tf.distribute.MultiWorkerMirroredStrategy``, where Keras 3 cannot
    ``train_on_batch`` (keras-team/keras#20585), the test runs the same step
    through the strategy instead: call it on every worker with the same data and
    the same seed (each worker trains on the whole batch), and every worker gets
    the curve one process would. ``validation_data`` is refused there.
    With gradient accumulation (``gradient_accumulation_steps=n`` on the
    optimizer) a step is one *applied* update: the rate changes once per ``n``
    batches and the loss recorded is the mean over those ``n`` batches.

    Args:
        model: a compiled ``keras.Model``.
        x: input arrays (or a dict/list of them), a ``tf.data.Dataset``, a
            ``keras.utils.PyDataset`` or a generator of ``(x, y)`` batches, as
            ``model.fit`` takes them. The data cycles when it has fewer
            batches than steps. Plain Python lists and file names are refused:
            convert with ``np.asarray`` or load the file first.
        y: target arrays when ``x`` holds arrays; ``None`` otherwise.
        batch_size: rows per step when ``x`` holds arrays (and per evaluation
            batch of validation arrays).
        start_lr: the first rate, > 0.
        end_lr: the last rate, > ``start_lr``.
        num_steps: the most steps to run, >= 2.
        mode: ``"exponential"`` or ``"linear"`` growth of the rate.
        smoothing: moving-average factor in ``[0, 1)``; 0 turns smoothing off.
        diverge_factor: stop once the smoothed loss exceeds this factor times
            its best so far; > 1 (``math.inf`` never stops early on a finite loss).
        validation_data: ``(x_val, y_val)`` arrays, or a dataset or generator.
            Without ``val_every``, the loss recorded is the loss on one fixed
            batch (all of the arrays, else the first batch) after each step
            (slower, less noisy); keep it to a few hundred samples.
        val_every: measure the loss on the *whole* validation set (as
            torch-lr-finder's ``val_loader`` does) every this many steps, and
            record only those losses: ``result.lrs`` are then the rates of the
            measured steps. Cost: ``num_steps / val_every`` passes over the
            validation set on top of the training steps (with 2,000 validation
            rows, ``batch_size=32`` and ``val_every=5``, 20 evaluation batches
            per 5 training steps). With few measurements use less
            ``smoothing`` (0.5 or 0). Needs arrays, a dataset or a ``PyDataset``.
        max_samples: test on a random sample of this many rows of the arrays
            (or the first this many samples of another source), as the
            articles advise for a first, fast look.
        repeats: run the test this many times from the same start with
            different shuffles, to see how reliable the suggestion is.
        restore: put the model's weights, the optimizer's variables and the
            metrics' state back as they were before the test (bit for bit).
            With ``False`` the model keeps the weights and optimizer state the
            (last) test left, but the learning rate itself (its value, variable
            or schedule) is always put back as it was.
        verbose: ``"auto"`` or 1 shows a progress bar, 2 one line at the end,
            0 nothing.

    Returns:
        A :class:`RangeTestResult`.

    Raises:
        TypeError: if ``model`` is not a Keras model, ``x`` is not a data
            source ``model.fit`` takes (a list of numbers, a file name), or an
            argument has the wrong type.
        ValueError: for an uncompiled model, ``validation_data`` under
            ``MultiWorkerMirroredStrategy``, ``start_lr >= end_lr``,
            non-positive rates, ``num_steps < 2``, an unknown mode, bad
            ``smoothing``, ``diverge_factor``, ``batch_size``,
            ``max_samples``, ``repeats``, ``val_every`` or ``verbose``, ``x``
            and ``y`` of different lengths, or empty data.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> data = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> result = lr_range_test(model, data, data[:, :1], num_steps=30, verbose=0)
    >>> bool(result.lrs[0] == 1e-7)
    True
    """
    _check_model(model)
    if validation_data is not None and _multi_worker(model) is not None:
        raise ValueError(
            "validation_data cannot be used under MultiWorkerMirroredStrategy: Keras 3 cannot "
            "evaluate across workers (keras-team/keras#20585). Leave it out (the test then "
            "records the training loss), or run the test in one process."
        )
    start_lr, end_lr, mode = _check_sweep(start_lr, end_lr, mode)
    num_steps = check_count("num_steps", num_steps, 2)
    batch_size = check_count("batch_size", batch_size, 1)
    repeats = check_count("repeats", repeats, 1)
    max_samples = None if max_samples is None else check_count("max_samples", max_samples, 1)
    smoothing = _check_smoothing(smoothing)
    diverge_factor = _check_diverge_factor(diverge_factor)
    restore = check_flag("restore", restore)
    verbose = _check_verbose(verbose)

    # Seeded from Python's generator, so keras.utils.set_random_seed makes the test repeatable.
    rng = np.random.default_rng(random.getrandbits(64))
    keep = num_steps * _accumulation(model.optimizer)
    source = _Batches(x, y, batch_size, max_samples, keep=keep, rng=rng)
    measurement = _measurement(model, validation_data, val_every, batch_size, num_steps)
    streams = [source.stream() for _ in range(repeats)]
    streams[0] = _build(model, streams[0])
    snapshot = _Snapshot(model) if restore or repeats > 1 else None
    progbar = keras.utils.Progbar(
        num_steps * repeats, verbose=verbose, stateful_metrics=["lr", "loss"]
    )
    sweep = _Sweep(
        model,
        _RateDriver(model),
        _rate_grid(start_lr, end_lr, num_steps, mode),
        measurement,
        smoothing=smoothing,
        diverge_factor=diverge_factor,
        progbar=progbar,
    )
    _sweep_all(sweep, streams, snapshot, restore)
    result = RangeTestResult(
        sweep.measured_rates,
        sweep.repeat_losses,
        smoothing=smoothing,
        diverged=sweep.diverged,
        validation=validation_data is not None,
    )
    if not np.isfinite(result.losses[0]):
        warnings.warn(
            "The range test's loss was not finite from the first step: there is nothing to "
            "suggest. Check the data and the model for NaN, or lower start_lr.",
            stacklevel=2,
        )
    return result
