"""Learning-rate schedules: pure functions of the training step.

Every schedule here is a ``keras.optimizers.schedules.LearningRateSchedule``.
Pass one straight to an optimizer and Keras calls it with the optimizer's step
counter inside the compiled train step::

    optimizer = keras.optimizers.SGD(learning_rate=CosineDecay(0.1, decay_steps=1000))

The step ``t`` is counted from 0 (the first update uses ``schedule(0)``); a
negative step counts as step 0. Each schedule

- is computed with ``keras.ops`` and never branches in Python on the value of
  the step, so it runs inside compiled train steps on the TensorFlow, JAX and
  PyTorch backends;
- accepts a scalar step or an array of steps: ``schedule(np.arange(1000))``
  returns 1,000 rates, which is how plots and tests look at a whole run;
- keeps whole-number steps (``optimizer.iterations``, ``np.arange``) as integers
  while it finds the position inside a cycle or a phase, so a cyclic schedule at
  step 10**9 gives the rate of its formula, where float32 steps are 64 apart;
- validates its arguments: ``TypeError`` for a wrong type (a string for a number,
  ``1`` for a flag), ``ValueError`` for a value outside the documented domain;
- round-trips through ``get_config`` / ``keras.saving`` (registered under the
  package name ``"lrtools"``), so a saved model reloads its schedule;
- says through its ``is_pure`` property whether its rate depends on the step
  alone (every schedule here except :class:`Scaled`, whose factor may change, and
  anything wrapping one), so that callbacks may evaluate it ahead for a block of steps.

Composition is done by wrapping: :class:`Warmup` puts a linear warm-up in front
of any schedule, :class:`Sequential` runs schedules one after another, and
:class:`Scaled` multiplies a schedule by a factor that callbacks may change.
:class:`WarmupStableDecay` and :class:`OneCycle` are themselves built that way,
from ramps joined by :class:`Sequential`, as optax builds its warm-up schedules
with ``join_schedules``.
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
from collections.abc import Sequence as SequenceABC
from typing import Any

import keras
import numpy as np
from keras import ops

from lrtools._checks import (
    check_choice,
    check_count,
    check_flag,
    check_fraction,
    check_non_negative,
    check_rate,
    check_real,
)

__all__ = [
    "Constant",
    "StepDecay",
    "MultiStepDecay",
    "ExponentialDecay",
    "TimeDecay",
    "LinearDecay",
    "PolynomialDecay",
    "CosineDecay",
    "CosineRestarts",
    "CyclicLR",
    "OneCycle",
    "Warmup",
    "WarmupStableDecay",
    "Sequential",
    "Scaled",
    "as_schedule",
]

_DTYPE = "float32"
_PACKAGE = "lrtools"
_LRSchedule = keras.optimizers.schedules.LearningRateSchedule


# --------------------------------------------------------------------------- checks


def _check_final(final_lr: Any, initial_lr: float, initial_name: str) -> float:
    final_lr = check_non_negative("final_lr", final_lr)
    if final_lr > initial_lr:
        raise ValueError(
            f"`final_lr` ({final_lr}) must not exceed `{initial_name}` ({initial_lr}): "
            "a decay ends at or below where it starts."
        )
    return final_lr


def _check_steps(name: str, values: Any) -> list[int]:
    """Strictly increasing whole steps >= 1 (milestones, boundaries)."""
    if isinstance(values, str | bytes) or not isinstance(values, SequenceABC):
        raise TypeError(f"`{name}` must be a list of steps, got {values!r}.")
    steps = [check_count(name, value) for value in values]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"`{name}` must be strictly increasing, got {steps}.")
    return steps


def as_schedule(value: Any) -> keras.optimizers.schedules.LearningRateSchedule:
    """Return ``value`` as a schedule: a number becomes :class:`Constant`.

    Args:
        value: a ``LearningRateSchedule`` (returned as it is) or a number >= 0.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule``.

    Raises:
        TypeError: if ``value`` is neither a schedule nor a number.
        ValueError: if it is a negative or non-finite number.

    Example:

    >>> float(as_schedule(0.1)(5))
    0.1...
    """
    if isinstance(value, _LRSchedule):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return Constant(value)
    raise TypeError(
        "Expected a keras.optimizers.schedules.LearningRateSchedule or a number, "
        f"got {type(value).__name__}. Wrap a Python function of the epoch in "
        "lrtools.callbacks.LRScheduler instead."
    )


# --------------------------------------------------------------------------- step arithmetic


def _is_integer(t: Any) -> bool:
    return "int" in keras.backend.standardize_dtype(t.dtype)


def _float(t: Any) -> Any:
    return ops.cast(t, _DTYPE)


def _step(step: Any) -> Any:
    """``step`` as a tensor, negative steps raised to 0.

    Whole-number steps stay integers (int64, or int32 under JAX without x64), so
    that cycle and phase arithmetic on them is exact however long the run; any
    other step becomes float32.
    """
    t = ops.convert_to_tensor(step)
    if not _is_integer(t):
        t = _float(t)
    return ops.maximum(t, ops.zeros_like(t))


def _divmod(t: Any, divisor: int) -> tuple[Any, Any]:
    """``(floor(t / divisor), t - divisor * floor(t / divisor))`` as float32.

    For integer ``t`` (from :func:`_step`) both are computed in integers before the
    cast, so the position inside a cycle is exact at step 10**9.
    """
    if _is_integer(t):
        whole = ops.floor_divide(t, divisor)
        return _float(whole), _float(t - whole * divisor)
    whole = ops.floor(t / divisor)
    return whole, t - whole * divisor


def _locate(t: Any, starts: SequenceABC[float]) -> tuple[Any, Any]:
    """The index of the last of the increasing ``starts`` (``starts[0] == 0``) that
    ``t`` has reached, and ``t - starts[index]`` as float32.

    For integer ``t`` the comparison and the subtraction use each start's first whole
    step, in ``t``'s own dtype, and only the fractional remainder is a float: exact
    for any step, where float32 steps past 2**24 are not whole numbers any more.
    """
    starts = np.asarray(starts, np.float64)
    if _is_integer(t):
        dtype = keras.backend.standardize_dtype(t.dtype)
        firsts = np.minimum(np.ceil(starts), float(min(np.iinfo(dtype).max, 2**62)))
        table = ops.convert_to_tensor(firsts.astype(dtype))
        behind = ops.convert_to_tensor((firsts - starts).astype(np.float32))
    else:
        table = ops.convert_to_tensor(starts.astype(np.float32))
        behind = ops.zeros_like(table)
    reached = ops.cast(ops.expand_dims(t, -1) >= table, "int32")
    index = ops.maximum(ops.sum(reached, axis=-1) - 1, 0)
    offset = _float(t - ops.take(table, index)) + ops.take(behind, index)
    return index, offset


def _power(base: float, exponent: Any) -> Any:
    """``base ** exponent`` for a Python ``base > 0``, as ``exp(exponent * log(base))``.

    Taking the logarithm of ``base`` in double precision keeps float32 results
    accurate for long runs (``0.997 ** 5000``), where ``ops.power`` loses digits.
    """
    return ops.exp(exponent * math.log(base))


def _cosine_fraction(fraction: Any) -> Any:
    """``0.5 * (1 + cos(pi * fraction))``: 1 at fraction 0, 0 at fraction 1."""
    return 0.5 * (1.0 + ops.cos(math.pi * fraction))


# --------------------------------------------------------------------------- the base class


def _to_config(value: Any) -> Any:
    if isinstance(value, keras.Variable):
        return float(ops.convert_to_numpy(value))
    if isinstance(value, _LRSchedule):
        return keras.saving.serialize_keras_object(value)
    if isinstance(value, list | tuple):
        return [_to_config(item) for item in value]
    return value


def _from_config(value: Any) -> Any:
    if isinstance(value, dict) and "class_name" in value:
        return keras.saving.deserialize_keras_object(value)
    if isinstance(value, list):
        return [_from_config(item) for item in value]
    return value


def _part_is_pure(value: Any) -> bool:
    if isinstance(value, keras.Variable):
        return False
    if isinstance(value, _LRSchedule):
        return getattr(value, "is_pure", False)
    if isinstance(value, list | tuple):
        return all(_part_is_pure(item) for item in value)
    return True


class _Schedule(_LRSchedule):
    """What every lrtools schedule shares: its config, ``is_pure`` and a readable repr.

    The config is derived once, here, from the constructor: each argument of
    ``__init__`` is stored under its own name as an attribute, and ``get_config``
    reads them back. A nested schedule is stored with
    ``keras.saving.serialize_keras_object`` and a ``keras.Variable`` as its current
    value; ``from_config`` reverses both.
    """

    @classmethod
    def _arguments(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as plain values (nested schedules serialized)."""
        return {name: _to_config(getattr(self, name)) for name in self._arguments()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Schedule:
        """Build the schedule back from :meth:`get_config`'s output."""
        return cls(**{name: _from_config(value) for name, value in config.items()})

    @property
    def is_pure(self) -> bool:
        """Whether the rate is a function of the step alone (``True`` for every schedule here
        except one holding a ``keras.Variable`` at any depth, such as :class:`Scaled`'s
        factor). A pure schedule may be evaluated ahead for a whole block of steps; a
        composite schedule is pure when all its parts are, and a schedule from another
        library counts as pure only if it says so through its own ``is_pure``.
        """
        return all(_part_is_pure(value) for value in vars(self).values())

    def __repr__(self) -> str:
        parts = []
        for key, value in self.get_config().items():
            attribute = getattr(self, key, value)
            shown = value if isinstance(attribute, keras.Variable) else attribute
            parts.append(f"{key}={shown!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _register(cls: type) -> type:
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)


# --------------------------------------------------------------------------- constant and decays


@_register
class Constant(_Schedule):
    """A constant learning rate: ``lr(t) = lr``.

    Useful as a piece of :class:`Sequential` or as the target of :class:`Warmup`.

    Args:
        lr: the rate, >= 0 (0 freezes training for as long as it is in force).

    Raises:
        TypeError: if ``lr`` is not a real number.
        ValueError: if ``lr`` is negative or not finite.

    Example:

    >>> import numpy as np
    >>> tuple(Constant(0.01)(np.arange(3)).shape)
    (3,)
    """

    def __init__(self, lr: float):
        self.lr = check_non_negative("lr", lr)

    def __call__(self, step: Any) -> Any:
        return ops.ones_like(_float(_step(step))) * self.lr


@_register
class StepDecay(_Schedule):
    """Multiply the rate by ``drop`` every ``step_size`` steps (PyTorch's ``StepLR``).

    ``lr(t) = initial_lr * drop ** floor(t / step_size)``

    Args:
        initial_lr: the rate at step 0, > 0.
        drop: the factor applied at each drop, in (0, 1].
        step_size: steps between drops, >= 1.

    Raises:
        TypeError: for an argument that is not a number.
        ValueError: for a non-positive rate, ``drop`` outside (0, 1] or ``step_size < 1``.

    Example (halve every 10 steps):

    >>> round(float(StepDecay(0.1, drop=0.5, step_size=10)(25)), 6)
    0.025
    """

    def __init__(self, initial_lr: float, drop: float, step_size: int):
        self.initial_lr = check_rate("initial_lr", initial_lr)
        self.drop = check_fraction("drop", drop)
        self.step_size = check_count("step_size", step_size)

    def __call__(self, step: Any) -> Any:
        drops, _ = _divmod(_step(step), self.step_size)
        return self.initial_lr * _power(self.drop, drops)


@_register
class MultiStepDecay(_Schedule):
    """Multiply the rate by ``gamma`` at each milestone (PyTorch's ``MultiStepLR``).

    ``lr(t) = initial_lr * gamma ** (number of milestones m with m <= t)``

    This is the classic ResNet recipe: for example ``milestones=[30, 60, 80]`` epochs'
    worth of steps with ``gamma=0.1``.

    Args:
        initial_lr: the rate at step 0, > 0.
        milestones: strictly increasing steps (>= 1) at which the rate drops.
        gamma: the factor applied at each milestone, in (0, 1].

    Raises:
        TypeError: if ``milestones`` is not a list of numbers, or a number is not one.
        ValueError: for empty or unordered milestones, a non-positive rate, or
            ``gamma`` outside (0, 1].

    Example:

    >>> sched = MultiStepDecay(0.1, milestones=[100, 150])
    >>> [round(float(sched(t)), 6) for t in (99, 100, 150)]
    [0.1, 0.01, 0.001]
    """

    def __init__(self, initial_lr: float, milestones: SequenceABC[int], gamma: float = 0.1):
        self.initial_lr = check_rate("initial_lr", initial_lr)
        self.milestones = _check_steps("milestones", milestones)
        if not self.milestones:
            raise ValueError("`milestones` must hold at least one step.")
        self.gamma = check_fraction("gamma", gamma)

    def __call__(self, step: Any) -> Any:
        passed, _ = _locate(_step(step), [0, *self.milestones])
        return self.initial_lr * _power(self.gamma, _float(passed))


@_register
class ExponentialDecay(_Schedule):
    """Exponential decay (Keras's ``ExponentialDecay``; PyTorch's ``ExponentialLR``).

    ``lr(t) = initial_lr * decay_rate ** (t / decay_steps)``, with the exponent
    floored when ``staircase`` is true. The articles' form ``lr0 * exp(-k t)`` is
    ``decay_rate = exp(-k)`` with ``decay_steps=1``.

    Args:
        initial_lr: the rate at step 0, > 0.
        decay_rate: the factor per ``decay_steps`` steps, in (0, 1].
        decay_steps: steps over which the rate is multiplied by ``decay_rate``, >= 1.
        staircase: drop in whole steps of ``decay_steps`` instead of smoothly
            (a ``bool``).

    Raises:
        TypeError: for a number that is not one, or a ``staircase`` that is not a bool.
        ValueError: for a non-positive rate, ``decay_rate`` outside (0, 1] or
            ``decay_steps < 1``.

    Example:

    >>> round(float(ExponentialDecay(1.0, decay_rate=0.5, decay_steps=10)(20)), 6)
    0.25
    """

    def __init__(
        self,
        initial_lr: float,
        decay_rate: float,
        decay_steps: int = 1,
        staircase: bool = False,
    ):
        self.initial_lr = check_rate("initial_lr", initial_lr)
        self.decay_rate = check_fraction("decay_rate", decay_rate)
        self.decay_steps = check_count("decay_steps", decay_steps)
        self.staircase = check_flag("staircase", staircase)

    def __call__(self, step: Any) -> Any:
        whole, rest = _divmod(_step(step), self.decay_steps)
        exponent = whole if self.staircase else whole + rest / self.decay_steps
        return self.initial_lr * _power(self.decay_rate, exponent)


@_register
class TimeDecay(_Schedule):
    """Inverse-time ("time-based") decay (Keras's ``InverseTimeDecay``).

    ``lr(t) = initial_lr / (1 + decay_rate * t / decay_steps)``, with
    ``t / decay_steps`` floored when ``staircase`` is true. The rate is computed
    from the step, not compounded epoch after epoch.

    Args:
        initial_lr: the rate at step 0, > 0.
        decay_rate: the decay coefficient k, >= 0.
        decay_steps: the unit of time, >= 1.
        staircase: decay in whole units of ``decay_steps`` (a ``bool``).

    Raises:
        TypeError: for a number that is not one, or a ``staircase`` that is not a bool.
        ValueError: for a non-positive rate, a negative ``decay_rate`` or ``decay_steps < 1``.

    Example:

    >>> round(float(TimeDecay(0.1, decay_rate=1.0, decay_steps=10)(10)), 6)
    0.05
    """

    def __init__(
        self,
        initial_lr: float,
        decay_rate: float,
        decay_steps: int = 1,
        staircase: bool = False,
    ):
        self.initial_lr = check_rate("initial_lr", initial_lr)
        self.decay_rate = check_non_negative("decay_rate", decay_rate)
        self.decay_steps = check_count("decay_steps", decay_steps)
        self.staircase = check_flag("staircase", staircase)

    def __call__(self, step: Any) -> Any:
        whole, rest = _divmod(_step(step), self.decay_steps)
        time = whole if self.staircase else whole + rest / self.decay_steps
        return self.initial_lr / (1.0 + self.decay_rate * time)


class _DecayToFinal(_Schedule):
    """Shared by the decays that fall from ``initial_lr`` to ``final_lr`` over
    ``decay_steps`` and then stay flat: ``lr = final + (initial - final) * g(f)``
    with ``f = min(t, T) / T`` and a shape ``g`` that goes from 1 to 0."""

    def __init__(self, initial_lr: float, decay_steps: int, final_lr: float = 0.0):
        self.initial_lr = check_rate("initial_lr", initial_lr)
        self.decay_steps = check_count("decay_steps", decay_steps)
        self.final_lr = _check_final(final_lr, self.initial_lr, "initial_lr")

    def _remaining(self, fraction: Any) -> Any:
        raise NotImplementedError

    def __call__(self, step: Any) -> Any:
        done = _float(ops.minimum(_step(step), self.decay_steps))
        fraction = done / self.decay_steps
        return self.final_lr + (self.initial_lr - self.final_lr) * self._remaining(fraction)


@_register
class LinearDecay(_DecayToFinal):
    """A straight line from ``initial_lr`` to ``final_lr``, then flat (PyTorch's ``LinearLR``).

    ``lr(t) = final_lr + (initial_lr - final_lr) * (1 - min(t, T) / T)`` with ``T = decay_steps``.

    Args:
        initial_lr: the rate at step 0, > 0.
        decay_steps: the step T at which ``final_lr`` is reached, >= 1.
        final_lr: the rate from step T on, in [0, initial_lr].

    Raises:
        TypeError: for an argument that is not a number.
        ValueError: for a non-positive rate, ``decay_steps < 1`` or ``final_lr``
            outside [0, initial_lr].

    Example:

    >>> round(float(LinearDecay(0.1, decay_steps=100)(25)), 6)
    0.075
    """

    def _remaining(self, fraction: Any) -> Any:
        return 1.0 - fraction


@_register
class PolynomialDecay(_DecayToFinal):
    """Polynomial decay to ``final_lr`` (Keras's ``PolynomialDecay`` without ``cycle``).

    ``lr(t) = (initial_lr - final_lr) * (1 - min(t, T) / T) ** power + final_lr``
    with ``T = decay_steps``. ``power=1`` is :class:`LinearDecay`; with
    ``final_lr=0`` this is PyTorch's ``PolynomialLR``.

    Args:
        initial_lr: the rate at step 0, > 0.
        decay_steps: the step T at which ``final_lr`` is reached, >= 1.
        final_lr: the rate from step T on, in [0, initial_lr].
        power: the exponent, > 0 (above 1 the rate falls fast early; below 1, late).

    Raises:
        TypeError: for an argument that is not a number.
        ValueError: for a non-positive rate or power, ``decay_steps < 1``, or
            ``final_lr`` outside [0, initial_lr].

    Example:

    >>> round(float(PolynomialDecay(0.1, decay_steps=100, power=2.0)(50)), 6)
    0.025
    """

    def __init__(
        self,
        initial_lr: float,
        decay_steps: int,
        final_lr: float = 0.0,
        power: float = 1.0,
    ):
        super().__init__(initial_lr, decay_steps, final_lr)
        self.power = check_rate("power", power)

    def _remaining(self, fraction: Any) -> Any:
        return ops.power(1.0 - fraction, self.power)


@_register
class CosineDecay(_DecayToFinal):
    """Cosine annealing to ``final_lr`` (Loshchilov & Hutter, 2017), then flat.

    ``lr(t) = final_lr + (initial_lr - final_lr) * (1 + cos(pi * min(t, T) / T)) / 2``
    with ``T = decay_steps``. Equals Keras's ``CosineDecay`` with
    ``alpha = final_lr / initial_lr``.

    Args:
        initial_lr: the rate at step 0, > 0.
        decay_steps: the step T at which ``final_lr`` is reached, >= 1.
        final_lr: the rate from step T on, in [0, initial_lr].

    Raises:
        TypeError: for an argument that is not a number.
        ValueError: for a non-positive rate, ``decay_steps < 1`` or ``final_lr``
            outside [0, initial_lr].

    Example:

    >>> round(float(CosineDecay(0.1, decay_steps=100)(50)), 6)
    0.05
    """

    def _remaining(self, fraction: Any) -> Any:
        return _cosine_fraction(fraction)


@_register
class CosineRestarts(_Schedule):
    """Cosine annealing with warm restarts: SGDR (Loshchilov & Hutter, 2017).

    Cycle ``i`` (from 0) lasts ``T_i = first_cycle_steps * t_mul**i`` steps. Inside
    it, with ``f`` the fraction of the cycle done,

    ``lr = final_lr + (initial_lr - final_lr) * m_mul**i * (1 + cos(pi * f)) / 2``

    so each cycle restarts at a peak of ``final_lr + (initial_lr - final_lr) * m_mul**i``
    and anneals to ``final_lr``. Equals Keras's ``CosineDecayRestarts`` with
    ``alpha = final_lr / initial_lr``, and PyTorch's ``CosineAnnealingWarmRestarts``
    (``T_0 = first_cycle_steps``, ``T_mult = t_mul``, ``eta_min = final_lr``) when
    ``m_mul = 1`` and ``t_mul`` is a whole number.

    The cycle a whole-number step falls in, and the position inside it, are exact
    at any step (the cycles' starts are tabulated in double precision); only beyond
    the first 1,024 cycles, when ``t_mul`` is so close to 1 that they end before
    step 2**62, are they computed from the closed form in float32.

    Args:
        initial_lr: the peak of the first cycle, > 0.
        first_cycle_steps: the length of the first cycle ``T_0``, >= 1.
        t_mul: how much longer each cycle is than the one before, >= 1.
        m_mul: how much lower each cycle's peak is than the one before, in (0, 1].
        final_lr: the rate each cycle anneals to, in [0, initial_lr].

    Raises:
        TypeError: for an argument that is not a number.
        ValueError: for a non-positive rate, ``first_cycle_steps < 1``,
            ``t_mul < 1``, ``m_mul`` outside (0, 1] or ``final_lr`` outside [0, initial_lr].

    Example (cycles of 10, 20, 40 steps):

    >>> sched = CosineRestarts(0.1, first_cycle_steps=10, t_mul=2.0)
    >>> [round(float(sched(t)), 6) for t in (0, 10, 30)]
    [0.1, 0.1, 0.1]
    """

    TABLE = 1024  # cycles whose starts are tabulated

    def __init__(
        self,
        initial_lr: float,
        first_cycle_steps: int,
        t_mul: float = 1.0,
        m_mul: float = 1.0,
        final_lr: float = 0.0,
    ):
        self.initial_lr = check_rate("initial_lr", initial_lr)
        self.first_cycle_steps = check_count("first_cycle_steps", first_cycle_steps)
        self.t_mul = check_real("t_mul", t_mul)
        if self.t_mul < 1:
            raise ValueError(f"`t_mul` must be >= 1 (cycles never shrink), got {self.t_mul}.")
        self.m_mul = check_fraction("m_mul", m_mul)
        self.final_lr = _check_final(final_lr, self.initial_lr, "initial_lr")
        self._starts, self._lengths = [0.0], [float(self.first_cycle_steps)]
        while self.t_mul > 1 and len(self._starts) < self.TABLE and self._starts[-1] < 2.0**62:
            # Accumulated one cycle at a time in float64, as the cycles are walked.
            self._starts.append(self._starts[-1] + self._lengths[-1])
            self._lengths.append(self._lengths[-1] * self.t_mul)

    def _closed_form(self, t: Any) -> tuple[Any, Any]:
        """Cycle and fraction from ``start(i) = T0 (t_mul^i - 1) / (t_mul - 1)`` in float32,
        for steps past the tabulated cycles; a start within rounding of ``t`` counts."""
        t, m, first = _float(t), self.t_mul, self.first_cycle_steps

        def start(cycle: Any) -> Any:
            return first * (_power(m, cycle) - 1.0) / (m - 1.0)

        cycle = ops.floor(ops.log(1.0 + t * (m - 1.0) / first) / math.log(m))
        cycle = ops.where(t >= start(cycle + 1.0) * (1.0 - 1e-6), cycle + 1.0, cycle)
        cycle = ops.where(t < start(cycle) * (1.0 - 1e-6), cycle - 1.0, cycle)
        return cycle, ops.maximum(t - start(cycle), 0.0) / (first * _power(m, cycle))

    def _cycle(self, t: Any) -> tuple[Any, Any]:
        """The cycle ``t`` is in (float32) and the fraction of it done."""
        if self.t_mul == 1.0:
            cycle, offset = _divmod(t, self.first_cycle_steps)
            return cycle, offset / self.first_cycle_steps
        index, offset = _locate(t, self._starts)
        lengths = ops.convert_to_tensor(np.asarray(self._lengths, np.float32))
        cycle, fraction = _float(index), offset / ops.take(lengths, index)
        if len(self._starts) == self.TABLE:
            late_cycle, late_fraction = self._closed_form(t)
            late = _float(t) >= self._starts[-1] + self._lengths[-1]
            cycle = ops.where(late, late_cycle, cycle)
            fraction = ops.where(late, late_fraction, fraction)
        return cycle, fraction

    def __call__(self, step: Any) -> Any:
        cycle, fraction = self._cycle(_step(step))
        amplitude = (self.initial_lr - self.final_lr) * _power(self.m_mul, cycle)
        return self.final_lr + amplitude * _cosine_fraction(fraction)


# --------------------------------------------------------------------------- cyclical


@_register
class CyclicLR(_Schedule):
    """Cyclical learning rates (Smith, 2017): a triangle between two bounds.

    With ``s = step_size``, ``cycle = floor(1 + t / (2 s))`` and
    ``x = |t / s - 2 cycle + 1|``:

    ``lr(t) = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale``

    where ``scale`` is 1 (``"triangular"``), ``1 / 2**(cycle - 1)``
    (``"triangular2"``: the amplitude halves every cycle) or ``gamma**t``
    (``"exp_range"``). These are PyTorch's ``CyclicLR`` rates with
    ``step_size_up = step_size_down = step_size``.

    Args:
        base_lr: the lower bound, > 0.
        max_lr: the upper bound, > base_lr.
        step_size: steps in half a cycle (Smith suggests 2-10 epochs' worth), >= 1.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: the per-step amplitude factor of ``"exp_range"``, in (0, 1].

    Raises:
        TypeError: for a number that is not one, or a ``mode`` that is not a string.
        ValueError: for non-positive rates, ``max_lr <= base_lr``, ``step_size < 1``,
            an unknown mode or ``gamma`` outside (0, 1].

    Example:

    >>> sched = CyclicLR(0.001, 0.006, step_size=100)
    >>> [round(float(sched(t)), 6) for t in (0, 100, 200)]
    [0.001, 0.006, 0.001]
    """

    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size: int,
        mode: str = "triangular",
        gamma: float = 1.0,
    ):
        self.base_lr = check_rate("base_lr", base_lr)
        self.max_lr = check_rate("max_lr", max_lr)
        if self.max_lr <= self.base_lr:
            raise ValueError(
                f"`max_lr` ({self.max_lr}) must be greater than `base_lr` ({self.base_lr})."
            )
        self.step_size = check_count("step_size", step_size)
        self.mode = check_choice("mode", mode, self.MODES)
        self.gamma = check_fraction("gamma", gamma)

    def __call__(self, step: Any) -> Any:
        t = _step(step)
        # Whole cycles done and the position inside this one: exact for integer steps.
        cycles, in_cycle = _divmod(t, 2 * self.step_size)
        x = ops.abs(in_cycle / self.step_size - 1.0)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = _power(0.5, cycles)
        else:
            scale = _power(self.gamma, _float(t))
        return self.base_lr + (self.max_lr - self.base_lr) * ops.maximum(0.0, 1.0 - x) * scale


