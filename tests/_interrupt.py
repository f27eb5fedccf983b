"""A callback that fails in the middle of ``fit``, for the tests that nothing outlives it."""

from __future__ import annotations

import keras


class RaiseAtStep(keras.callbacks.Callback):
    """Raises ``error`` after the update of ``step``: an error or Ctrl-C in the middle of fit."""

    def __init__(self, step: int, error: BaseException):
        super().__init__()
        self.step, self.error = step, error

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            raise self.error
