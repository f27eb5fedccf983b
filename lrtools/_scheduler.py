"""``LRScheduler`` and the small helpers every lrtools callback shares.

Public through :mod:`lrtools.callbacks`; see its docstring.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from lrtools import schedules
from lrtools._checks import check_choice, check_flag
from lrtools._fit_guard import FitGuard, _fit_frame
from lrtools._rates import current_rate, group_ratios, rate_object, rate_owners
from lrtools._step_rate import RateTable, StepRate

Schedule = keras.optimizers.schedules.LearningRateSchedule


def _to_float(value: Any) -> float:
    return float(ops.convert_to_numpy(value))


def _current_step(optimizer: keras.optimizers.Optimizer) -> int:
    return int(ops.convert_to_numpy(optimizer.iterations))


class _StepTable:
    """The values of a pure, vectorised function of the step, computed a block at a time.

    Evaluating a schedule eagerly costs a few tenths of a millisecond per call (one
    backend op per term of its formula), which a batch-level callback would pay at every
    step. Schedules are pure functions of the step and accept an array of steps, so one
    call gives the values of the next ``BLOCK`` steps, and each later step is a lookup.
    A step outside the block computes a new block starting there (a resumed or rewound run
    included), so the values are the function's, whatever order the steps come in.
    """

    BLOCK = 1024

    def __init__(self, function: Callable[[Any], Any]):
        self.function = function
        self._first = 0
        self._values = np.empty(0)

    def __call__(self, step: int) -> float:
        offset = step - self._first
        if not 0 <= offset < len(self._values):
            self._first, offset = step, 0
            steps = np.arange(step, step + self.BLOCK)
            self._values = np.asarray(ops.convert_to_numpy(self.function(steps)), np.float64)
        return float(self._values[offset])


def _is_pure_schedule(schedule: Any) -> bool:
    """Whether ``schedule`` is an lrtools schedule whose value depends on the step alone.

    lrtools's schedules say so through their documented ``is_pure`` property (``False``
    when they hold a ``keras.Variable`` that training code may assign, such as
    ``schedules.Scaled``'s factor). Schedules from elsewhere are not known to be pure.
    """
    return isinstance(schedule, schedules._Schedule) and schedule.is_pure


def _rebuild_train_function(model: keras.Model) -> None:
    """Make the next training step trace again, so that it sees changed Python state."""
    model.make_train_function(force=True)


def _settable_rate_owners(optimizer: keras.optimizers.Optimizer, caller: str) -> list:
    """The rate owners of ``optimizer``, refusing any whose rate is not a variable."""
    owners = rate_owners(optimizer)
    for owner in owners:
        if not isinstance(rate_object(owner), keras.Variable):
            raise ValueError(
                f"{caller} sets the learning rate itself, but optimizer {owner.name!r} was "
                f"compiled with {rate_object(owner)!r} as its rate. Compile it with a float "
                f"learning_rate and give the schedule to {caller}, or keep the schedule in the "
                "optimizer and drop the callback."
            )
    return owners


# --------------------------------------------------------------------------- LRScheduler


class LRScheduler(keras.callbacks.Callback):
    """Set the optimizer's learning rate from a schedule or a Python function.

    The position ``t`` is the optimizer's step counter (``optimizer.iterations``)
    with ``unit="batch"``, and the epoch number Keras passes with ``unit="epoch"``,
    so a resumed run (``initial_epoch``, or a reloaded ``.keras`` model) sets the
    same rates as an uninterrupted one. ``schedule`` may be:

    - a ``keras.optimizers.schedules.LearningRateSchedule`` (every
      ``lrtools.schedules`` class): ``lr = schedule(t)``;
    - a function ``f(t)`` returning the rate, such as an article's
      ``step_decay(epoch)``;
    - a function ``f(t, lr)`` that also receives the current rate, like
      ``keras.callbacks.LearningRateScheduler``'s.

    The rate is set for each batch (``"batch"``) or each epoch (``"epoch"``).
    ``logs["learning_rate"]`` receives the rate of the epoch's last batch, so
    ``History`` records it, and the rate of every batch is kept in
    ``steps`` / ``rates``.

    **Computed in the compiled step.** With ``unit="batch"`` on the TensorFlow
    and JAX backends, the rate of an lrtools or Keras schedule is computed inside
    the compiled train step (the schedule is placed in the optimizer for the
    duration of each step, ``lrtools._step_rate``), so this callback costs what
    any per-batch callback costs. So is a function declared ``pure=True`` on
    TensorFlow when the steps per epoch are known: it is evaluated once per epoch,
    for every step of the epoch, into a table the step reads. ``steps`` / ``rates``
    are then filled at the end of each epoch (or of a fit that raised), for every
    step taken, and between steps the optimizer's rate variable holds the rate of
    the next step. Any other schedule or function is called before each batch
    and its rate assigned to the optimizer, as written.

    A ``keras.optimizers.MultiOptimizer`` has one rate per group. The schedule
    then sets the rate of the group that had the largest rate when training
    began, and every other group keeps its ratio to it:
    ``lr_group(t) = schedule(t) * lr_group(begin) / max_g lr_g(begin)``.
    Since the rates are saved with the model, a resumed run finds the same ratios.
    When every group's rate is 0 at that moment, the ratios are unknown: every
    group then follows the schedule with the ratio 1, and a ``UserWarning`` says so
    (the one policy of ``lrtools._rates.group_ratios``).

    The optimizer must be compiled with a float learning rate (Keras then holds it
    in a variable that this callback assigns); an optimizer compiled with a
    schedule is refused with a ``ValueError``, because the two would fight over
    the rate. With ``steps_per_execution > 1`` Keras calls batch callbacks once
    per execution: a rate computed in the step still changes at every step,
    any other once per execution.

    Args:
        schedule: a ``LearningRateSchedule``, or a function ``f(t)`` or
            ``f(t, lr)`` returning a finite rate >= 0.
        unit: ``"batch"`` (``t`` is the global step) or ``"epoch"`` (``t`` is
            the epoch number, from 0).
        pure: your promise that the function ``f(t)`` depends on ``t`` alone (no
            state, no randomness, nothing read from the model), so that it may be
            called ahead of time; only then is it evaluated a table at a time
            (``unit="batch"``). The default, False, calls it before every batch, which
            is right for any function. Schedules need no promise.

    Raises:
        ValueError: for an unknown ``unit``; during training, for a rate that is
            not finite or negative, or an optimizer compiled with a schedule.
        TypeError: if ``schedule`` is not callable, takes neither one nor two
            positional arguments, or returns something that is not a number; if
            ``unit`` is not a string or ``pure`` not a bool; for ``pure=True`` with
            a function ``f(t, lr)``, which depends on the rate in force.

    Example:

    >>> def step_decay(epoch):
    ...     return 0.1 * 0.5 ** (epoch // 10)
    >>> scheduler = LRScheduler(step_decay, unit="epoch")
    >>> # model.fit(x, y, epochs=30, callbacks=[scheduler])
    >>> # history.history["learning_rate"] -> [0.1, ..., 0.05, ..., 0.025, ...]
    """

    UNITS = ("batch", "epoch")

    def __init__(
        self, schedule: Schedule | Callable[..., float], unit: str = "batch", pure: bool = False
    ):
        super().__init__()
        self.unit = check_choice("unit", unit, self.UNITS)
        self.pure = check_flag("pure", pure)
        self._set_schedule(schedule)
        if self.pure and self._passes_rate:
            raise TypeError(
                "pure=True promises a function of the step alone, but this one takes "
                "(t, lr) and so depends on the rate in force: pass pure=False."
            )
        self.steps: list[int] = []
        self.rates: list[float] = []
        self._ratios: list[float] = []
        self._owner_list: list = []
        self._in_step: _InStep | None = None

    def _set_schedule(self, schedule: Schedule | Callable[..., float]) -> None:
        self._passes_rate = _passes_rate(schedule)
        self.schedule = schedule
        self._table = _StepTable(schedule) if _is_pure_schedule(schedule) else None

    def rate_at(self, t: int, current_rate: float) -> float:
        """The rate the schedule gives at position ``t`` (a step or an epoch).

        Args:
            t: the step (``unit="batch"``) or epoch (``unit="epoch"``).
            current_rate: the rate in force, passed to ``f(t, lr)`` functions.

        Returns:
            The rate, a finite float >= 0.

        Raises:
            ValueError: if the schedule returns a non-finite or negative rate.
            TypeError: if it returns something that is not a number.
        """
        if self._table is not None:
            rate = self._table(t)
            if math.isfinite(rate) and rate >= 0:
                return rate
        value = self.schedule(t, current_rate) if self._passes_rate else self.schedule(t)
        try:
            rate = _to_float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"The schedule returned {value!r} at {self.unit} {t}; it must return a number."
            ) from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(
                f"The schedule returned the rate {rate} at {self.unit} {t}; a learning rate "
                "must be a finite number >= 0. Check the function passed to LRScheduler."
            )
        return rate

    def _reference_rate(self) -> float:
        """The rate the schedule sets: the largest group's rate."""
        return max(current_rate(owner) for owner in self._owner_list)

    def _apply(self, t: int) -> float:
        """Set the rate for position ``t`` and return it, as the optimizer holds it."""
        current = self._reference_rate() if self._passes_rate else math.nan
        rate = self.rate_at(t, current)
        for owner, ratio in zip(self._owner_list, self._ratios, strict=True):
            owner.learning_rate = rate * ratio
        # The largest group (ratio 1) now holds ``rate``, rounded to its variable's dtype.
        return float(np.asarray(rate, dtype=rate_object(self._owner_list[0]).dtype))

    def _step_scope(self) -> contextlib.AbstractContextManager:
        """What the compiled step needs besides the rate (``OneCycle``: the momentum)."""
        return contextlib.nullcontext()

    def _recorded(self, first: int) -> None:
        """Called after ``steps[first:]`` / ``rates[first:]`` were recorded."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._in_step is not None:
            self._in_step.release()  # a fit that raised before: nothing of it stays
        # The owners are found and checked once per fit, not at every batch.
        self._owner_list = _settable_rate_owners(self.model.optimizer, type(self).__name__)
        # One rule for several groups (``_rates.group_ratios``): every group keeps its
        # proportion to the largest; when all rates are 0, all follow with ratio 1 (warned).
        self._ratios = group_ratios([current_rate(owner) for owner in self._owner_list])
        self._in_step = _InStep.start(self)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._in_step is not None:
            self._in_step.epoch_begin()
        elif self.unit == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._in_step is not None:
            return  # the compiled step computes the rate; recorded at the epoch's end
        step = _current_step(self.model.optimizer)
        # With unit="epoch" another callback may have changed the rate since the epoch began.
        rate = self._apply(step) if self.unit == "batch" else self._reference_rate()
        self.steps.append(step)
        self.rates.append(rate)
        self._recorded(len(self.steps) - 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._in_step is not None:
            self._in_step.record()
        if logs is not None:
            done = self._in_step is not None and self._in_step.epoch_steps
            logs["learning_rate"] = self.rates[-1] if done else self._reference_rate()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._in_step is not None:
            self._in_step.release()
            self._in_step = None


def _step_schedule(scheduler: LRScheduler) -> Schedule | None:
    """The rate the compiled step can compute for ``scheduler`` in this fit, or None.

    A batch-level schedule from lrtools or Keras (on JAX, which reads variables
    only when tracing, not one holding a variable training code may change), or a
    function declared pure, on TensorFlow, when the steps per epoch are known.
    """
    backend = keras.backend.backend()
    if scheduler.unit != "batch" or backend not in ("tensorflow", "jax"):
        return None
    schedule = scheduler.schedule
    if isinstance(schedule, Schedule):
        ours = isinstance(schedule, schedules._Schedule)
        if ours and (backend == "tensorflow" or _is_pure_schedule(schedule)):
            return schedule
        return schedule if type(schedule).__module__.startswith("keras.") else None
    steps = (scheduler.params or {}).get("steps")
    if scheduler.pure and backend == "tensorflow" and steps:
        return RateTable(int(steps) + 1)  # one more: the first step of the next epoch
    return None


class _InStep:
    """One fit of an ``LRScheduler`` whose rate the compiled step computes (``_step_rate``).

    The step is wrapped by a :class:`FitGuard` whose scope puts a ``StepRate`` in each
    rate owner for the duration of every call; ``steps`` / ``rates`` are recorded a
    whole epoch at a time, from the counter at the epoch's begin and end.
    """

    def __init__(self, scheduler: LRScheduler, rate: Schedule):
        self.scheduler = scheduler
        self.rate = rate
        self.table = rate if isinstance(rate, RateTable) else None
        self.owners = scheduler._owner_list
        optimizer = scheduler.model.optimizer
        self.step_rates = [
            StepRate(rate, ratio, rate_object(owner), optimizer)
            for owner, ratio in zip(self.owners, scheduler._ratios, strict=True)
        ]
        self.readers = [
            (owner, functools.partial(step_rate, None))
            for owner, step_rate in zip(self.owners, self.step_rates, strict=True)
        ]
        self.first: int | None = None  # the epoch's first step, until recorded
        self.epoch_steps = 0
        self.guard = FitGuard(scheduler.model, self.scope, self.abandon)

    @classmethod
    def start(cls, scheduler: LRScheduler) -> _InStep | None:
        """The in-step rate for this fit, or None: then the rate is set before every batch.

        Only inside ``model.fit``: a custom training loop that drives the callbacks
        through a ``CallbackList`` never calls ``model.train_function``, so there the
        callback sets the rate before each batch, as Keras's own callbacks do.
        """
        if _fit_frame(scheduler.model) is None:
            return None
        rate = _step_schedule(scheduler)
        return None if rate is None else cls(scheduler, rate)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        # Each owner reads its rate from its ``StepRate`` through Keras's one accessor,
        # ``_get_current_learning_rate``, set as a plain attribute: the owner's rate object
        # is never swapped, and this costs well under a microsecond per step.
        for owner, reader in self.readers:
            vars(owner)["_get_current_learning_rate"] = reader
        try:
            with self.scheduler._step_scope():
                yield
        finally:
            for owner, _ in self.readers:
                vars(owner).pop("_get_current_learning_rate", None)

    def epoch_begin(self) -> None:
        """Fill the table for this epoch's steps; show the first step's rate."""
        step = _current_step(self.scheduler.model.optimizer)
        self.first, self.epoch_steps = step, 0
        if self.table is not None:
            steps = range(step, step + len(self.table.host))
            self.table.fill(step, [self.scheduler.rate_at(t, math.nan) for t in steps])
        rate = float(self.rates_at(np.array([step]))[0])
        for step_rate in self.step_rates:
            step_rate.variable.assign(rate * step_rate.ratio)

    def rates_at(self, steps: np.ndarray) -> np.ndarray:
        """The largest group's rate at ``steps``, as the compiled step computes it."""
        dtype = self.step_rates[0].variable.dtype
        if self.table is not None:
            return self.table.at(steps).astype(dtype)
        if self.scheduler._table is not None:  # blocks of a pure lrtools schedule
            return np.array([self.scheduler._table(int(t)) for t in steps], dtype)
        try:
            values = ops.convert_to_numpy(self.rate(steps))
            return np.broadcast_to(np.asarray(values, dtype), steps.shape)
        except Exception:  # a schedule that takes one step at a time
            return np.array([_to_float(self.rate(int(t))) for t in steps], dtype)

    def record(self) -> None:
        """Append the steps taken since the epoch began, and their rates."""
        if self.first is None:
            return
        steps = np.arange(self.first, _current_step(self.scheduler.model.optimizer))
        self.first, self.epoch_steps = None, len(steps)
        if len(steps):
            first = len(self.scheduler.steps)
            self.scheduler.steps.extend(steps.tolist())
            self.scheduler.rates.extend(self.rates_at(steps).tolist())
            self.scheduler._recorded(first)

    def abandon(self) -> None:
        """Forget the epoch under way (a fit that raised records its finished epochs only)."""
        self.first = None

    def release(self) -> None:
        self.guard.release()


def _passes_rate(schedule: Any) -> bool:
    """Whether ``schedule`` is called as ``f(t, lr)`` (True) or ``f(t)`` (False)."""
    if isinstance(schedule, Schedule):
        return False
    if not callable(schedule):
        raise TypeError(
            f"schedule must be a LearningRateSchedule or a function, got {type(schedule).__name__}."
        )
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        raise TypeError(
            f"Cannot read the signature of {schedule!r}: wrap it in a Python function "
            "f(t) or f(t, lr)."
        ) from None
    for arguments, passes_rate in (((0, 0.0), True), ((0,), False)):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return passes_rate
    raise TypeError(
        f"The schedule function must accept (t) or (t, lr); its signature is {signature}."
    )
