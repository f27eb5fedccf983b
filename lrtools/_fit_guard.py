"""Undo what a callback changed for one ``fit``, on every path out of that ``fit``.

Keras calls ``on_train_end`` only when ``fit`` returns: when it raises (an error in
a callback or in the data, Ctrl-C in a notebook), nothing tells the callbacks. A
callback cannot wrap ``fit`` in ``try``/``finally`` either, since ``fit`` is
already running when the callback first hears of it. What a callback *can* own
is the compiled train step, which ``fit`` looks up as ``model.train_function``
before every batch. :class:`FitGuard` replaces it with a wrapper that

- enters the callback's ``scope`` around each call of the compiled step and
  leaves it in a ``finally`` (so a patch the step needs while it is traced is on
  the optimizer only for the duration of a call, and never left there, even by
  Ctrl-C inside the step);
- releases everything (drops the step traced with the patch, calls ``undo``) on
  an exception from the step, other than the end-of-data signal ``fit`` handles;
- at each call, checks that the ``fit`` that installed it is still running (its
  frame is on the call stack), and releases everything first if it is not: the
  next ``fit`` or ``train_on_batch`` after a ``fit`` that raised anywhere else
  (in another callback, say) gets a freshly traced, unpatched step.

``release()`` from ``on_train_end`` covers the normal path. Nothing is left that
outlives the ``fit`` in effect: the only object that survives a failed ``fit`` is
the wrapper in ``model.train_function``, which removes itself at its next use.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import keras

# Raised by the compiled step when the data runs out; ``fit`` catches them and goes on.
_END_OF_DATA = ("StopIteration", "OutOfRangeError")


def _fit_frame(model: keras.Model) -> FrameType | None:
    """The frame of the ``model.fit`` call now running, or None outside one."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
            return frame
        frame = frame.f_back
    return None


def _on_stack(target: FrameType) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


class FitGuard:
    """Scope a callback's changes to the ``fit`` that is running (see the module docstring).

    Args:
        model: the model being trained; its ``train_function`` is rebuilt and wrapped.
        scope: a context-manager factory entered around every call of the compiled step.
        undo: called once when the guard is released (normal end, error, or stale use).
    """

    def __init__(
        self,
        model: keras.Model,
        scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        undo: Callable[[], None] = lambda: None,
    ):
        self.model = model
        self.scope = scope
        self.undo = undo
        self._frame = _fit_frame(model)
        model.make_train_function(force=True)  # traced anew, under ``scope``
        self._inner = model.train_function
        model.train_function = self._call
        self.active = True

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        if not self.active or (self._frame is not None and not _on_stack(self._frame)):
            self.release()  # the fit that installed this guard has ended without telling us
            self.model.make_train_function()
            return self.model.train_function(*args, **kwargs)
        try:
            with self.scope():
                return self._inner(*args, **kwargs)
        except BaseException as error:
            if type(error).__name__ not in _END_OF_DATA:
                self.release()
            raise

    def release(self) -> None:
        """Drop the wrapped step (the next ``fit`` traces a plain one) and undo, once."""
        if self.model.train_function == self._call:
            self.model.train_function = None
        self._inner = None
        self._frame = None
        if self.active:
            self.active = False
            self.undo()
