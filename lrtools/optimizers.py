"""Per-layer-group (discriminative) learning rates on Keras's own `MultiOptimizer`.

Fine-tuning often trains the early layers of a network more gently than its
head (ULMFiT's "discriminative fine-tuning", fastai's ``lr=slice(low, high)``).
Keras 3 ships the machinery: ``keras.optimizers.MultiOptimizer`` sends each
variable to one of several optimizers through a ``keras.optimizers.OptimizerMap``.
:func:`discriminative` only builds that map from layer groups and rates, so the
result is a plain Keras optimizer: it compiles, trains inside the one compiled
train step (every group is updated in the same step, no sequential passes),
saves to ``.keras`` and reloads without custom objects.

:func:`rate_owners` (from ``lrtools._rates``) lists the per-group optimizers of
a ``MultiOptimizer`` in group order, to read or change their rates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

import keras

from lrtools._checks import check_rate
from lrtools._rates import rate_owners

__all__ = ["discriminative", "rate_owners"]

LearningRate: TypeAlias = "float | keras.optimizers.schedules.LearningRateSchedule"
LayerGroup: TypeAlias = "keras.layers.Layer | str | Sequence[keras.layers.Layer | str]"


def discriminative(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    lrs: Sequence[LearningRate] | tuple[float, float] | slice,
    groups: Sequence[LayerGroup] | None = None,
) -> keras.optimizers.MultiOptimizer:
    """Build a `MultiOptimizer` that trains each group of layers at its own rate.

    Each group gets a clone of ``optimizer`` (``from_config(get_config())``, so
    momentum, weight decay, clipping and the other settings are shared) with the
    group's learning rate. With ``lrs`` given as a ``(low, high)`` pair, the
    rates are spaced geometrically from the first group to the last, as
    fastai's ``slice(low, high)``:

    ``rate_i = low * (high / low) ** (i / (n - 1))`` for groups ``i = 0 .. n-1``

    (a single group gets ``high``). Variables are assigned to groups by the
    names of their layers (an ``OptimizerMap`` of path patterns), so the
    assignment survives saving to ``.keras`` and reloading. A trainable
    variable that belongs to no group (for example a layer added to the model
    later) trains with the last group's optimizer, the head's, as in fastai,
    where the last group is the head.

    Args:
        model: a built Keras model (its variables must exist: call it on data or
            ``model.build(input_shape)`` first).
        optimizer: a template optimizer, e.g. ``keras.optimizers.Adam()``. Its
            own learning rate is replaced in every group; the template itself
            is not used for training. Not a ``MultiOptimizer`` or
            ``LossScaleOptimizer``.
        lrs: the rates. A list with one rate per group, each a positive float or
            any ``keras.optimizers.schedules.LearningRateSchedule`` (including
            every ``lrtools.schedules`` schedule); or a pair ``(low, high)`` (a
            tuple or ``slice(low, high)``) of positive floats with
            ``low <= high``, spaced geometrically across the groups.
        groups: the layer groups, first (usually the earliest layers, trained
            slowest) to last (usually the head). Each group is a layer, a layer
            name (looked up with ``model.get_layer``), or a list of layers and
            names. A layer stands for all its weights, nested layers included.
            Defaults to one group per layer in ``model.layers`` that has weights.

    Returns:
        A ``keras.optimizers.MultiOptimizer`` whose ``optimizers`` (and
        ``rate_owners(...)``) are the per-group optimizers in group order. Pass
        it to ``model.compile``.

    Raises:
        TypeError: if ``optimizer`` is not a plain Keras optimizer, a rate is
            neither a number nor a ``LearningRateSchedule``, ``lrs`` is neither a
            list nor a pair, or ``groups`` is not a list of groups of layers and
            layer names.
        ValueError: if the model is not built, a group is empty, has no weights
            or names an unknown layer, a layer (or a weight) is in two groups,
            the number of rates differs from the number of groups, ``low >
            high``, a rate is not a positive finite number, or two layers share
            a name so that their variables cannot be told apart by path.

    Example:

    >>> import keras
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, name="body"),
    ...     keras.layers.Dense(16, name="neck"),
    ...     keras.layers.Dense(1, name="head"),
    ... ])
    >>> multi = discriminative(model, keras.optimizers.Adam(), (1e-4, 1e-2))
    >>> [round(float(o.learning_rate), 6) for o in rate_owners(multi)]
    [0.0001, 0.001, 0.01]
    >>> model.compile(optimizer=multi, loss="mse")
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer, (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer)
    ):
        raise TypeError(
            "`optimizer` must be a plain Keras optimizer used as a template, such as "
            f"keras.optimizers.Adam(); got {type(optimizer).__name__}."
        )
    if not model.built or not model.weights:
        raise ValueError(
            "The model has no weights yet. Build it first: call it on a batch of data "
            "or call model.build(input_shape)."
        )
    layer_groups = _resolve_groups(model, groups)
    rates = _group_rates(lrs, len(layer_groups))
    patterns = _check_assignment(model, layer_groups)

    config = optimizer.get_config()
    group_optimizers = [
        type(optimizer).from_config(
            {**config, "learning_rate": rate, "name": f"{config['name']}_group_{index}"}
        )
        for index, rate in enumerate(rates)
    ]
    optimizer_map = keras.optimizers.OptimizerMap(
        default_optimizer=group_optimizers[-1],
        optimizer_map={
            pattern: group_optimizers[index]
            for index, group_patterns in enumerate(patterns)
            for pattern in group_patterns
        },
    )
    return keras.optimizers.MultiOptimizer(
        optimizer_map,
        loss_scale_factor=config.get("loss_scale_factor"),
        name=f"discriminative_{config['name']}",
    )


