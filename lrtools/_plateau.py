"""``ReduceLROnPlateau``: Keras's callback, also for a rate that is a schedule.

Public through :mod:`lrtools.callbacks`; see its docstring.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from lrtools import schedules
from lrtools._checks import check_non_negative
from lrtools._rates import current_rate, rate_object, rate_owners, replace_rate
from lrtools._scheduler import Schedule, _rebuild_train_function, _to_float


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

    A ``monitor`` that is not in the epoch's logs is an error, not Keras's warning
    at every epoch (with it, the rate would silently never be reduced): at the end
    of the first epoch without it, a ``ValueError`` names the metrics there are.
    Monitoring ``val_...`` therefore needs validation data at every epoch
    (``validation_freq=1``, the default).

    Raises:
        ValueError: for ``factor >= 1`` (as Keras), ``factor <= 0``, a negative
            ``patience``, ``cooldown`` or ``min_lr``; when training begins, for an
            optimizer whose rate is a callable that is not a schedule; at the end of
            an epoch whose logs lack ``monitor``.
        TypeError: for a ``factor``, ``patience``, ``cooldown`` or ``min_lr`` that is
            not a number.

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
        if not check_non_negative("factor", factor) > 0:
            raise ValueError(f"`factor` must lie in (0, 1), got {factor}.")
        for name, value in (("patience", patience), ("cooldown", cooldown), ("min_lr", min_lr)):
            check_non_negative(name, value)
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
        if _scale_schedules(self.model.optimizer):
            _rebuild_train_function(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()  # delayed until the model's metrics are built, as Keras does
        logs = logs if logs is not None else {}
        owners = rate_owners(self.model.optimizer)
        rates = [current_rate(owner) for owner in owners]
        logs["learning_rate"] = max(rates)
        if len(owners) > 1:
            logs.update({f"learning_rate_{o.name}": r for o, r in zip(owners, rates, strict=True)})
        current = logs.get(self.monitor)
        if current is None:
            raise ValueError(
                f"ReduceLROnPlateau monitors {self.monitor!r}, which is not among this epoch's "
                f"metrics: {', '.join(sorted(logs))}. Pass one of them as monitor (a val_ "
                "metric needs validation_data, evaluated at every epoch)."
            )
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
            new_rate = _reduce_rate(owner, self.factor, self.min_lr)
            if new_rate is None:
                continue
            scaled = isinstance(rate_object(owner), schedules.Scaled)
            if scaled and keras.backend.backend() == "jax":
                _rebuild_train_function(self.model)  # a compiled JAX step read the old factor
            reduced = True
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate of "
                    f"{owner.name} to {new_rate}."
                )
        return reduced


def _scale_schedules(optimizer: keras.optimizers.Optimizer) -> bool:
    """Wrap every schedule rate in ``schedules.Scaled``; True if any was wrapped.

    Raises:
        ValueError: for a rate that is a callable but not a ``LearningRateSchedule``.
    """
    wrapped = False
    for owner in rate_owners(optimizer):
        rate = rate_object(owner)
        if isinstance(rate, (schedules.Scaled, keras.Variable)):
            continue
        if not isinstance(rate, Schedule):
            raise ValueError(
                f"Optimizer {owner.name!r} has the callable {rate!r} as its rate, which "
                "ReduceLROnPlateau cannot scale: use a float or a LearningRateSchedule."
            )
        replace_rate(owner, schedules.Scaled(rate))
        wrapped = True
    return wrapped


def _reduce_rate(owner: keras.optimizers.Optimizer, factor: float, min_lr: float) -> float | None:
    """Multiply ``owner``'s rate by ``factor``, not below ``min_lr``: the new rate, or None.

    A float rate is assigned; a ``schedules.Scaled`` rate has its factor lowered.
    """
    old_rate = current_rate(owner)
    if old_rate <= np.float32(min_lr):
        return None
    new_rate = max(old_rate * factor, min_lr)
    if isinstance(rate_object(owner), schedules.Scaled):
        scale = rate_object(owner).factor
        scale.assign(_to_float(scale) * new_rate / old_rate)
    else:
        owner.learning_rate = new_rate
    return new_rate
