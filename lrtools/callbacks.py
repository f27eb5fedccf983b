"""Keras callbacks for what a schedule inside the optimizer cannot do.

- :class:`LRScheduler` drives the rate from a schedule or from a plain Python
  function of the epoch (the style most articles use), per batch or per epoch,
  and logs it into ``History``.
- :class:`OneCycle` is the one-cycle policy with the momentum (SGD's
  ``momentum``, Adam's ``beta_1``) cycled inversely to the rate.
- :class:`SnapshotEnsemble` keeps the weights at the end of every cycle of a
  cyclic or restarting schedule and averages the snapshots' predictions.
- :class:`ReduceLROnPlateau` is Keras's callback, extended to optimizers whose
  rate is a schedule: it lowers a multiplier saved with the model.

Every callback reads its position from ``optimizer.iterations`` (or the epoch
number Keras passes), never from a counter of its own, so a run saved to
``.keras`` and resumed with ``initial_epoch`` continues exactly where it stopped.

All of them handle ``keras.optimizers.LossScaleOptimizer`` and
``keras.optimizers.MultiOptimizer``: a multi-optimizer's groups move together
and keep their ratios (see :class:`LRScheduler`).
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from lrtools import schedules
from lrtools._rates import rate_owners

__all__ = ["LRScheduler", "OneCycle", "Snapshot", "SnapshotEnsemble", "ReduceLROnPlateau"]

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

    lrtools's schedules are vectorised pure functions of the step, except where they hold a
    ``keras.Variable`` that training code may assign (``schedules.Scaled``'s factor), at any
    depth of nesting. Those, and schedules from elsewhere, are evaluated at every call.
    """
    if not isinstance(schedule, schedules._Schedule):
        return False
    pending: list[Any] = [schedule]
    while pending:
        value = pending.pop()
        if isinstance(value, keras.Variable):
            return False
        if isinstance(value, schedules._Schedule):
            pending.extend(vars(value).values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    return True


def _rebuild_train_function(model: keras.Model) -> None:
    """Make the next training step trace again, so that it sees changed Python state."""
    model.make_train_function(force=True)


def _settable_rate_owners(optimizer: keras.optimizers.Optimizer, caller: str) -> list:
    """The rate owners of ``optimizer``, refusing any whose rate is not a variable."""
    owners = rate_owners(optimizer)
    for owner in owners:
        if not isinstance(owner._learning_rate, keras.Variable):
            raise ValueError(
                f"{caller} sets the learning rate itself, but optimizer {owner.name!r} was "
                f"compiled with {owner._learning_rate!r} as its rate. Compile it with a float "
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

    The rate is set before each batch (``"batch"``) or each epoch (``"epoch"``).
    ``logs["learning_rate"]`` receives the rate at the end of every epoch, so
    ``History`` records it, and the rate of every batch is kept in
    ``steps`` / ``rates``.

    A ``keras.optimizers.MultiOptimizer`` has one rate per group. The schedule
    then sets the rate of the group that had the largest rate when training
    began, and every other group keeps its ratio to it:
    ``lr_group(t) = schedule(t) * lr_group(begin) / max_g lr_g(begin)``.
    Since the rates are saved with the model, a resumed run finds the same ratios.

    The optimizer must be compiled with a float learning rate (Keras then holds it
    in a variable that this callback assigns); an optimizer compiled with a
    schedule is refused with a ``ValueError``, because the two would fight over
    the rate. With ``steps_per_execution > 1`` Keras calls batch callbacks once
    per execution, so the rate changes once per execution.

    Args:
        schedule: a ``LearningRateSchedule``, or a function ``f(t)`` or
            ``f(t, lr)`` returning a finite rate >= 0.
        unit: ``"batch"`` (``t`` is the global step) or ``"epoch"`` (``t`` is
            the epoch number, from 0).

    Raises:
        ValueError: for an unknown ``unit``; during training, for a rate that is
            not finite or negative, or an optimizer compiled with a schedule.
        TypeError: if ``schedule`` is not callable, takes neither one nor two
            positional arguments, or returns something that is not a number.

    Example:

    >>> def step_decay(epoch):
    ...     return 0.1 * 0.5 ** (epoch // 10)
    >>> scheduler = LRScheduler(step_decay, unit="epoch")
    >>> # model.fit(x, y, epochs=30, callbacks=[scheduler])
    >>> # history.history["learning_rate"] -> [0.1, ..., 0.05, ..., 0.025, ...]
    """

    UNITS = ("batch", "epoch")

    def __init__(self, schedule: Schedule | Callable[..., float], unit: str = "batch"):
        super().__init__()
        if unit not in self.UNITS:
            raise ValueError(f"Unknown unit {unit!r}: expected 'batch' or 'epoch'.")
        self.schedule = schedule
        self.unit = unit
        self._passes_rate = _passes_rate(schedule)
        self.steps: list[int] = []
        self.rates: list[float] = []
        self._ratios: list[float] = []
        self._owner_list: list = []
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
        return max(_to_float(owner.learning_rate) for owner in self._owner_list)

    def _apply(self, t: int) -> float:
        """Set the rate for position ``t`` and return it, as the optimizer holds it."""
        current = self._reference_rate() if self._passes_rate else math.nan
        rate = self.rate_at(t, current)
        for owner, ratio in zip(self._owner_list, self._ratios, strict=True):
            owner.learning_rate = rate * ratio
        # The largest group (ratio 1) now holds ``rate``, rounded to its variable's dtype.
        return float(np.asarray(rate, dtype=self._owner_list[0]._learning_rate.dtype))

    def on_train_begin(self, logs: dict | None = None) -> None:
        # The owners are found and checked once per fit, not at every batch.
        self._owner_list = _settable_rate_owners(self.model.optimizer, type(self).__name__)
        rates = [_to_float(owner.learning_rate) for owner in self._owner_list]
        largest = max(rates)
        if len(rates) > 1 and largest <= 0:
            raise ValueError(
                "Every group of the MultiOptimizer has the rate 0, so the ratios between the "
                "groups are unknown. Compile the groups with rates > 0."
            )
        self._ratios = [rate / largest for rate in rates] if len(rates) > 1 else [1.0]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.unit == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = _current_step(self.model.optimizer)
        # With unit="epoch" another callback may have changed the rate since the epoch began.
        rate = self._apply(step) if self.unit == "batch" else self._reference_rate()
        self.steps.append(step)
        self.rates.append(rate)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = self._reference_rate()


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


# --------------------------------------------------------------------------- OneCycle


class _MomentumCycle:
    """Make each momentum-owning optimizer read its momentum from the step, in the graph.

    Keras optimizers keep ``momentum`` / ``beta_1`` as Python floats, which the
    compiled train step bakes in as constants. This wraps each owner's
    ``update_step`` so that the momentum is computed from ``optimizer.iterations``
    inside the traced step (a pure function of the step, so it also holds after
    a resume). The train function must be traced after :meth:`attach`.

    - Adam-family optimizers (``Adam``, ``AdamW``, ``Adamax``, ``Lamb``, ``Lion``)
      read ``beta_1`` only inside ``update_step``: the float is swapped for the
      step's value while the original ``update_step`` runs.
    - ``SGD`` branches in Python on ``momentum != 0``, so its float stays and the
      velocity ``v`` is rescaled first: with the float ``m0`` and the step's
      ``m``, ``v <- v * m / m0`` makes Keras's ``v <- m0 * v - lr * g`` compute
      ``m * v - lr * g``; Nesterov's ``w += m0 * v - lr * g`` is then corrected by
      ``w += (m - m0) * v``.
    """

    BETA_1_OPTIMIZERS = (
        keras.optimizers.Adam,
        keras.optimizers.Adamax,
        keras.optimizers.Lamb,
        keras.optimizers.Lion,
    )

    def __init__(self, momentum_at: Callable[[Any], Any]):
        self.momentum_at = momentum_at
        self._patched: list[keras.optimizers.Optimizer] = []

    BACKENDS = ("tensorflow", "jax")

    @classmethod
    def check(cls, optimizer: keras.optimizers.Optimizer) -> None:
        """Raise ``ValueError`` if any rate owner's momentum cannot be cycled."""
        if keras.backend.backend() not in cls.BACKENDS:
            raise ValueError(
                f"Momentum cycling supports the TensorFlow and JAX backends, not "
                f"{keras.backend.backend()!r}. Pass cycle_momentum=False."
            )
        for owner in rate_owners(optimizer):
            if isinstance(owner, keras.optimizers.SGD):
                if owner.momentum == 0:
                    raise ValueError(
                        f"Optimizer {owner.name!r} is SGD without momentum, so there is no "
                        "momentum to cycle. Compile it with SGD(momentum=0.9), or pass "
                        "cycle_momentum=False."
                    )
            elif not isinstance(owner, cls.BETA_1_OPTIMIZERS):
                raise ValueError(
                    f"Cannot cycle the momentum of {type(owner).__name__}: supported are SGD "
                    "(momentum) and Adam, AdamW, Adamax, Lamb, Lion (beta_1). Pass "
                    "cycle_momentum=False."
                )

    def attach(self, optimizer: keras.optimizers.Optimizer) -> None:
        self.detach()
        for owner in rate_owners(optimizer):
            original = type(owner).update_step.__get__(owner)
            if isinstance(owner, keras.optimizers.SGD):
                owner.update_step = self._sgd_update(owner, optimizer, original)
            else:
                owner.update_step = self._beta_1_update(owner, optimizer, original)
            self._patched.append(owner)

    def detach(self) -> None:
        for owner in self._patched:
            del owner.update_step
        self._patched = []

    def _momentum(self, step_owner: keras.optimizers.Optimizer, dtype: Any) -> Any:
        return ops.cast(self.momentum_at(step_owner.iterations), dtype)

    def _sgd_update(self, owner, step_owner, original) -> Callable:
        def update_step(gradient: Any, variable: Any, learning_rate: Any) -> None:
            momentum = self._momentum(step_owner, variable.dtype)
            base = ops.cast(owner.momentum, variable.dtype)
            velocity = owner.momentums[owner._get_variable_index(variable)]
            owner.assign(velocity, ops.multiply(velocity, momentum / base))
            original(gradient, variable, learning_rate)
            if owner.nesterov:
                owner.assign_add(variable, ops.multiply(velocity, momentum - base))

        return update_step

    def _beta_1_update(self, owner, step_owner, original) -> Callable:
        def update_step(gradient: Any, variable: Any, learning_rate: Any) -> None:
            base = owner.beta_1
            owner.beta_1 = self._momentum(step_owner, variable.dtype)
            try:
                original(gradient, variable, learning_rate)
            finally:
                owner.beta_1 = base

        return update_step


class OneCycle(LRScheduler):
    """The one-cycle policy (Smith & Topin, 2019), with the momentum cycled inversely.

    The rate at step ``t`` (``optimizer.iterations``) is
    ``lrtools.schedules.OneCycle(max_lr, total_steps, ...)(t)``: it rises from
    ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the run
    and anneals to ``max_lr / (div_factor * final_div_factor)``; after
    ``total_steps`` it stays at the final rate. With ``cycle_momentum=True`` the
    momentum (SGD's ``momentum``, or ``beta_1`` of Adam, AdamW, Adamax, Lamb and
    Lion) follows ``schedules.OneCycle.momentum(t, base_momentum, max_momentum)``:
    ``max_momentum`` when the rate is low, ``base_momentum`` at the peak rate.

    Keras bakes ``momentum`` / ``beta_1`` into the compiled train step as Python
    constants, so setting the attribute would change nothing. This callback
    instead makes the compiled step compute the momentum from the step counter
    (see ``_MomentumCycle``), so every update uses the cycled value, on every
    backend and under ``tf.distribute``. The optimizer's own ``momentum`` /
    ``beta_1`` attribute, and so its saved config, keep their compiled values.
    The momentum of each batch is kept in ``momenta`` and the last one of each
    epoch is logged as ``momentum``. The rate is set as by :class:`LRScheduler`
    (``unit="batch"``, the same rule for a ``MultiOptimizer``).

    Args:
        max_lr: the peak rate, as for ``lrtools.schedules.OneCycle``.
        total_steps: the length of the run in steps, as there.
        pct_start: the fraction of the run spent rising, as there.
        div_factor: the starting rate is ``max_lr / div_factor``, as there.
        final_div_factor: the final rate is the starting rate divided by this, as there.
        anneal_strategy: ``"cos"`` or ``"linear"``, as there.
        three_phase: use the three-phase variant, as there.
        cycle_momentum: whether to cycle the momentum.
        base_momentum: the momentum at the peak rate, in [0, 1).
        max_momentum: the momentum at the start and end, in [base_momentum, 1).

    Raises:
        ValueError: for invalid schedule arguments or momenta; when training
            begins, if ``cycle_momentum`` is set and the optimizer is SGD without
            momentum or an optimizer with neither ``momentum`` nor ``beta_1``.

    Example:

    >>> one_cycle = OneCycle(max_lr=0.1, total_steps=1000)
    >>> # model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), ...)
    >>> # model.fit(x, y, epochs=10, callbacks=[one_cycle])   # 100 steps an epoch
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ):
        schedule = schedules.OneCycle(
            max_lr,
            total_steps,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            anneal_strategy=anneal_strategy,
            three_phase=three_phase,
        )
        super().__init__(schedule, unit="batch")
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.momentum_at(0)  # validates the momenta now rather than at the first step
        self.momenta: list[float] = []
        self._cycle = _MomentumCycle(self.momentum_at)
        self._momentum_table = _StepTable(self.momentum_at)

    def momentum_at(self, step: Any) -> Any:
        """The momentum at ``step`` (a step, an array of steps or a tensor)."""
        return self.schedule.momentum(step, self.base_momentum, self.max_momentum)

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.cycle_momentum:
            _MomentumCycle.check(self.model.optimizer)
            self._cycle.attach(self.model.optimizer)
            _rebuild_train_function(self.model)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_begin(batch, logs)
        if self.cycle_momentum:
            self.momenta.append(self._momentum_table(self.steps[-1]))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if logs is not None and self.momenta:
            logs["momentum"] = self.momenta[-1]

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.cycle_momentum:
            self._cycle.detach()
            # The traced step still cycles the momentum: trace again on the next fit.
            self.model.train_function = None


# --------------------------------------------------------------------------- SnapshotEnsemble


@dataclass(frozen=True)
class Snapshot:
    """The weights of the model at the end of one cycle.

    Attributes:
        step: the optimizer step (``optimizer.iterations``) when it was taken.
        weights: the weights (``model.get_weights()``), for in-memory snapshots.
        path: the ``.weights.h5`` file, for snapshots saved to a directory.
    """

    step: int
    weights: list[np.ndarray] | None = None
    path: str | None = None

    def load_into(self, model: keras.Model) -> None:
        """Set ``model``'s weights to this snapshot's."""
        if self.path is not None:
            model.load_weights(self.path)
        else:
            model.set_weights(self.weights)


class SnapshotEnsemble(keras.callbacks.Callback):
    """Snapshot ensembles (Huang et al., 2017): keep the weights at each cycle's end.

    Train with a cyclic or restarting schedule (``CosineRestarts``, ``CyclicLR``)
    and this callback saves the model's weights whenever ``optimizer.iterations``
    reaches the end of a cycle; :meth:`predict` and :meth:`ensemble` then average
    the predictions of the snapshots, which costs one training run for several
    models.

    ``cycle_steps`` gives the cycles: an int ``n`` for cycles of ``n`` steps
    (snapshots at steps ``n, 2n, 3n, ...``), or a sequence of cycle lengths for
    cycles that grow (``CosineRestarts`` with ``t_mul > 1``): snapshots at their
    running sums, and none after the last listed cycle.

    Snapshots are kept in memory, or with ``directory`` written there as
    ``snapshot-<step>.weights.h5``; a callback given a directory that already
    holds snapshots (a resumed run) picks them up when training begins. ``keep``
    limits the number kept: the oldest are dropped (and their files deleted).

    With ``steps_per_execution = k > 1`` Keras calls batch callbacks only after
    every ``k`` steps (and at the end of each epoch), so a cycle that ends inside
    a compiled call cannot be caught at its last step: the callback warns that
    the snapshot was missed. Let cycles end on epoch boundaries or on multiples
    of ``k``.

    Args:
        cycle_steps: the cycle length in steps, or a sequence of cycle lengths.
        directory: where to write the snapshots; ``None`` keeps them in memory.
        keep: how many of the latest snapshots to keep; ``None`` keeps all.

    Raises:
        ValueError: for cycle lengths or ``keep`` that are not whole numbers >= 1.

    Example:

    >>> import keras, lrtools
    >>> optimizer = keras.optimizers.SGD(
    ...     lrtools.schedules.CosineRestarts(0.1, first_cycle_steps=200), momentum=0.9
    ... )
    >>> snapshots = SnapshotEnsemble(cycle_steps=200, keep=5)
    >>> # model.fit(x, y, epochs=50, callbacks=[snapshots])
    >>> # probabilities = snapshots.predict(x_test)
    """

    FILE_PATTERN = re.compile(r"snapshot-(\d+)\.weights\.h5")

    def __init__(
        self,
        cycle_steps: int | Sequence[int],
        directory: str | os.PathLike | None = None,
        keep: int | None = None,
    ):
        super().__init__()
        repeating = not isinstance(cycle_steps, Sequence)
        lengths = [cycle_steps] if repeating else list(cycle_steps)
        if not lengths or any(_whole_number(n) is None or n < 1 for n in lengths):
            raise ValueError(
                "cycle_steps must be a whole number of steps >= 1, or a non-empty sequence of "
                f"them; got {cycle_steps!r}."
            )
        if keep is not None and (_whole_number(keep) is None or keep < 1):
            raise ValueError(f"keep must be a whole number >= 1 or None; got {keep!r}.")
        self.cycle_steps = cycle_steps
        self._every = int(lengths[0]) if repeating else None
        self._ends = set() if repeating else {int(end) for end in np.cumsum(lengths)}
        self.directory = None if directory is None else os.fspath(directory)
        self.keep = keep
        self.snapshots: list[Snapshot] = []
        self._last_seen_step: int | None = None

    def is_cycle_end(self, step: int) -> bool:
        """Whether a cycle ends after ``step`` updates."""
        if self._every is not None:
            return step > 0 and step % self._every == 0
        return step in self._ends

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._last_seen_step = _current_step(self.model.optimizer)
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        found = {snapshot.step: snapshot for snapshot in self.snapshots}
        for name in os.listdir(self.directory):
            match = self.FILE_PATTERN.fullmatch(name)
            if match:
                step = int(match.group(1))
                found[step] = Snapshot(step, path=os.path.join(self.directory, name))
        self.snapshots = [found[step] for step in sorted(found)]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = _current_step(self.model.optimizer)
        previous, self._last_seen_step = self._last_seen_step, step
        if previous is not None:
            missed = [end for end in range(previous + 1, step) if self.is_cycle_end(end)]
            if missed:
                warnings.warn(
                    f"SnapshotEnsemble missed the cycle end(s) at step(s) {missed}: they fell "
                    "inside one compiled call (steps_per_execution > 1). Make cycles end on "
                    "epoch boundaries or on multiples of steps_per_execution.",
                    stacklevel=2,
                )
        if not self.is_cycle_end(step) or any(s.step == step for s in self.snapshots):
            return
        if self.directory is None:
            snapshot = Snapshot(step, weights=self.model.get_weights())
        else:
            path = os.path.join(self.directory, f"snapshot-{step:08d}.weights.h5")
            self.model.save_weights(path)
            snapshot = Snapshot(step, path=path)
        self.snapshots.append(snapshot)
        while self.keep is not None and len(self.snapshots) > self.keep:
            dropped = self.snapshots.pop(0)
            if dropped.path is not None:
                os.remove(dropped.path)

    def _members(self, model: keras.Model | None) -> list[tuple[Snapshot, keras.Model]]:
        model = self.model if model is None else model
        if not self.snapshots:
            raise ValueError(
                "No snapshot yet: train past the end of a cycle (cycle_steps="
                f"{self.cycle_steps!r}) first."
            )
        members = []
        for snapshot in self.snapshots:
            member = keras.models.clone_model(model)
            snapshot.load_into(member)
            members.append((snapshot, member))
        return members

    def predict(self, x: Any, batch_size: int | None = None, model: keras.Model | None = None):
        """The mean of the snapshots' predictions on ``x``.

        The trained model is left untouched: each snapshot is loaded into a clone.

        Args:
            x: inputs, as for ``model.predict``.
            batch_size: as for ``model.predict``.
            model: the architecture to load the snapshots into; defaults to the
                model the callback trained (a Functional or Sequential model).

        Returns:
            The element-wise mean of the snapshots' predictions, a NumPy array.

        Raises:
            ValueError: if no snapshot has been taken yet.
        """
        predictions = [
            member.predict(x, batch_size=batch_size, verbose=0)
            for _, member in self._members(model)
        ]
        return np.mean(predictions, axis=0)

    def ensemble(self, model: keras.Model | None = None) -> keras.Model:
        """A Keras model that averages the snapshots' outputs.

        ``ensemble(x) = mean over snapshots s of model_s(x)`` (``keras.layers.Average``);
        it can be evaluated, saved and served like any model.

        Args:
            model: the architecture, as for :meth:`predict`.

        Returns:
            A functional ``keras.Model`` with the model's inputs and one output.

        Raises:
            ValueError: if no snapshot has been taken yet, or the model has more
                than one output.
        """
        model = self.model if model is None else model
        if len(model.outputs) != 1:
            raise ValueError(
                f"ensemble() needs a model with one output; this one has {len(model.outputs)}. "
                "Use predict() and average each output yourself."
            )
        members = self._members(model)
        inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype) for t in model.inputs]
        inputs = inputs[0] if len(inputs) == 1 else inputs
        outputs = [
            keras.Model(member.inputs, member.outputs[0], name=f"snapshot_{snapshot.step}")(inputs)
            for snapshot, member in members
        ]
        average = outputs[0] if len(outputs) == 1 else keras.layers.Average()(outputs)
        return keras.Model(inputs, average, name="snapshot_ensemble")


def _whole_number(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


# --------------------------------------------------------------------------- ReduceLROnPlateau


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras's ``ReduceLROnPlateau``, also for an optimizer whose rate is a schedule.

    Same arguments and semantics as ``keras.callbacks.ReduceLROnPlateau``: when
    ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs, the rate
    is multiplied by ``factor`` (not below ``min_lr``), then ``cooldown`` epochs
    pass before counting again. Keras's version raises ``TypeError`` when the
    rate is a schedule; this one, when training begins, wraps every schedule in
    ``lrtools.schedules.Scaled(schedule)`` and lowers its ``factor`` instead, so
    the rate becomes ``factor * schedule(t)``: the schedule keeps its shape,
    scaled down. ``min_lr`` bounds the rate at the moment of a reduction (the
    new factor is at least ``min_lr / schedule(t)``); the schedule may go lower
    later on its own. A float rate is reduced exactly as Keras does.

    ``Scaled`` saves its current factor in the model's config, so a model saved to
    ``.keras`` reloads with the reduced rate and a resumed run continues from it
    (the patience and cooldown counters restart, as with Keras's callback). Each
    group of a ``MultiOptimizer`` is reduced on its own, as Keras reduces it.
    ``logs["learning_rate"]`` receives the rate (the largest group's for a
    ``MultiOptimizer``, whose groups are also logged as ``learning_rate_<name>``),
    as it stands before the epoch's reduction. On the JAX
    backend, where a compiled step reads the factor when it is traced, the train
    function is rebuilt after each reduction.

    Args:
        monitor, factor, patience, verbose, mode, min_delta, cooldown, min_lr:
            as for ``keras.callbacks.ReduceLROnPlateau``.

    Raises:
        ValueError: for ``factor >= 1`` (as Keras), ``factor <= 0``, a negative
            ``patience``, ``cooldown`` or ``min_lr``; when training begins, for an
            optimizer whose rate is a callable that is not a schedule.

    Example:

    >>> import keras, lrtools
    >>> optimizer = keras.optimizers.SGD(lrtools.schedules.CosineDecay(0.1, 10_000))
    >>> reduce = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3)
    >>> # model.fit(x, y, validation_data=(xv, yv), epochs=50, callbacks=[reduce])
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        **kwargs: Any,
    ):
        if not factor > 0:
            raise ValueError(f"factor must be in (0, 1); got {factor}.")
        for name, value in (("patience", patience), ("cooldown", cooldown), ("min_lr", min_lr)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0; got {value}.")
        super().__init__(
            monitor=monitor,
            factor=factor,
            patience=patience,
            verbose=verbose,
            mode=mode,
            min_delta=min_delta,
            cooldown=cooldown,
            min_lr=min_lr,
            **kwargs,
        )

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self.best = None
        wrapped = False
        for owner in rate_owners(self.model.optimizer):
            rate = owner._learning_rate
            if isinstance(rate, (schedules.Scaled, keras.Variable)):
                continue
            if not isinstance(rate, Schedule):
                raise ValueError(
                    f"Optimizer {owner.name!r} has the callable {rate!r} as its rate, which "
                    "ReduceLROnPlateau cannot scale: use a float or a LearningRateSchedule."
                )
            owner.learning_rate = schedules.Scaled(rate)
            wrapped = True
        if wrapped:
            _rebuild_train_function(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()  # delayed until the model's metrics are built, as Keras does
        logs = logs if logs is not None else {}
        owners = rate_owners(self.model.optimizer)
        rates = [_to_float(owner.learning_rate) for owner in owners]
        logs["learning_rate"] = max(rates)
        if len(owners) > 1:
            logs.update({f"learning_rate_{o.name}": r for o, r in zip(owners, rates, strict=True)})
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"Learning rate reduction is conditioned on metric `{self.monitor}` which is "
                f"not available. Available metrics are: {', '.join(logs)}.",
                stacklevel=2,
            )
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(owners, epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def _reduce(self, owners: list, epoch: int) -> bool:
        """Multiply each owner's rate by ``factor`` (not below ``min_lr``); True if any moved."""
        reduced = False
        for owner in owners:
            old_rate = _to_float(owner.learning_rate)
            if old_rate <= np.float32(self.min_lr):
                continue
            new_rate = max(old_rate * self.factor, self.min_lr)
            if isinstance(owner._learning_rate, schedules.Scaled):
                factor = owner._learning_rate.factor
                factor.assign(_to_float(factor) * new_rate / old_rate)
                if keras.backend.backend() == "jax":
                    _rebuild_train_function(self.model)
            else:
                owner.learning_rate = new_rate
            reduced = True
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate of "
                    f"{owner.name} to {new_rate}."
                )
        return reduced