_SHAPES = {
    "linear": lambda p: 1.0 - p,
    "cos": _cosine_fraction,
    "sqrt": lambda p: 1.0 - ops.sqrt(p),
}


class _Ramp(_Schedule):
    """From ``start`` to ``end`` over ``length`` steps along ``shape``, then flat at ``end``.

    ``lr(s) = end + (start - end) * g(p)`` with ``p = clip((s + offset) / length, 0, 1)``
    and ``g(p) = 1 - p`` (``"linear"``), ``(1 + cos(pi p)) / 2`` (``"cos"``) or
    ``1 - sqrt(p)`` (``"sqrt"``). ``offset`` puts step 0 part-way into the ramp, for
    phases that start between two whole steps. A building block of
    :class:`WarmupStableDecay` and :class:`OneCycle`.
    """

    def __init__(
        self, start: float, end: float, length: float, shape: str = "linear", offset: float = 0.0
    ):
        self.start = check_non_negative("start", start)
        self.end = check_non_negative("end", end)
        self.length = check_rate("length", length)
        self.shape = check_choice("shape", shape, _SHAPES)
        self.offset = check_non_negative("offset", offset)

    def __call__(self, step: Any) -> Any:
        p = ops.clip((_float(_step(step)) + self.offset) / self.length, 0.0, 1.0)
        return self.end + (self.start - self.end) * _SHAPES[self.shape](p)