def _resolve_groups(
    model: keras.Model, groups: Sequence[LayerGroup] | None
) -> list[list[keras.layers.Layer]]:
    """Turn the `groups` argument into lists of layers of `model`."""
    if groups is None:
        return [[layer] for layer in model.layers if layer.weights]
    if isinstance(groups, (str, keras.layers.Layer)) or not isinstance(groups, Sequence):
        raise TypeError(
            "`groups` must be a list of layer groups, e.g. [model.layers[:2], 'head']; "
            f"got {groups!r}."
        )
    if not groups:
        raise ValueError("`groups` is empty: give at least one layer group.")
    model_weight_ids = {id(weight) for weight in model.weights}
    resolved = []
    for index, group in enumerate(groups):
        members = [group] if isinstance(group, (str, keras.layers.Layer)) else list(group)
        if not members:
            raise ValueError(f"Layer group {index} is empty.")
        layers = []
        for member in members:
            layer = _resolve_layer(model, member, index)
            if not {id(weight) for weight in layer.weights} <= model_weight_ids:
                raise ValueError(f"Layer {layer.name!r} in group {index} is not part of the model.")
            layers.append(layer)
        if not any(layer.weights for layer in layers):
            raise ValueError(
                f"Layer group {index} ({[layer.name for layer in layers]}) has no weights: "
                "remove it or add layers with weights to it."
            )
        resolved.append(layers)
    return resolved


def _resolve_layer(model: keras.Model, member: object, group_index: int) -> keras.layers.Layer:
    """Return the layer a group member stands for (a layer, or a layer name)."""
    if isinstance(member, keras.layers.Layer):
        return member
    if isinstance(member, str):
        try:
            return model.get_layer(member)
        except ValueError as error:
            raise ValueError(
                f"Group {group_index} names layer {member!r}, which the model does not have. "
                f"Its layers are {[layer.name for layer in model.layers]}."
            ) from error
    raise TypeError(
        f"`groups[{group_index}]` contains {member!r}; a group member must be a Keras layer "
        "or a layer name."
    )


