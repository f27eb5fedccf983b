"""lrtools: learning-rate tools for Keras 3.

A schedule is a pure function of the training step; everything else in the
package is built on that idea.

Modules:

- ``lrtools.schedules``: learning-rate schedules (``LearningRateSchedule`` subclasses).
- ``lrtools.finder``: the learning-rate range test (``lr_range_test``).
- ``lrtools.suggestions``: the rules that read a rate off a range-test curve.
- ``lrtools.callbacks``: what a schedule alone cannot do (epoch functions,
  one-cycle momentum, snapshot ensembles, plateau reduction on any schedule).
- ``lrtools.optimizers``: per-layer-group (discriminative) learning rates.
- ``lrtools.tuning``: keras-tuner search over the learning rate.
- ``lrtools.data``, ``lrtools.models``, ``lrtools.experiments``, ``lrtools.plotting``:
  the data, small networks, experiment runner and figures the book shares.
- ``lrtools.runtime``: what the machine offers (``has_accelerator``).
- ``lrtools.comparison``: paired differences over seeds, and when they name a winner.

Only ``schedules`` is imported eagerly; the other modules load on first use, so
``import lrtools`` needs nothing beyond Keras and NumPy.

Example:

>>> import lrtools
>>> schedule = lrtools.schedules.CosineDecay(0.1, decay_steps=100)
>>> round(float(schedule(50)), 4)
0.05
"""

from __future__ import annotations

import importlib
from typing import Any

from lrtools._quiet import start_up_notices_filtered

try:
    # Keras imports its backend here: the first place one can be missing. TensorFlow's start-up
    # lines are held to TF_CPP_MIN_LOG_LEVEL, which TensorFlow itself reads only after them.
    with start_up_notices_filtered():
        import keras  # noqa: F401
except ModuleNotFoundError as error:
    if (error.name or "").split(".")[0] not in ("tensorflow", "jax", "jaxlib", "torch"):
        raise
    raise ImportError(
        f"lrtools needs a Keras backend, and Keras could not import {error.name!r} "
        "(KERAS_BACKEND picks one; TensorFlow by default). Install lrtools with one: "
        'pip install "lrtools-keras[tensorflow]", "lrtools-keras[jax]" or "lrtools-keras[torch]"'
        ', or "lrtools-keras[book]" for everything the book uses.'
    ) from error

from lrtools import schedules

__version__ = "0.1.0"

_SUBMODULES = (
    "callbacks",
    "comparison",
    "data",
    "experiments",
    "finder",
    "models",
    "optimizers",
    "plotting",
    "runtime",
    "suggestions",
    "tuning",
)
_SHORTCUTS = {"lr_range_test": "finder", "RangeTestResult": "finder"}

__all__ = ["schedules", *_SUBMODULES, *_SHORTCUTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"lrtools.{name}")
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(f"lrtools.{_SHORTCUTS[name]}"), name)
    raise AttributeError(f"module 'lrtools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