def _join(parts: list[Any], firsts: list[int]) -> Any:
    """``parts`` one after another, part ``k`` from step ``firsts[k]`` (``firsts[0] == 0``)."""
    return parts[0] if len(parts) == 1 else Sequential(parts, firsts[1:])


def _anneal(values: list[float], ends: list[float], shape: str) -> Any:
    """Phase ``k`` ramps from ``values[k]`` to ``values[k + 1]`` and ends at ``ends[k]``.

    Phase ``k`` starts where phase ``k - 1`` ends (the first at 0), and a step belongs
    to the first phase ending at or after it, as in PyTorch's ``OneCycleLR``. The ends
    need not be whole steps: each phase's ramp starts at the first whole step past
    its start, that far into the ramp; a phase that holds no whole step is dropped.
    """
    parts: list[Any] = []
    firsts: list[int] = []
    start = 0.0
    for k, end in enumerate(ends):
        first = 0 if k == 0 else math.floor(start) + 1
        ramp = _Ramp(values[k], values[k + 1], end - start, shape, offset=first - start)
        if firsts and firsts[-1] == first:
            parts[-1] = ramp
        else:
            parts.append(ramp)
            firsts.append(first)
        start = end
    return _join(parts, firsts)


@_register
class OneCycle(_Schedule):
    """The one-cycle policy (Smith & Topin, 2019): the rates of PyTorch's ``OneCycleLR``.

    The rate starts at ``max_lr / div_factor``, rises to ``max_lr`` over the first
    ``pct_start`` of the run, then anneals to ``max_lr / (div_factor * final_div_factor)``
    at step ``total_steps - 1`` and stays there. Each phase interpolates from its
    start value ``a`` to its end value ``b`` with ``p`` the fraction of the phase done:

    - ``anneal_strategy="cos"``: ``b + (a - b) * (1 + cos(pi * p)) / 2``
    - ``anneal_strategy="linear"``: ``a + (b - a) * p``

    Two phases end at steps ``pct_start * total_steps - 1`` and ``total_steps - 1``.
    With ``three_phase=True`` the rate comes back down to the starting rate
    symmetrically (ending at ``2 * pct_start * total_steps - 2``) before the final
    annealing, as fastai's original version did.

    :meth:`momentum` gives the matching inverse momentum cycle, which
    ``lrtools.callbacks.OneCycle`` applies to the optimizer. Both are ramps joined
    by :class:`Sequential`; the phases' ends need not be whole steps.

    Args:
        max_lr: the peak rate, > 0.
        total_steps: the length of the run in steps, >= 2.
        pct_start: the fraction of the run spent rising, in (0, 1);
            ``pct_start * total_steps`` must exceed 1.
        div_factor: the starting rate is ``max_lr / div_factor``, > 0.
        final_div_factor: the final rate is the starting rate / ``final_div_factor``, > 0.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        three_phase: use the symmetric three-phase variant (a ``bool``).

    Raises:
        TypeError: for a number that is not one, a strategy that is not a string or a
            ``three_phase`` that is not a bool.
        ValueError: for non-positive arguments, ``pct_start`` outside (0, 1), too
            few steps for the phases, or an unknown ``anneal_strategy``.

    Example:

    >>> sched = OneCycle(0.1, total_steps=100)
    >>> [round(float(sched(t)), 6) for t in (0, 29, 99)]
    [0.004, 0.1, 0.0]
    """

    STRATEGIES = ("cos", "linear")

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
    ):
        self.max_lr = check_rate("max_lr", max_lr)
        self.total_steps = check_count("total_steps", total_steps, minimum=2)
        self.pct_start = check_fraction("pct_start", pct_start, high_open=True)
        self.div_factor = check_rate("div_factor", div_factor)
        self.final_div_factor = check_rate("final_div_factor", final_div_factor)
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, self.STRATEGIES)
        self.three_phase = check_flag("three_phase", three_phase)
        self._ends = self._phase_ends()
        low, peak = self.initial_lr, self.max_lr
        middle = [low, peak, low] if self.three_phase else [low, peak]
        self._rates = _anneal([*middle, self.min_lr], self._ends, self.anneal_strategy)

    def _phase_ends(self) -> list[float]:
        rise_end = self.pct_start * self.total_steps - 1.0
        last = self.total_steps - 1.0
        ends = [rise_end, 2.0 * rise_end, last] if self.three_phase else [rise_end, last]
        starts = [0.0, *ends[:-1]]
        if any(end <= start for start, end in zip(starts, ends)):
            raise ValueError(
                f"`total_steps`={self.total_steps} with `pct_start`={self.pct_start} leaves "
                "a phase with no steps: raise total_steps, or move pct_start "
                + ("below 0.5." if self.three_phase else "so that pct_start * total_steps > 1.")
            )
        return ends

    @property
    def initial_lr(self) -> float:
        """The rate at step 0, ``max_lr / div_factor``."""
        return self.max_lr / self.div_factor

    @property
    def min_lr(self) -> float:
        """The final rate, ``initial_lr / final_div_factor``."""
        return self.initial_lr / self.final_div_factor

    def __call__(self, step: Any) -> Any:
        return self._rates(step)

    def momentum(self, step: Any, base_momentum: float = 0.85, max_momentum: float = 0.95) -> Any:
        """The momentum that mirrors the rate: high when the rate is low, and back.

        It falls from ``max_momentum`` to ``base_momentum`` while the rate rises and
        climbs back while the rate anneals (it stays at ``max_momentum`` during the
        third phase of the three-phase variant), as PyTorch's ``OneCycleLR`` does.

        Args:
            step: a step or an array of steps.
            base_momentum: the momentum at the peak rate, in [0, 1).
            max_momentum: the momentum at the start and end, in [base_momentum, 1).

        Returns:
            The momentum (SGD's ``momentum`` or Adam's ``beta_1``) at ``step``.

        Raises:
            TypeError: if a momentum is not a real number.
            ValueError: if the momenta are outside [0, 1) or out of order.
        """
        base = check_real("base_momentum", base_momentum)
        top = check_real("max_momentum", max_momentum)
        if not 0 <= base <= top < 1:
            raise ValueError(
                "Need 0 <= base_momentum <= max_momentum < 1, got "
                f"base_momentum={base}, max_momentum={top}."
            )
        values = [top, base, top, top] if self.three_phase else [top, base, top]
        return _anneal(values, self._ends, self.anneal_strategy)(step)


