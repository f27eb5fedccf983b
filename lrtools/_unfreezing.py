"""``GradualUnfreezing``: ULMFiT's gradual unfreezing on one compiled model.

Public through :mod:`lrtools.callbacks`; see its docstring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras import ops

from lrtools._checks import check_count
from lrtools._fit_guard import FitGuard, _fit_frame
from lrtools._rates import rate_owners


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreeze the layer groups of a per-layer optimizer one at a time, from the head down.

    ULMFiT's gradual unfreezing (Howard and Ruder, 2018): the first epoch trains only
    the last group (the head), each later epoch adds the next group down, until every
    group trains. The groups are those of a ``MultiOptimizer`` built by
    ``lrtools.optimizers.discriminative`` (its ``rate_owners``, first to last). At the
    epoch ``e`` that Keras passes, the last

    ``k(e) = min(n, 1 + e // epochs_per_group)``

    of the ``n`` groups train at their own rates (a float or a schedule, whatever the
    optimizer holds); the others train at the rate 0. The model is compiled once: no
    ``trainable`` flag changes, and a resumed run (``initial_epoch``) unfreezes as an
    uninterrupted one.

    The rate 0 is applied inside the compiled train step only: every call of the step
    reads each group's rate times a mask of 0 or 1 that the callback sets at the start
    of each epoch (on JAX, which reads the mask when it traces the step, the step is
    traced again when a group is unfrozen). The optimizer's own rates are never
    changed, so a model saved during training, or left by a ``fit`` that raised (Ctrl-C
    included), holds its full rates, and the next ``fit`` trains every group
    (``lrtools._fit_guard``).

    A rate of 0 leaves a weight exactly where it is for Keras's SGD (with or without
    momentum), Adam and their relatives, and also under their decoupled
    ``weight_decay``, which Keras multiplies by the rate. It is not a freeze in every
    sense: the gradients of a frozen group are still computed (no time is saved),
    Adam's moment estimates of a frozen group keep averaging its gradients (so its
    first steps after unfreezing use them, where a fresh Adam would start with steps
    of exactly the rate), and ``BatchNormalization`` layers keep updating their moving
    statistics. To freeze those too, set ``trainable = False`` and recompile instead.
    Do not combine it with a callback that also patches the rate in the step
    (``LRScheduler`` per batch, ``OneCycle``).

    Args:
        epochs_per_group: how many epochs pass before the next group is unfrozen
            (ULMFiT: 1).

    Raises:
        TypeError: if ``epochs_per_group`` is not a whole number.
        ValueError: if ``epochs_per_group < 1``; when training begins, for an optimizer
            with a single group (nothing to unfreeze).
        RuntimeError: when training begins outside ``model.fit`` (a custom loop that
            calls the callbacks itself), where the mask cannot reach the step.

    Example:

    >>> import keras
    >>> from lrtools.optimizers import discriminative
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, name="body"),
    ...     keras.layers.Dense(1, name="head"),
    ... ])
    >>> model.compile(
    ...     optimizer=discriminative(model, keras.optimizers.Adam(), (1e-3, 1e-2)), loss="mse"
    ... )
    >>> unfreezing = GradualUnfreezing(epochs_per_group=1)
    >>> [unfreezing.unfrozen_groups(epoch, num_groups=2) for epoch in range(3)]
    [1, 2, 2]
    >>> # model.fit(x, y, epochs=3, callbacks=[unfreezing])  # epoch 0: head only; then both
    """

    def __init__(self, epochs_per_group: int = 1):
        super().__init__()
        self.epochs_per_group = check_count("epochs_per_group", epochs_per_group)
        self._owners: list = []
        self._masks: list[keras.Variable] = []
        self._unfrozen = 0
        self._guard: FitGuard | None = None

    def unfrozen_groups(self, epoch: int, num_groups: int) -> int:
        """How many groups, counted from the last, train in ``epoch``: ``k(e)`` above."""
        epoch = check_count("epoch", epoch, minimum=0)
        return min(check_count("num_groups", num_groups), 1 + epoch // self.epochs_per_group)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._release()  # a fit that raised before: nothing of it stays
        if _fit_frame(self.model) is None:
            raise RuntimeError(
                "GradualUnfreezing works inside model.fit, whose compiled step it wraps; "
                "in a custom loop, set each group's learning_rate yourself at each epoch."
            )
        owners = rate_owners(self.model.optimizer)
        if len(owners) < 2:
            raise ValueError(
                "GradualUnfreezing needs an optimizer with several layer groups, such as "
                "lrtools.optimizers.discriminative(model, optimizer, lrs, groups); this one "
                "has a single rate, so there is nothing to unfreeze."
            )
        self._owners = owners
        self._masks = [
            keras.Variable(0.0, dtype="float32", trainable=False, name=f"unfrozen_{index}")
            for index in range(len(owners))
        ]
        self._unfrozen = 0
        self._guard = FitGuard(self.model, self._scope)

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        # Each owner reads its rate through Keras's one accessor, ``_get_current_learning_rate``
        # (as ``lrtools._step_rate`` does): shadowed here, for one call of the step, by the
        # rate the owner would read times its group's mask.
        patched = []
        for owner, mask in zip(self._owners, self._masks, strict=True):
            outer = vars(owner).get("_get_current_learning_rate")  # another callback's patch
            read_rate = owner._get_current_learning_rate
            vars(owner)["_get_current_learning_rate"] = _masked(read_rate, mask)
            patched.append((owner, outer))
        try:
            yield
        finally:
            for owner, outer in reversed(patched):
                if outer is None:
                    vars(owner).pop("_get_current_learning_rate", None)
                else:
                    vars(owner)["_get_current_learning_rate"] = outer

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        unfrozen = self.unfrozen_groups(epoch, len(self._owners))
        frozen = len(self._owners) - unfrozen
        for index, mask in enumerate(self._masks):
            mask.assign(0.0 if index < frozen else 1.0)
        if unfrozen != self._unfrozen and keras.backend.backend() == "jax":
            self._release()  # a JAX step holds the masks it was traced with: trace it again
            self._guard = FitGuard(self.model, self._scope)
        self._unfrozen = unfrozen

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["unfrozen_groups"] = self._unfrozen

    def on_train_end(self, logs: dict | None = None) -> None:
        self._release()

    def _release(self) -> None:
        if self._guard is not None:
            self._guard.release()  # the next step is traced anew, without the masks
            self._guard = None


def _masked(read_rate: Callable[[], Any], mask: keras.Variable) -> Callable[[], Any]:
    """A rate reader: what ``read_rate`` gives, times ``mask``, in the rate's dtype."""

    def read() -> Any:
        rate = read_rate()
        return ops.multiply(rate, ops.cast(mask, getattr(rate, "dtype", "float32")))

    return read
