"""Find the optimizers that own a learning rate inside any Keras optimizer.

Keras wraps optimizers: ``LossScaleOptimizer`` (mixed precision) holds one inner
optimizer, ``MultiOptimizer`` holds one per group of variables and refuses to
expose a single ``learning_rate``. Everything in lrtools that reads or changes
a rate (the range test, the callbacks, the experiment runner) goes through this
module: :func:`rate_owners` finds the optimizers that own a rate,
:func:`rate_object`, :func:`replace_rate` and :func:`restore_rate` read and swap
the object an owner holds, :func:`current_rate` reads its value, and
:func:`group_ratios` is the one rule for driving several groups at once. No
other module touches an optimizer's private ``_learning_rate``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras

from lrtools._checks import check_non_negative


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


def rate_object(owner: keras.optimizers.Optimizer) -> Any:
    """Return what ``owner`` holds as its rate: a ``keras.Variable``, a schedule or a callable.

    ``optimizer.learning_rate`` evaluates a schedule at the current step; this
    returns the schedule itself, which callbacks and the range test need to
    recognise, replace and put back.

    Example:

    >>> import keras
    >>> isinstance(rate_object(keras.optimizers.SGD(0.1)), keras.Variable)
    True
    """
    return owner._learning_rate


def replace_rate(owner: keras.optimizers.Optimizer, rate: Any) -> Any:
    """Put ``rate`` (a variable, a schedule or a callable) in ``owner``; return the old one.

    Unlike assigning ``owner.learning_rate``, which for a variable rate only assigns
    its value, this swaps the object itself, so the next traced train step reads
    the new one. A variable put in by this function is tracked by the optimizer (so
    JAX's stateless step sees it); :func:`restore_rate` removes it again.

    Example:

    >>> import keras
    >>> sgd = keras.optimizers.SGD(0.1)
    >>> old = replace_rate(sgd, keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    >>> restore_rate(sgd, old)
    >>> isinstance(rate_object(sgd), keras.Variable)
    True
    """
    original = owner._learning_rate
    owner._learning_rate = rate
    return original


def restore_rate(owner: keras.optimizers.Optimizer, original: Any) -> None:
    """Put back the rate object :func:`replace_rate` returned, untracking a temporary variable."""
    current = owner._learning_rate
    if current is original:
        return
    owner._learning_rate = original
    if isinstance(current, keras.Variable):
        owner._untrack_variable(current)


def current_rate(owner: keras.optimizers.Optimizer, *, last_step: bool = False) -> float:
    """Return the rate ``owner`` trains with, as a float.

    Args:
        owner: an optimizer from :func:`rate_owners`.
        last_step: for a schedule, evaluate it at the step last taken
            (``iterations - 1``, the rate the last update used) instead of the next.

    Example:

    >>> import keras
    >>> current_rate(keras.optimizers.SGD(0.5))
    0.5
    """
    rate = owner._learning_rate
    if last_step and isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        step = max(int(keras.ops.convert_to_numpy(owner.iterations)) - 1, 0)
        return float(keras.ops.convert_to_numpy(rate(step)))
    return float(keras.ops.convert_to_numpy(owner.learning_rate))


def group_ratios(rates: Sequence[float]) -> list[float]:
    """Return each group's rate over the largest group's rate.

    This is the one rule by which lrtools drives several rates at once (the groups
    of a ``MultiOptimizer``): whatever sets "the" rate sets the largest group's,
    and every other group keeps its proportion, ``ratio_g = lr_g / max_h lr_h``.

    Policy when every rate is 0 (a warm-up schedule at step 0, say): the
    proportions are unknown, so every group gets the ratio 1 and moves with the
    rate that is set; with several groups a ``UserWarning`` says so.

    Args:
        rates: the current rate of each group, finite and ``>= 0``.

    Returns:
        One ratio per group, in ``[0, 1]``; the largest group's is exactly 1.

    Raises:
        ValueError: if ``rates`` is empty or holds a negative or non-finite rate.

    Example:

    >>> group_ratios([0.05, 0.1])
    [0.5, 1.0]
    >>> group_ratios([0.0])
    [1.0]
    """
    if len(rates) == 0:
        raise ValueError("`rates` is empty: an optimizer owns at least one rate.")
    for index, rate in enumerate(rates):
        check_non_negative(f"rates[{index}]", rate)
    largest = max(rates)
    if largest == 0:
        if len(rates) > 1:
            warnings.warn(
                f"Every one of the {len(rates)} groups has the rate 0, so their proportions "
                "are unknown: every group will follow the rate that is set.",
                stacklevel=2,
            )
        return [1.0] * len(rates)
    return [float(rate) / largest for rate in rates]