# --------------------------------------------------------------------------- composition


@_register
class Warmup(_Schedule):
    """A linear warm-up in front of any schedule.

    With ``W = warmup_steps`` and ``target = schedule(0)``:

    - ``t < W``: ``lr(t) = initial_lr + (target - initial_lr) * t / W``
    - ``t >= W``: ``lr(t) = schedule(t - W)``

    so the wrapped schedule starts its own clock when the warm-up ends.
    ``Warmup(CosineDecay(peak, T, final_lr=a * peak), W, initial_lr=lr0)`` equals
    Keras's ``CosineDecay(lr0, T, alpha=a, warmup_target=peak, warmup_steps=W)``.

    Args:
        schedule: any ``LearningRateSchedule``, or a number for a constant rate.
        warmup_steps: the length of the warm-up, >= 1.
        initial_lr: the rate at step 0, in [0, schedule(0)].

    Raises:
        TypeError: if ``schedule`` is neither a schedule nor a number, or a number
            argument is not one.
        ValueError: for ``warmup_steps < 1``, or ``initial_lr`` outside
            [0, schedule(0)] (a warm-up climbs to the schedule's first rate).

    Example:

    >>> sched = Warmup(CosineDecay(0.1, decay_steps=100), warmup_steps=10)
    >>> [round(float(sched(t)), 6) for t in (0, 5, 10)]
    [0.0, 0.05, 0.1]
    """

    def __init__(self, schedule: Any, warmup_steps: int, initial_lr: float = 0.0):
        self.schedule = as_schedule(schedule)
        self.warmup_steps = check_count("warmup_steps", warmup_steps)
        self.initial_lr = check_non_negative("initial_lr", initial_lr)
        target = float(ops.convert_to_numpy(self.schedule(0)))
        if self.initial_lr > target * (1 + 1e-6):  # float32 slack on the target
            raise ValueError(
                f"`initial_lr` ({self.initial_lr}) must not exceed the wrapped schedule's "
                f"rate at step 0 ({target:g}): a warm-up climbs to it."
            )

    def __call__(self, step: Any) -> Any:
        t = _step(step)
        target = self.schedule(ops.zeros_like(t))
        warm = self.initial_lr + (target - self.initial_lr) * (_float(t) / self.warmup_steps)
        after = self.schedule(ops.maximum(t - self.warmup_steps, ops.zeros_like(t)))
        return ops.where(t < self.warmup_steps, warm, after)


