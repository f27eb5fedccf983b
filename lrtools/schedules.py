"""Learning-rate schedules: pure functions of the training step.

Every schedule here is a ``keras.optimizers.schedules.LearningRateSchedule``.
Pass one straight to an optimizer and Keras calls it with the optimizer's step
counter inside the compiled train step::

    optimizer = keras.optimizers.SGD(learning_rate=CosineDecay(0.1, decay_steps=1000))

The step ``t`` is counted from 0 (the first update uses ``schedule(0)``). Each
schedule

- is computed with ``keras.ops`` and never branches in Python on the value of
  the step, so it runs inside compiled train steps on the TensorFlow, JAX and
  PyTorch backends;
- accepts a scalar step or an array of steps: ``schedule(np.arange(1000))``
  returns 1,000 rates, which is how plots and tests look at a whole run;
- validates its arguments and raises ``ValueError`` with a clear message;
- round-trips through ``get_config`` / ``keras.saving`` (registered under the
  package name ``"lrtools"``), so a saved model reloads its schedule.

Composition is done by wrapping: :class:`Warmup` puts a linear warm-up in front
of any schedule, :class:`Sequential` runs schedules one after another, and
:class:`Scaled` multiplies a schedule by a factor that callbacks may change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceABC
from typing import Any

import keras
from keras import ops

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


# --------------------------------------------------------------------------- checks


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # numpy scalars are accepted through float(); anything else is refused.
        try:
            import numpy as np

            if isinstance(value, np.generic) and np.isreal(value):
                value = float(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"`{name}` must be a real number, got {value!r}.") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


def _check_positive(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value}.")
    return value


def _check_non_negative(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")
    return value


def _check_steps(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(_check_number(name, value)) != value:
        raise ValueError(f"`{name}` must be a whole number of steps, got {value!r}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def _check_fraction(name: str, value: Any, *, open_low: bool = True) -> float:
    value = _check_number(name, value)
    low_ok = value > 0 if open_low else value >= 0
    if not (low_ok and value <= 1):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"`{name}` must lie in {interval}, got {value}.")
    return value


def _check_final(final_lr: Any, initial_lr: float, initial_name: str) -> float:
    final_lr = _check_non_negative("final_lr", final_lr)
    if final_lr > initial_lr:
        raise ValueError(
            f"`final_lr` ({final_lr}) must not exceed `{initial_name}` ({initial_lr}): "
            "a decay ends at or below where it starts."
        )
    return final_lr


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}: expected one of {', '.join(choices)}.")
    return value


def as_schedule(value: Any) -> keras.optimizers.schedules.LearningRateSchedule:
    """Return ``value`` as a schedule: a number becomes :class:`Constant`.

    Args:
        value: a ``LearningRateSchedule`` (returned as it is) or a number >= 0.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule``.

    Raises:
        TypeError: if ``value`` is neither a schedule nor a number.

    Example:

    >>> float(as_schedule(0.1)(5))
    0.1...
    """
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(value)
    raise TypeError(
        "Expected a keras.optimizers.schedules.LearningRateSchedule or a number, "
        f"got {type(value).__name__}. Wrap a Python function of the epoch in "
        "lrtools.callbacks.LRScheduler instead."
    )


def _as_float_step(step: Any) -> Any:
    return ops.cast(ops.convert_to_tensor(step), _DTYPE)


def _power(base: float, exponent: Any) -> Any:
    """``base ** exponent`` for a Python ``base > 0``, as ``exp(exponent * log(base))``.

    Taking the logarithm of ``base`` in double precision keeps float32 results
    accurate for long runs (``0.997 ** 5000``), where ``ops.power`` loses digits.
    """
    return ops.exp(exponent * math.log(base))


def _cosine_fraction(fraction: Any) -> Any:
    """``0.5 * (1 + cos(pi * fraction))``: 1 at fraction 0, 0 at fraction 1."""
    return 0.5 * (1.0 + ops.cos(math.pi * fraction))


class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Shared plumbing: a readable repr, with wrapped schedules shown as themselves."""

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
        ValueError: if ``lr`` is negative or not finite.

    Example:

    >>> import numpy as np
    >>> tuple(Constant(0.01)(np.arange(3)).shape)
    (3,)
    """

    def __init__(self, lr: float):
        self.lr = _check_non_negative("lr", lr)

    def __call__(self, step: Any) -> Any:
        return ops.ones_like(_as_float_step(step)) * self.lr

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr}


@_register
class StepDecay(_Schedule):
    """Multiply the rate by ``drop`` every ``step_size`` steps (PyTorch's ``StepLR``).

    ``lr(t) = initial_lr * drop ** floor(t / step_size)``

    Args:
        initial_lr: the rate at step 0, > 0.
        drop: the factor applied at each drop, in (0, 1].
        step_size: steps between drops, >= 1.

    Raises:
        ValueError: for a non-positive rate, ``drop`` outside (0, 1] or ``step_size < 1``.

    Example (halve every 10 steps):

    >>> round(float(StepDecay(0.1, drop=0.5, step_size=10)(25)), 6)
    0.025
    """

    def __init__(self, initial_lr: float, drop: float, step_size: int):
        self.initial_lr = _check_positive("initial_lr", initial_lr)
        self.drop = _check_fraction("drop", drop)
        self.step_size = _check_steps("step_size", step_size)

    def __call__(self, step: Any) -> Any:
        t = _as_float_step(step)
        return self.initial_lr * _power(self.drop, ops.floor(t / self.step_size))

    def get_config(self) -> dict[str, Any]:
        return {"initial_lr": self.initial_lr, "drop": self.drop, "step_size": self.step_size}


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
        ValueError: for empty or unordered milestones, a non-positive rate, or
            ``gamma`` outside (0, 1].

    Example:

    >>> sched = MultiStepDecay(0.1, milestones=[100, 150])
    >>> [round(float(sched(t)), 6) for t in (99, 100, 150)]
    [0.1, 0.01, 0.001]
    """

    def __init__(self, initial_lr: float, milestones: SequenceABC[int], gamma: float = 0.1):
        self.initial_lr = _check_positive("initial_lr", initial_lr)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, SequenceABC):
            raise TypeError(f"`milestones` must be a list of steps, got {milestones!r}.")
        self.milestones = [_check_steps("milestones", m) for m in milestones]
        if not self.milestones:
            raise ValueError("`milestones` must hold at least one step.")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"`milestones` must be strictly increasing, got {self.milestones}.")
        self.gamma = _check_fraction("gamma", gamma)

    def __call__(self, step: Any) -> Any:
        t = ops.expand_dims(_as_float_step(step), -1)
        milestones = ops.convert_to_tensor(self.milestones, dtype=_DTYPE)
        passed = ops.sum(ops.cast(t >= milestones, _DTYPE), axis=-1)
        return self.initial_lr * _power(self.gamma, passed)

    def get_config(self) -> dict[str, Any]:
        return {"initial_lr": self.initial_lr, "milestones": self.milestones, "gamma": self.gamma}


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
        staircase: drop in whole steps of ``decay_steps`` instead of smoothly.

    Raises:
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
        self.initial_lr = _check_positive("initial_lr", initial_lr)
        self.decay_rate = _check_fraction("decay_rate", decay_rate)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.staircase = bool(staircase)

    def __call__(self, step: Any) -> Any:
        exponent = _as_float_step(step) / self.decay_steps
        if self.staircase:
            exponent = ops.floor(exponent)
        return self.initial_lr * _power(self.decay_rate, exponent)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
        }


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
        staircase: decay in whole units of ``decay_steps``.

    Raises:
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
        self.initial_lr = _check_positive("initial_lr", initial_lr)
        self.decay_rate = _check_non_negative("decay_rate", decay_rate)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.staircase = bool(staircase)

    def __call__(self, step: Any) -> Any:
        time = _as_float_step(step) / self.decay_steps
        if self.staircase:
            time = ops.floor(time)
        return self.initial_lr / (1.0 + self.decay_rate * time)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
        }


