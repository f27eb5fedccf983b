"""``OneCycle``: the one-cycle rate with the momentum cycled inversely, in the compiled step.

Public through :mod:`lrtools.callbacks`; see its docstring.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from lrtools import schedules
from lrtools._checks import check_flag
from lrtools._rates import rate_owners
from lrtools._scheduler import LRScheduler

# A stand-in length that lets the constructor check the other arguments when the
# real one is only known once ``fit`` starts.
_PROBE_STEPS = 1_000_000


class _MomentumCycle:
    """Make each momentum-owning optimizer read its momentum from the step, in the graph.

    Keras optimizers keep ``momentum`` / ``beta_1`` as Python floats, which the
    compiled train step bakes in as constants. This wraps each owner's
    ``update_step`` so that the momentum is computed from ``optimizer.iterations``
    inside the traced step (a pure function of the step, so it also holds after
    a resume). The train function must be traced while attached (:meth:`attached`).

    - Adam-family optimizers (``Adam``, ``AdamW``, ``Adamax``, ``Lamb``, ``Lion``)
      read ``beta_1`` only inside ``update_step``: the float is swapped for the
      step's value while the original ``update_step`` runs.
    - ``SGD`` branches in Python on ``momentum != 0``, so its float cannot be
      swapped for a tensor: its update rule (Keras's, ``v <- m * v - lr * g``, then
      ``w += v``, or ``w += m * v - lr * g`` with Nesterov) runs with the step's
      ``m``, with no more operations than Keras's own step.
    """

    BETA_1_OPTIMIZERS = (
        keras.optimizers.Adam,
        keras.optimizers.Adamax,
        keras.optimizers.Lamb,
        keras.optimizers.Lion,
    )

    BACKENDS = ("tensorflow", "jax")

    def __init__(self, momentum_at: Callable[[Any], Any]):
        self.momentum_at = momentum_at
        self._patched: list[keras.optimizers.Optimizer] = []
        self._optimizer: keras.optimizers.Optimizer | None = None
        self._steps: list[tuple[keras.optimizers.Optimizer, Callable]] = []

    @classmethod
    def check_backend(cls) -> None:
        """Raise ``ValueError`` on a backend whose train step this cannot patch (PyTorch)."""
        if keras.backend.backend() not in cls.BACKENDS:
            raise ValueError(
                "Momentum cycling supports the TensorFlow and JAX backends, not "
                f"{keras.backend.backend()!r}: pass cycle_momentum=False to cycle the rate "
                "alone, or train on TensorFlow or JAX (KERAS_BACKEND)."
            )

    @classmethod
    def check(cls, optimizer: keras.optimizers.Optimizer) -> None:
        """Raise ``ValueError`` if any rate owner's momentum cannot be cycled."""
        cls.check_backend()
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
        if self._optimizer is not optimizer:  # the patched steps are built once per optimizer
            self._optimizer, self._steps = optimizer, []
            for owner in rate_owners(optimizer):
                original = type(owner).update_step.__get__(owner)
                build = self._sgd_update if isinstance(owner, keras.optimizers.SGD) else None
                build = build or self._beta_1_update
                self._steps.append((owner, build(owner, optimizer, original)))
        for owner, update_step in self._steps:
            vars(owner)["update_step"] = update_step  # a plain attribute: no tracking, no cost
            self._patched.append(owner)

    def detach(self) -> None:
        for owner in self._patched:
            vars(owner).pop("update_step", None)
        self._patched = []

    @contextlib.contextmanager
    def attached(self, optimizer: keras.optimizers.Optimizer) -> Iterator[None]:
        """Patch ``optimizer`` for the duration of a ``with`` block, and put it back."""
        self.attach(optimizer)
        try:
            yield
        finally:
            self.detach()

    def _momentum(self, step_owner: keras.optimizers.Optimizer, dtype: Any) -> Any:
        return ops.cast(self.momentum_at(step_owner.iterations), dtype)

    def _sgd_update(self, owner, step_owner, original) -> Callable:
        # Keras's SGD update rule with the step's momentum: no more operations than Keras's.
        def update_step(gradient: Any, variable: Any, learning_rate: Any) -> None:
            learning_rate = ops.cast(learning_rate, variable.dtype)
            gradient = ops.cast(gradient, variable.dtype)
            momentum = self._momentum(step_owner, variable.dtype)
            velocity = owner.momentums[owner._get_variable_index(variable)]
            step = ops.multiply(gradient, learning_rate)
            owner.assign(velocity, ops.subtract(ops.multiply(velocity, momentum), step))
            if owner.nesterov:
                owner.assign_add(variable, ops.subtract(ops.multiply(velocity, momentum), step))
            else:
                owner.assign_add(variable, velocity)

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

    The rate at step ``t`` (``optimizer.iterations``) is ``schedule(t)``, a
    :class:`lrtools.schedules.OneCycle`: it rises from ``max_lr / div_factor`` to
    ``max_lr`` over the first ``pct_start`` of the run and anneals to
    ``max_lr / (div_factor * final_div_factor)``; after ``total_steps`` it stays at
    the final rate, and the callback warns once (PyTorch's ``OneCycleLR`` raises).
    With ``cycle_momentum=True`` the momentum (SGD's ``momentum``, or ``beta_1`` of
    Adam, AdamW, Adamax, Lamb and Lion) follows
    ``schedule.momentum(t, base_momentum, max_momentum)``: ``max_momentum`` when the
    rate is low, ``base_momentum`` at the peak rate.

    Give either the schedule, ``OneCycle(schedule=schedules.OneCycle(0.1, 1000))``,
    or the schedule's own arguments, ``OneCycle(0.1, 1000, pct_start=0.25)``, which
    are passed to :class:`lrtools.schedules.OneCycle` (documented there) as they are.
    ``total_steps`` may then be left out: when training begins it is taken from the
    fit, ``epochs * steps per epoch`` (``self.params``), and ``schedule`` is built.

    Keras bakes ``momentum`` / ``beta_1`` into the compiled train step as Python
    constants, so setting the attribute would change nothing. This callback
    instead makes the compiled step compute the momentum from the step counter
    (``_MomentumCycle``), on TensorFlow and JAX and under ``tf.distribute``; on
    the PyTorch backend the constructor refuses ``cycle_momentum=True``. The
    optimizer is patched only while the compiled step runs, and the step traced
    with the patch is dropped when ``fit`` ends, returns or raises
    (``lrtools._fit_guard``), so the next ``fit`` trains with the compiled momentum.
    The rate is set as by :class:`LRScheduler` (``unit="batch"``, computed in the
    compiled step, the same rule for a ``MultiOptimizer``). The momentum of each
    step is kept in ``momenta`` (filled with ``steps`` / ``rates`` at the end of
    each epoch) and the last one of each epoch is logged as ``momentum``; the
    warning for a run past ``total_steps`` comes at the end of that epoch.

    Args:
        *args: ``max_lr``, ``total_steps`` and the further positional arguments of
            :class:`lrtools.schedules.OneCycle`; ``total_steps`` may be None.
        schedule: a ready :class:`lrtools.schedules.OneCycle`, instead of its arguments.
        cycle_momentum: whether to cycle the momentum.
        base_momentum: the momentum at the peak rate, in [0, 1).
        max_momentum: the momentum at the start and end, in [base_momentum, 1).
        **kwargs: the keyword arguments of :class:`lrtools.schedules.OneCycle`
            (``max_lr``, ``total_steps``, ``pct_start``, ``div_factor``,
            ``final_div_factor``, ``anneal_strategy``, ``three_phase``).

    Raises:
        TypeError: for both a schedule and its arguments, neither, a schedule that is
            not a ``schedules.OneCycle``, or a ``cycle_momentum`` that is not a bool.
        ValueError: for invalid schedule arguments or momenta; for
            ``cycle_momentum=True`` on the PyTorch backend; when training begins, if
            ``cycle_momentum`` is set and the optimizer is SGD without momentum or an
            optimizer with neither ``momentum`` nor ``beta_1``, or if ``total_steps``
            was left out and the fit has no known number of steps per epoch.

    Example:

    >>> one_cycle = OneCycle(max_lr=0.1)  # total_steps from the fit
    >>> # model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), ...)
    >>> # model.fit(x, y, epochs=10, callbacks=[one_cycle])
    >>> same = OneCycle(schedule=schedules.OneCycle(0.1, total_steps=1000))
    """

    def __init__(
        self,
        *args: Any,
        schedule: schedules.OneCycle | None = None,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        **kwargs: Any,
    ):
        self._arguments = _schedule_arguments(schedule, args, kwargs)
        self._from_fit = self._arguments is not None and self._arguments["total_steps"] is None
        if self._arguments is not None:
            # Built now to check every argument; rebuilt from the fit's length if left out.
            schedule = _build_schedule(self._arguments, _PROBE_STEPS if self._from_fit else None)
        super().__init__(_unset if self._from_fit else schedule, unit="batch")
        self.cycle_momentum = check_flag("cycle_momentum", cycle_momentum)
        if self.cycle_momentum:
            _MomentumCycle.check_backend()
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        schedule.momentum(0, base_momentum, max_momentum)  # checks the momenta now
        self.momenta: list[float] = []
        self._cycle = _MomentumCycle(self.momentum_at)
        self._optimizer: keras.optimizers.Optimizer | None = None
        self._warned_past_end = False

    @property
    def total_steps(self) -> int | None:
        """The length of the cycle in steps; None until a fit gives it, if left out."""
        return getattr(self.schedule, "total_steps", None)

    def momentum_at(self, step: Any) -> Any:
        """The momentum at ``step`` (a step, an array of steps or a tensor)."""
        return self.schedule.momentum(step, self.base_momentum, self.max_momentum)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._from_fit:
            self._set_schedule(_build_schedule(self._arguments, _fit_length(self.params)))
        self._warned_past_end = False
        if self.cycle_momentum:
            _MomentumCycle.check(self.model.optimizer)
            self._optimizer = self.model.optimizer
        super().on_train_begin(logs)  # the guarded step enters ``_step_scope``
        if self.cycle_momentum and self._in_step is None:
            # A custom loop (no model.fit to guard): the momentum is patched until
            # on_train_end, which such a loop must call in a ``finally``.
            self._cycle.attach(self._optimizer)

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        if self.cycle_momentum:
            self._cycle.detach()

    def _step_scope(self) -> contextlib.AbstractContextManager:
        if not self.cycle_momentum:
            return contextlib.nullcontext()
        return self._cycle.attached(self._optimizer)

    def _recorded(self, first: int) -> None:
        steps = self.steps[first:]
        if self.cycle_momentum:
            momenta = ops.convert_to_numpy(self.momentum_at(np.asarray(steps)))
            self.momenta.extend(np.asarray(momenta, np.float64).reshape(-1).tolist())
        total = self.schedule.total_steps
        past = [index for index, step in enumerate(steps) if step >= total]
        if past and not self._warned_past_end:
            self._warned_past_end = True
            step, rate = steps[past[0]], self.rates[first + past[0]]
            warnings.warn(
                f"OneCycle: training goes past total_steps={total} (now at step {step}); the "
                f"rate stays at its final value {rate:.3g}. Raise total_steps, or leave it out "
                "to take it from the fit.",
                stacklevel=2,
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if logs is not None and self.momenta:
            logs["momentum"] = self.momenta[-1]


def _unset(step: Any) -> float:
    """The schedule of a ``OneCycle`` whose ``total_steps`` comes from the fit, until then."""
    raise RuntimeError("OneCycle's schedule is built when training begins.")


def _schedule_arguments(
    schedule: schedules.OneCycle | None, args: tuple, kwargs: dict
) -> dict[str, Any] | None:
    """The arguments of ``schedules.OneCycle`` by name, or None when ``schedule`` is given.

    Raises:
        TypeError: for both a schedule and arguments, neither, a schedule of another
            class, or arguments ``schedules.OneCycle`` does not take.
    """
    if schedule is not None:
        if args or kwargs:
            raise TypeError(
                "OneCycle takes a schedule or the arguments of one, not both: got "
                f"schedule={schedule!r} and {args or kwargs}."
            )
        if not isinstance(schedule, schedules.OneCycle):
            raise TypeError(
                f"`schedule` must be a lrtools.schedules.OneCycle, got {type(schedule).__name__}."
            )
        return None
    try:
        bound = inspect.signature(schedules.OneCycle).bind_partial(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"OneCycle: {error} (the arguments of schedules.OneCycle).") from None
    if "max_lr" not in bound.arguments:
        raise TypeError("OneCycle needs max_lr, or schedule=schedules.OneCycle(...).")
    return {"total_steps": None, **bound.arguments}


def _fit_length(params: dict) -> int:
    """The number of steps of a fit, ``epochs * steps per epoch``, from ``Callback.params``."""
    epochs, steps = params.get("epochs"), params.get("steps")
    if not epochs or not steps:
        raise ValueError(
            "OneCycle was given no total_steps and cannot tell the length of this fit "
            f"(epochs={epochs}, steps per epoch={steps}): pass total_steps, or give fit "
            "data of known length or steps_per_epoch."
        )
    return int(epochs) * int(steps)


def _build_schedule(arguments: dict[str, Any], total_steps: int | None) -> schedules.OneCycle:
    """``schedules.OneCycle`` from its arguments, with ``total_steps`` if one is given."""
    if total_steps is not None:
        arguments = {**arguments, "total_steps": total_steps}
    return schedules.OneCycle(**arguments)


def _public_signature() -> inspect.Signature:
    """``OneCycle``'s signature as users call it: the schedule's arguments, then its own.

    Derived from ``schedules.OneCycle`` (not declared twice), so that ``help()``, the
    API page and ``inspect.signature`` show every argument and its default.
    """
    optional = ("max_lr", "total_steps")  # optional here: a schedule, or the fit's length
    schedule_parameters = [
        parameter.replace(default=None) if parameter.name in optional else parameter
        for parameter in inspect.signature(schedules.OneCycle).parameters.values()
    ]
    own = [
        parameter
        for parameter in inspect.signature(OneCycle.__init__).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return inspect.Signature([*schedule_parameters, *own])


OneCycle.__signature__ = _public_signature()