@_register
class WarmupStableDecay(_Schedule):
    """Warm-up, a long flat stretch at the peak, then a short decay ("WSD").

    With ``W``, ``S``, ``D`` the three lengths and ``p = clip((t - W - S) / D, 0, 1)``:

    - ``t < W``: ``lr = peak_lr * t / W`` (linear warm-up from 0)
    - ``W <= t < W + S``: ``lr = peak_lr``
    - afterwards ``lr = final_lr + (peak_lr - final_lr) * g(p)`` with
      ``g(p) = 1 - p`` (``"linear"``), ``(1 + cos(pi p)) / 2`` (``"cosine"``) or
      ``1 - sqrt(p)`` (``"sqrt"``).

    The flat stretch means one run can be branched into decays of several
    lengths, which is why it is popular for training language models. It is three
    pieces joined by :class:`Sequential`: a linear ramp, a :class:`Constant`, and a
    ramp of the decay's shape.

    Args:
        peak_lr: the rate of the stable phase, > 0.
        warmup_steps: the length of the warm-up, >= 0 (0: start at the peak).
        stable_steps: the length of the stable phase, >= 0.
        decay_steps: the length of the decay, >= 1.
        final_lr: the rate at the end of the decay, in [0, peak_lr].
        decay: ``"linear"``, ``"cosine"`` or ``"sqrt"``.

    Raises:
        TypeError: for a number that is not one, or a ``decay`` that is not a string.
        ValueError: for a non-positive ``peak_lr``, negative lengths,
            ``decay_steps < 1``, ``final_lr`` outside [0, peak_lr] or an unknown decay.

    Example:

    >>> sched = WarmupStableDecay(0.1, warmup_steps=10, stable_steps=80, decay_steps=10)
    >>> [round(float(sched(t)), 6) for t in (5, 50, 95, 100)]
    [0.05, 0.1, 0.05, 0.0]
    """

    DECAYS = ("linear", "cosine", "sqrt")

    def __init__(
        self,
        peak_lr: float,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        final_lr: float = 0.0,
        decay: str = "linear",
    ):
        self.peak_lr = check_rate("peak_lr", peak_lr)
        self.warmup_steps = check_count("warmup_steps", warmup_steps, minimum=0)
        self.stable_steps = check_count("stable_steps", stable_steps, minimum=0)
        self.decay_steps = check_count("decay_steps", decay_steps)
        self.final_lr = _check_final(final_lr, self.peak_lr, "peak_lr")
        self.decay = check_choice("decay", decay, self.DECAYS)
        shape = {"cosine": "cos"}.get(self.decay, self.decay)
        pieces = [
            (_Ramp(0.0, self.peak_lr, max(self.warmup_steps, 1)), self.warmup_steps),
            (Constant(self.peak_lr), self.stable_steps),
            (_Ramp(self.peak_lr, self.final_lr, self.decay_steps, shape), self.decay_steps),
        ]
        kept = [(part, length) for part, length in pieces if length > 0]
        firsts = list(itertools.accumulate(length for _, length in kept[:-1]))
        self._rates = _join([part for part, _ in kept], [0, *firsts])

    def __call__(self, step: Any) -> Any:
        return self._rates(step)