class _DecayToFinal(_Schedule):
    """Shared by the decays that fall from ``initial_lr`` to ``final_lr`` over
    ``decay_steps`` and then stay flat: ``lr = final + (initial - final) * g(f)``
    with ``f = min(t, T) / T`` and a shape ``g`` that goes from 1 to 0."""

    def __init__(self, initial_lr: float, decay_steps: int, final_lr: float = 0.0):
        self.initial_lr = _check_positive("initial_lr", initial_lr)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.final_lr = _check_final(final_lr, self.initial_lr, "initial_lr")

    def _remaining(self, fraction: Any) -> Any:
        raise NotImplementedError

    def __call__(self, step: Any) -> Any:
        fraction = ops.minimum(_as_float_step(step), self.decay_steps) / self.decay_steps
        return self.final_lr + (self.initial_lr - self.final_lr) * self._remaining(fraction)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "decay_steps": self.decay_steps,
            "final_lr": self.final_lr,
        }


@_register
class LinearDecay(_DecayToFinal):
    """A straight line from ``initial_lr`` to ``final_lr``, then flat (PyTorch's ``LinearLR``).

    ``lr(t) = final_lr + (initial_lr - final_lr) * (1 - min(t, T) / T)`` with ``T = decay_steps``.

    Args:
        initial_lr: the rate at step 0, > 0.
        decay_steps: the step T at which ``final_lr`` is reached, >= 1.
        final_lr: the rate from step T on, in [0, initial_lr].

    Raises:
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
        self.power = _check_positive("power", power)

    def _remaining(self, fraction: Any) -> Any:
        return ops.power(1.0 - fraction, self.power)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power}


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

    Args:
        initial_lr: the peak of the first cycle, > 0.
        first_cycle_steps: the length of the first cycle ``T_0``, >= 1.
        t_mul: how much longer each cycle is than the one before, >= 1.
        m_mul: how much lower each cycle's peak is than the one before, in (0, 1].
        final_lr: the rate each cycle anneals to, in [0, initial_lr].

    Raises:
        ValueError: for a non-positive rate, ``first_cycle_steps < 1``,
            ``t_mul < 1``, ``m_mul`` outside (0, 1] or ``final_lr`` outside [0, initial_lr].

    Example (cycles of 10, 20, 40 steps):

    >>> sched = CosineRestarts(0.1, first_cycle_steps=10, t_mul=2.0)
    >>> [round(float(sched(t)), 6) for t in (0, 10, 30)]
    [0.1, 0.1, 0.1]
    """

    def __init__(
        self,
        initial_lr: float,
        first_cycle_steps: int,
        t_mul: float = 1.0,
        m_mul: float = 1.0,
        final_lr: float = 0.0,
    ):
        self.initial_lr = _check_positive("initial_lr", initial_lr)
        self.first_cycle_steps = _check_steps("first_cycle_steps", first_cycle_steps)
        self.t_mul = _check_number("t_mul", t_mul)
        if self.t_mul < 1:
            raise ValueError(f"`t_mul` must be >= 1 (cycles never shrink), got {self.t_mul}.")
        self.m_mul = _check_fraction("m_mul", m_mul)
        self.final_lr = _check_final(final_lr, self.initial_lr, "initial_lr")

    def _cycle_start(self, cycle: Any) -> Any:
        """The first step of cycle ``cycle`` (a float tensor)."""
        if self.t_mul == 1.0:
            return cycle * self.first_cycle_steps
        growth = (_power(self.t_mul, cycle) - 1.0) / (self.t_mul - 1.0)
        return self.first_cycle_steps * growth

    def __call__(self, step: Any) -> Any:
        t = _as_float_step(step)
        if self.t_mul == 1.0:
            cycle = ops.floor(t / self.first_cycle_steps)
        else:
            # Invert start(i) = T0 (t_mul^i - 1) / (t_mul - 1), then correct the
            # float rounding of the logarithm exactly at the cycle boundaries
            # (steps are whole numbers; a start within rounding of t counts as reached).
            ratio = 1.0 + t * (self.t_mul - 1.0) / self.first_cycle_steps
            cycle = ops.floor(ops.log(ratio) / math.log(self.t_mul))
            next_start = self._cycle_start(cycle + 1.0)
            cycle = ops.where(t >= next_start * (1.0 - 1e-6), cycle + 1.0, cycle)
            this_start = self._cycle_start(cycle)
            cycle = ops.where(t < this_start * (1.0 - 1e-6), cycle - 1.0, cycle)
        length = self.first_cycle_steps * _power(self.t_mul, cycle)
        fraction = ops.maximum(t - self._cycle_start(cycle), 0.0) / length
        peak = _power(self.m_mul, cycle)
        amplitude = self.initial_lr - self.final_lr
        return self.final_lr + amplitude * peak * _cosine_fraction(fraction)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "first_cycle_steps": self.first_cycle_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "final_lr": self.final_lr,
        }


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
        self.base_lr = _check_positive("base_lr", base_lr)
        self.max_lr = _check_positive("max_lr", max_lr)
        if self.max_lr <= self.base_lr:
            raise ValueError(
                f"`max_lr` ({self.max_lr}) must be greater than `base_lr` ({self.base_lr})."
            )
        self.step_size = _check_steps("step_size", step_size)
        self.mode = _check_choice("mode", mode, self.MODES)
        self.gamma = _check_fraction("gamma", gamma)

    def __call__(self, step: Any) -> Any:
        t = _as_float_step(step)
        cycle = ops.floor(1.0 + t / (2.0 * self.step_size))
        # Position inside the current cycle first: exact for whole-number steps.
        in_cycle = t - 2.0 * self.step_size * (cycle - 1.0)
        x = ops.abs(in_cycle / self.step_size - 1.0)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = _power(0.5, cycle - 1.0)
        else:
            scale = _power(self.gamma, t)
        return self.base_lr + (self.max_lr - self.base_lr) * ops.maximum(0.0, 1.0 - x) * scale

    def get_config(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
        }


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
    ``lrtools.callbacks.OneCycle`` applies to the optimizer.

    Args:
        max_lr: the peak rate, > 0.
        total_steps: the length of the run in steps, >= 2.
        pct_start: the fraction of the run spent rising, in (0, 1);
            ``pct_start * total_steps`` must exceed 1.
        div_factor: the starting rate is ``max_lr / div_factor``, > 0.
        final_div_factor: the final rate is the starting rate / ``final_div_factor``, > 0.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        three_phase: use the symmetric three-phase variant.

    Raises:
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
        self.max_lr = _check_positive("max_lr", max_lr)
        self.total_steps = _check_steps("total_steps", total_steps, minimum=2)
        self.pct_start = _check_number("pct_start", pct_start)
        if not 0 < self.pct_start < 1:
            raise ValueError(f"`pct_start` must lie in (0, 1), got {self.pct_start}.")
        self.div_factor = _check_positive("div_factor", div_factor)
        self.final_div_factor = _check_positive("final_div_factor", final_div_factor)
        self.anneal_strategy = _check_choice("anneal_strategy", anneal_strategy, self.STRATEGIES)
        self.three_phase = bool(three_phase)
        self._ends = self._phase_ends()

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

    def _interpolate(self, step: Any, values: list[tuple[float, float]]) -> Any:
        """Piecewise anneal over the phases; ``values`` holds (start, end) per phase."""
        t = ops.minimum(_as_float_step(step), self.total_steps - 1.0)
        result = None
        phase_start = 0.0
        for (start_value, end_value), phase_end in zip(values, self._ends):
            fraction = (t - phase_start) / (phase_end - phase_start)
            if self.anneal_strategy == "cos":
                value = end_value + (start_value - end_value) * _cosine_fraction(fraction)
            else:
                value = start_value + (end_value - start_value) * fraction
            # Later phases take over once the step passes the previous phase's end.
            result = value if result is None else ops.where(t > phase_start, value, result)
            phase_start = phase_end
        return result

    def __call__(self, step: Any) -> Any:
        peak, low, final = self.max_lr, self.initial_lr, self.min_lr
        if self.three_phase:
            return self._interpolate(step, [(low, peak), (peak, low), (low, final)])
        return self._interpolate(step, [(low, peak), (peak, final)])

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
            ValueError: if the momenta are outside [0, 1) or out of order.
        """
        base = _check_number("base_momentum", base_momentum)
        top = _check_number("max_momentum", max_momentum)
        if not 0 <= base <= top < 1:
            raise ValueError(
                "Need 0 <= base_momentum <= max_momentum < 1, got "
                f"base_momentum={base}, max_momentum={top}."
            )
        if self.three_phase:
            return self._interpolate(step, [(top, base), (base, top), (top, top)])
        return self._interpolate(step, [(top, base), (base, top)])

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal_strategy": self.anneal_strategy,
            "three_phase": self.three_phase,
        }


# --------------------------------------------------------------------------- composition


def _serialize(schedule: keras.optimizers.schedules.LearningRateSchedule) -> Any:
    return keras.saving.serialize_keras_object(schedule)


def _deserialize(config: Any) -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.saving.deserialize_keras_object(config)


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
        ValueError: for ``warmup_steps < 1`` or a negative ``initial_lr``.
        TypeError: if ``schedule`` is neither a schedule nor a number.

    Example:

    >>> sched = Warmup(CosineDecay(0.1, decay_steps=100), warmup_steps=10)
    >>> [round(float(sched(t)), 6) for t in (0, 5, 10)]
    [0.0, 0.05, 0.1]
    """

    def __init__(self, schedule: Any, warmup_steps: int, initial_lr: float = 0.0):
        self.schedule = as_schedule(schedule)
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps)
        self.initial_lr = _check_non_negative("initial_lr", initial_lr)

    def __call__(self, step: Any) -> Any:
        t = _as_float_step(step)
        target = self.schedule(ops.zeros_like(t))
        warm = self.initial_lr + (target - self.initial_lr) * (t / self.warmup_steps)
        after = self.schedule(ops.maximum(t - self.warmup_steps, 0.0))
        return ops.where(t < self.warmup_steps, warm, after)

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": _serialize(self.schedule),
            "warmup_steps": self.warmup_steps,
            "initial_lr": self.initial_lr,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Warmup:
        config = dict(config)
        config["schedule"] = _deserialize(config["schedule"])
        return cls(**config)


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
    lengths, which is why it is popular for training language models.

    Args:
        peak_lr: the rate of the stable phase, > 0.
        warmup_steps: the length of the warm-up, >= 0 (0: start at the peak).
        stable_steps: the length of the stable phase, >= 0.
        decay_steps: the length of the decay, >= 1.
        final_lr: the rate at the end of the decay, in [0, peak_lr].
        decay: ``"linear"``, ``"cosine"`` or ``"sqrt"``.

    Raises:
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
        self.peak_lr = _check_positive("peak_lr", peak_lr)
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps, minimum=0)
        self.stable_steps = _check_steps("stable_steps", stable_steps, minimum=0)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.final_lr = _check_final(final_lr, self.peak_lr, "peak_lr")
        self.decay = _check_choice("decay", decay, self.DECAYS)

    def __call__(self, step: Any) -> Any:
        t = _as_float_step(step)
        decay_start = float(self.warmup_steps + self.stable_steps)
        p = ops.clip((t - decay_start) / self.decay_steps, 0.0, 1.0)
        if self.decay == "linear":
            remaining = 1.0 - p
        elif self.decay == "cosine":
            remaining = _cosine_fraction(p)
        else:
            remaining = 1.0 - ops.sqrt(p)
        rate = self.final_lr + (self.peak_lr - self.final_lr) * remaining
        if self.warmup_steps == 0:
            return rate
        warm = self.peak_lr * t / self.warmup_steps
        return ops.where(t < self.warmup_steps, warm, rate)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "stable_steps": self.stable_steps,
            "decay_steps": self.decay_steps,
            "final_lr": self.final_lr,
            "decay": self.decay,
        }


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
        self.boundaries = [_check_steps("boundaries", b) for b in boundaries]
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"Got {len(self.schedules)} `schedules` and {len(self.boundaries)} `boundaries`: "
                "give one boundary fewer than schedules."
            )
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"`boundaries` must be strictly increasing, got {self.boundaries}.")

    def __call__(self, step: Any) -> Any:
        t = _as_float_step(step)
        rate = self.schedules[0](t)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            later = schedule(ops.maximum(t - boundary, 0.0))
            rate = ops.where(t >= boundary, later, rate)
        return rate

    def get_config(self) -> dict[str, Any]:
        return {
            "schedules": [_serialize(s) for s in self.schedules],
            "boundaries": self.boundaries,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        config = dict(config)
        config["schedules"] = [_deserialize(s) for s in config["schedules"]]
        return cls(**config)


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

    Raises:
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
            _check_non_negative("factor", factor),
            dtype=_DTYPE,
            trainable=False,
            name="lr_factor",
        )

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * ops.cast(self.factor, _DTYPE)

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": _serialize(self.schedule),
            "factor": float(ops.convert_to_numpy(self.factor)),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Scaled:
        config = dict(config)
        config["schedule"] = _deserialize(config["schedule"])
        return cls(**config)
