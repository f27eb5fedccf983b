"""Find the optimizers that own a learning rate inside any Keras optimizer.

Keras wraps optimizers: ``LossScaleOptimizer`` (mixed precision) holds one inner
optimizer, ``MultiOptimizer`` holds one per group of variables and refuses to
expose a single ``learning_rate``. Everything in lrtools that reads or changes
a rate (the range test, the callbacks) goes through :func:`rate_owners`, so
each wrapper is handled in one place.
"""

from __future__ import annotations

import keras


def rate_owners(optimizer: keras.optimizers.Optimizer) -> list[keras.optimizers.Optimizer]:
    """Return the optimizers that own a ``learning_rate`` inside ``optimizer``.

    Args:
        optimizer: any Keras optimizer, possibly a ``LossScaleOptimizer`` or a
            ``MultiOptimizer`` (or one wrapped in the other).

    Returns:
        A list of optimizers, in a stable order, each with a readable and
        settable ``learning_rate``. A plain optimizer gives ``[optimizer]``.

    Raises:
        TypeError: if ``optimizer`` is not a Keras optimizer.

    Example:

    >>> import keras
    >>> sgd = keras.optimizers.SGD(0.1)
    >>> rate_owners(keras.optimizers.LossScaleOptimizer(sgd)) == [sgd]
    True
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"Expected a Keras optimizer, got {type(optimizer).__name__}. "
            "Compile the model with a keras.optimizers.Optimizer first."
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return rate_owners(optimizer.inner_optimizer)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        owners: list[keras.optimizers.Optimizer] = []
        for inner in optimizer.optimizers:
            owners.extend(o for o in rate_owners(inner) if o not in owners)
        return owners
    return [optimizer]
