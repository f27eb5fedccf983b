"""The rate of a batch-level ``LRScheduler`` computed inside the compiled train step.

A callback that assigns the rate before every batch pays, at every step, an eager
read of ``optimizer.iterations`` (a wait for the step before to finish) and an
eager assignment: 16-24 % of a 1.6 ms step. While ``fit`` runs, ``LRScheduler``
instead lets the compiled step compute the rate. Around each call of the step
(``lrtools._fit_guard``) each rate owner reads its rate from a :class:`StepRate`
(Keras's accessor ``_get_current_learning_rate`` is shadowed by an instance
attribute); the step traced so reads the rate from the step counter, and the
callback has nothing left to do per batch. The owner's rate object is never
replaced: outside the step it reads its own variable, which the step keeps at the
next step's rate, so callbacks, ``optimizer.learning_rate`` and a model saved
mid-fit see a plain float rate, as without this module.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

Schedule = keras.optimizers.schedules.LearningRateSchedule


class StepRate(Schedule):
    """``ratio * rate(t)`` at the step ``t`` of ``step_owner``, computed in the compiled step.

    Each call also assigns ``ratio * rate(t + 1)`` to ``variable`` (the owner's own
    rate variable), so that between steps the optimizer shows the rate of the next
    step, as Keras's ``optimizer.learning_rate`` does for a schedule.

    Args:
        rate: a ``LearningRateSchedule`` (or a :class:`RateTable`) of the step.
        ratio: this group's rate over the largest group's (``_rates.group_ratios``).
        variable: the owner's rate variable, which sets the dtype of the rate.
        step_owner: the optimizer whose ``iterations`` is the step (``model.optimizer``).
    """

    def __init__(self, rate: Schedule, ratio: float, variable: Any, step_owner: Any):
        self.rate = rate
        self.ratio = float(ratio)
        self.variable = variable
        self.step_owner = step_owner

    def value(self, step: Any) -> Any:
        """``ratio * rate(step)`` in the variable's dtype."""
        rate = ops.cast(self.rate(step), self.variable.dtype)
        return rate if self.ratio == 1.0 else rate * self.ratio

    def __call__(self, step: Any) -> Any:
        step = self.step_owner.iterations  # one counter for every group, as the callback's
        self.variable.assign(self.value(step + 1))
        return self.value(step)

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError("StepRate lives inside one train step and is never saved.")


class RateTable(Schedule):
    """The rates of a pure Python function for the steps of one epoch, indexed in the step.

    ``rate(t) = values[clip(t - first, 0, len(values) - 1)]``; :meth:`fill` puts in the
    next epoch's values between epochs. Both are variables, read anew by every call of a
    TensorFlow step (the JAX backend would bake them in when tracing, so it is not used there).

    Args:
        length: how many steps one table holds (the steps of an epoch, plus one).
    """

    def __init__(self, length: int):
        self.values = keras.Variable(
            np.zeros(length, "float32"), trainable=False, name="rate_table"
        )
        self.first = keras.Variable(0, dtype="int64", trainable=False, name="rate_table_first")
        self.host = np.zeros(length, "float32")  # the same values, for recording
        self.host_first = 0

    def fill(self, first: int, values: np.ndarray) -> None:
        """Hold ``values`` for the steps ``first, first + 1, ...``."""
        self.host, self.host_first = np.asarray(values, "float32"), first
        self.values.assign(self.host)
        self.first.assign(first)

    def at(self, steps: np.ndarray) -> np.ndarray:
        """The values at ``steps`` as the compiled step reads them (on the host)."""
        return self.host[np.clip(steps - self.host_first, 0, len(self.host) - 1)]

    def __call__(self, step: Any) -> Any:
        index = ops.clip(ops.cast(step, "int64") - self.first, 0, len(self.host) - 1)
        return ops.take(self.values, index)

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError("RateTable lives inside one fit and is never saved.")
