"""``LearningRateLogger``: the rate and momentum of any optimizer, into History and TensorBoard.

Public through :mod:`lrtools.callbacks`; see its docstring.
"""

from __future__ import annotations

from typing import Any

import keras

from lrtools._checks import check_flag
from lrtools._rates import current_rate, rate_owners
from lrtools._scheduler import _current_step, _to_float

# The attribute that holds each optimizer's momentum, in the order they are looked for.
MOMENTUM_NAMES = ("momentum", "beta_1")


def _momentum(owner: keras.optimizers.Optimizer) -> tuple[str, float] | None:
    """``(name, value)`` of ``owner``'s momentum (SGD, RMSprop) or ``beta_1`` (Adam family)."""
    for name in MOMENTUM_NAMES:
        value = getattr(owner, name, None)
        if value is None or isinstance(value, bool):
            continue
        value = value() if callable(value) and not isinstance(value, keras.Variable) else value
        try:
            return name, _to_float(value)
        except (TypeError, ValueError):
            continue
    return None


def optimizer_values(optimizer: keras.optimizers.Optimizer) -> dict[str, float]:
    """The rate, and momentum or ``beta_1``, of the last update of ``optimizer``.

    One optimizer gives ``learning_rate`` and ``momentum`` or ``beta_1``. A
    ``MultiOptimizer`` gives ``learning_rate`` (the largest group's) and, for each
    group, ``learning_rate_<name>`` and ``momentum_<name>`` or ``beta_1_<name>``
    (``<name>`` the group optimizer's ``name``, as Keras's TensorBoard callback names
    them). A schedule in the optimizer is read at the step the last update took.
    """
    owners = rate_owners(optimizer)
    rates = [current_rate(owner, last_step=True) for owner in owners]
    values = {"learning_rate": max(rates)}
    for owner, rate in zip(owners, rates, strict=True):
        suffix = f"_{owner.name}" if len(owners) > 1 else ""
        if suffix:
            values[f"learning_rate{suffix}"] = rate
        momentum = _momentum(owner)
        if momentum is not None:
            values[f"{momentum[0]}{suffix}"] = momentum[1]
    return values


class LearningRateLogger(keras.callbacks.Callback):
    """Log the rate, and the momentum or ``beta_1``, of every epoch (and batch) of any optimizer.

    Works whatever holds the rate: a float (a variable), a schedule inside the
    optimizer (read at the step of the epoch's last update), each group of a
    ``keras.optimizers.MultiOptimizer``, through a ``LossScaleOptimizer``. The
    values go into the ``logs`` Keras passes on, so ``History`` records them and
    ``keras.callbacks.TensorBoard`` writes them (as ``epoch_learning_rate``,
    ``epoch_momentum``, ...), and are also kept in ``epochs``. Keys:
    ``learning_rate`` and ``momentum`` (SGD, RMSprop) or ``beta_1`` (Adam family);
    for a ``MultiOptimizer``, ``learning_rate`` is the largest group's and each group
    adds ``learning_rate_<name>`` and ``momentum_<name>`` / ``beta_1_<name>``.

    With ``per_batch=True`` the values of every batch are added to the batch logs
    (TensorBoard with ``update_freq="batch"`` writes them as ``batch_learning_rate``
    ...) and kept in ``batches``, with the step in ``"step"``.

    Order: Keras calls callbacks in list order and adds ``History`` last, so
    ``History`` always sees these values; put this callback *before*
    ``TensorBoard`` in the list so that TensorBoard sees them too. The momentum is
    the optimizer's attribute: the value ``OneCycle`` cycles inside the compiled
    step is logged by ``OneCycle`` itself (``momentum``).

    Args:
        per_batch: also log every batch.

    Raises:
        TypeError: if ``per_batch`` is not a bool.

    Example:

    >>> logger = LearningRateLogger()
    >>> # history = model.fit(x, y, epochs=5, callbacks=[logger, keras.callbacks.TensorBoard()])
    >>> # history.history["learning_rate"], history.history["momentum"]
    """

    def __init__(self, per_batch: bool = False):
        super().__init__()
        self.per_batch = check_flag("per_batch", per_batch)
        # Without per-batch logging the batch hook does nothing: let Keras dispatch batches async.
        self.async_safe = not self.per_batch
        self.epochs: dict[str, list[float]] = {}
        self.batches: dict[str, list[float]] = {}

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self.per_batch:
            return
        values = optimizer_values(self.model.optimizer)
        _append(self.batches, {"step": _current_step(self.model.optimizer) - 1, **values})
        if logs is not None:
            logs.update(values)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = optimizer_values(self.model.optimizer)
        _append(self.epochs, values)
        if logs is not None:
            logs.update(values)


def _append(history: dict[str, list[Any]], values: dict[str, Any]) -> None:
    for key, value in values.items():
        history.setdefault(key, []).append(value)
