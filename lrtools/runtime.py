"""What the machine lrtools runs on offers: questions about the runtime, not about training.

:func:`has_accelerator` tells whether the Keras backend computes on a GPU or a TPU, so
that a notebook or a benchmark turns on mixed precision only where it pays off.

Example:

>>> isinstance(has_accelerator(), bool)
True
"""

from __future__ import annotations

import keras

__all__ = ["has_accelerator"]


def has_accelerator() -> bool:
    """Tell whether the current Keras backend computes on a GPU or TPU.

    Asks the backend Keras uses (``keras.backend.backend()``), so it imports
    nothing else: JAX (``jax.default_backend()``), TensorFlow
    (``tf.config.list_physical_devices("GPU")``), PyTorch
    (``torch.cuda.is_available()``); NumPy and OpenVINO count as CPU here.
    Use it to switch on mixed precision only where it pays off:
    ``keras.mixed_precision.set_dtype_policy("mixed_float16")``.

    Returns:
        ``True`` when the backend has a GPU or TPU to compute on.

    Example:

    >>> isinstance(has_accelerator(), bool)
    True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False