@_register
class Sequential(_Schedule):
    """Run schedules one after another (optax's ``join_schedules``).

    Schedule ``k`` takes over at step ``boundaries[k - 1]`` and sees its own step,
    counted from 0 there:

    ``lr(t) = schedules[k](t - boundaries[k - 1])`` for
    ``boundaries[k - 1] <= t < boundaries[k]``.

    Args:
        schedules: two or more schedules (numbers become :class:`Constant`).
        boundaries: ``len(schedules) - 1`` strictly increasing steps, each >= 1.

    Raises:
        TypeError: if ``schedules`` or ``boundaries`` is not a list, or holds
            something that is neither a schedule nor a number.
        ValueError: if the counts do not match or the boundaries are not
            strictly increasing positive steps.

    Example (a constant rate, then a cosine decay from step 100):

    >>> sched = Sequential([0.1, CosineDecay(0.1, decay_steps=100)], boundaries=[100])
    >>> [round(float(sched(t)), 6) for t in (99, 100, 150)]
    [0.1, 0.1, 0.05]
    """

    def __init__(self, schedules: SequenceABC[Any], boundaries: SequenceABC[int]):
        if isinstance(schedules, (str, bytes)) or not isinstance(schedules, SequenceABC):
            raise TypeError(f"`schedules` must be a list of schedules, got {schedules!r}.")
        if len(schedules) < 2:
            raise ValueError("`schedules` must hold at least two schedules to join.")
        self.schedules = [as_schedule(s) for s in schedules]
        self.boundaries = _check_steps("boundaries", boundaries)
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"Got {len(self.schedules)} `schedules` and {len(self.boundaries)} `boundaries`: "
                "give one boundary fewer than schedules."
            )

    def __call__(self, step: Any) -> Any:
        t = _step(step)
        rate = self.schedules[0](t)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            later = schedule(ops.maximum(t - boundary, ops.zeros_like(t)))
            rate = ops.where(t >= boundary, later, rate)
        return rate


