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
- :class:`LearningRateLogger` logs the rate, and the momentum or ``beta_1``, of
  any optimizer into ``History`` and TensorBoard, every epoch (or batch).
- :class:`GradualUnfreezing` trains the groups of a per-layer optimizer
  (``lrtools.optimizers.discriminative``) from the head down, one more each
  epoch, as ULMFiT does, without recompiling.

Every callback reads its position from ``optimizer.iterations`` (or the epoch
number Keras passes), never from a counter of its own, so a run saved to
``.keras`` and resumed with ``initial_epoch`` continues exactly where it stopped.

All of them handle ``keras.optimizers.LossScaleOptimizer`` and
``keras.optimizers.MultiOptimizer``: a multi-optimizer's groups move together
and keep their ratios (see :class:`LRScheduler`).

A batch-level ``LRScheduler`` on a schedule (or on a function declared
``pure=True``) and ``OneCycle`` cost what any per-batch callback costs: the
compiled train step computes the rate (and ``OneCycle``'s momentum) from the step
counter, with nothing done per batch in Python (``lrtools._step_rate``).

Nothing a callback changes outlives the ``fit`` it served, even one that raised
(Keras then never calls ``on_train_end``): ``LRScheduler``, ``OneCycle`` and
``GradualUnfreezing`` patch the optimizer only while the compiled step runs, and
the step they traced is dropped on every way out of ``fit`` (``lrtools._fit_guard``).

The code lives in small private modules, one idea each (``_scheduler``,
``_step_rate``, ``_one_cycle``, ``_snapshots``, ``_plateau``, ``_rate_logger``,
``_unfreezing``); this module is where the public names are.
"""

from __future__ import annotations

from lrtools._one_cycle import OneCycle, _MomentumCycle
from lrtools._plateau import ReduceLROnPlateau
from lrtools._rate_logger import LearningRateLogger
from lrtools._scheduler import LRScheduler, _is_pure_schedule, _StepTable
from lrtools._snapshots import Snapshot, SnapshotEnsemble
from lrtools._unfreezing import GradualUnfreezing

__all__ = [
    "LRScheduler",
    "OneCycle",
    "Snapshot",
    "SnapshotEnsemble",
    "ReduceLROnPlateau",
    "LearningRateLogger",
    "GradualUnfreezing",
]

# Private helpers the tests reach through this module.
_PRIVATE = (_MomentumCycle, _StepTable, _is_pure_schedule)