def _group_rates(
    lrs: Sequence[LearningRate] | tuple[float, float] | slice, num_groups: int
) -> list[LearningRate]:
    """Validate `lrs` and return one rate per group."""
    if isinstance(lrs, (slice, tuple)):
        if isinstance(lrs, slice):
            if lrs.step is not None:
                raise ValueError(f"Use slice(low, high) without a step; got {lrs!r}.")
            pair = (lrs.start, lrs.stop)
        elif len(lrs) == 2:
            pair = lrs
        else:
            raise ValueError(
                f"A tuple of rates must be a (low, high) pair; got {len(lrs)} values. "
                "Pass one rate per group as a list instead."
            )
        low, high = check_rate("low", pair[0]), check_rate("high", pair[1])
        if low > high:
            raise ValueError(
                f"low={low} is greater than high={high}: the first group gets the lower rate."
            )
        if num_groups == 1:
            return [high]
        ratio = high / low
        return [low * ratio ** (index / (num_groups - 1)) for index in range(num_groups)]
    if not isinstance(lrs, Sequence) or isinstance(lrs, str):
        raise TypeError(
            "`lrs` must be a list of per-group rates or a (low, high) pair; "
            f"got {type(lrs).__name__}."
        )
    if len(lrs) != num_groups:
        raise ValueError(
            f"Got {len(lrs)} rates for {num_groups} layer groups: give one rate per group, "
            "or a (low, high) pair to spread the rates geometrically."
        )
    return [
        rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule)
        else _positive_rate(rate, f"lrs[{index}]")
        for index, rate in enumerate(lrs)
    ]


def _positive_rate(rate: object, name: str) -> float:
    """Return a group's `rate` as a float (``check_rate``), naming schedules in a type error."""
    try:
        return check_rate(name, rate)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a number or a LearningRateSchedule, got {rate!r}."
        ) from None


def _layer_pattern(layer: keras.layers.Layer) -> str:
    """The `OptimizerMap` pattern for the variables of `layer` (and its sublayers).

    Variable paths are ``<scopes>/<layer name>/.../<variable name>``; the scopes in
    front (``sequential/`` or none) differ between a model as built and as
    reloaded from ``.keras``, so the pattern allows any of them.
    """
    return f"(?:.*/)?{re.escape(layer.name)}/.*"


def _check_assignment(
    model: keras.Model, layer_groups: list[list[keras.layers.Layer]]
) -> list[list[str]]:
    """Check that the groups are disjoint and that their patterns pick exactly their weights.

    Returns:
        The `OptimizerMap` patterns of each group.
    """
    layer_group: dict[int, int] = {}
    weight_group: dict[int, int] = {}
    for index, layers in enumerate(layer_groups):
        for layer in layers:
            previous = layer_group.setdefault(id(layer), index)
            if previous != index:
                raise ValueError(
                    f"Layer {layer.name!r} is in groups {previous} and {index}: "
                    "each layer may be in one group only."
                )
            for weight in layer.weights:
                previous = weight_group.setdefault(id(weight), index)
                if previous != index:
                    raise ValueError(
                        f"Weight {weight.path!r} (of layer {layer.name!r}) is in groups "
                        f"{previous} and {index}: a group's layer contains a layer of "
                        "another group. Each weight may be in one group only."
                    )
    patterns = [sorted({_layer_pattern(layer) for layer in layers}) for layers in layer_groups]
    for weight in model.weights:
        matched = {
            index
            for index, group_patterns in enumerate(patterns)
            if any(re.fullmatch(pattern, weight.path) for pattern in group_patterns)
        }
        expected = {weight_group[id(weight)]} if id(weight) in weight_group else set()
        if matched != expected:
            raise ValueError(
                f"Weight {weight.path!r} belongs to group(s) {sorted(expected)} but its path "
                f"matches the layer names of group(s) {sorted(matched)}. Variables are "
                "assigned by layer name, so give the layers distinct names (name=...)."
            )
    return patterns