@_register
class Scaled(_Schedule):
    """A schedule multiplied by a factor that training code may lower.

    ``lr(t) = factor * schedule(t)``

    ``factor`` is a non-trainable ``keras.Variable``, so a callback can
    ``assign`` a new value between steps (``lrtools.callbacks.ReduceLROnPlateau``
    does) while the schedule's shape is kept. ``get_config`` stores the factor's
    current value, so a model saved to ``.keras`` reloads with it. On the JAX
    backend a compiled train step reads the factor when it is traced: code that
    changes it must rebuild the train function (the lrtools callbacks do).

    Args:
        schedule: any ``LearningRateSchedule``, or a number for a constant rate.
        factor: the starting factor, >= 0.

    It is the one schedule here that is not pure (``is_pure`` is ``False``):
    its rate depends on the factor as well as on the step.

    Raises:
        TypeError: if ``schedule`` is neither a schedule nor a number, or ``factor``
            is not a number.
        ValueError: for a negative or non-finite factor.

    Example:

    >>> sched = Scaled(CosineDecay(0.1, decay_steps=100))
    >>> _ = sched.factor.assign(0.5)
    >>> round(float(sched(0)), 6)
    0.05
    """

    def __init__(self, schedule: Any, factor: float = 1.0):
        self.schedule = as_schedule(schedule)
        self.factor = keras.Variable(
            check_non_negative("factor", factor),
            dtype=_DTYPE,
            trainable=False,
            name="lr_factor",
        )

    def __call__(self, step: Any) -> Any:
        return self.schedule(_step(step)) * ops.cast(self.factor, _DTYPE)
