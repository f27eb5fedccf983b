"""Tests for lrtools.optimizers: per-layer-group rates on Keras's MultiOptimizer.

The reference for "each group moves as its own optimizer would move it alone"
is computed by hand: the same gradients (from the same weights and batches)
applied group by group with independently constructed optimizers.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from lrtools.optimizers import discriminative, rate_owners

BATCH_SIZE = 8
NUM_BATCHES = 3


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH_SIZE * NUM_BATCHES, 6)).astype("float32")
    y = rng.normal(size=(BATCH_SIZE * NUM_BATCHES, 2)).astype("float32")
    return x, y


def _model(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="tanh", name="body"),
            keras.layers.Dense(4, activation="tanh", name="neck"),
            keras.layers.Dropout(0.0, name="drop"),
            keras.layers.Dense(2, name="head"),
        ]
    )


def _gradients(model: keras.Model, x: np.ndarray, y: np.ndarray) -> list:
    """Mean-squared-error gradients of `model`'s trainable variables, on any backend."""
    loss_fn = keras.losses.MeanSquaredError()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)
    if backend == "jax":
        import jax

        def loss_of(trainable_values, non_trainable_values):
            predictions, _ = model.stateless_call(
                trainable_values, non_trainable_values, x, training=True
            )
            return loss_fn(y, predictions)

        return jax.grad(loss_of)(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
    pytest.skip(f"no reference gradients written for the {backend} backend")


def _train_by_hand(
    model: keras.Model, partition: list[list[str]], optimizers: list, x: np.ndarray, y: np.ndarray
) -> None:
    """Train `model` batch by batch, each layer-name group with its own optimizer alone."""
    variables = model.trainable_variables
    for start in range(0, len(x), BATCH_SIZE):
        batch = slice(start, start + BATCH_SIZE)
        grads = _gradients(model, x[batch], y[batch])
        for names, optimizer in zip(partition, optimizers, strict=True):
            chosen = [
                (grad, var)
                for grad, var in zip(grads, variables, strict=True)
                if var.path.split("/")[-2] in names
            ]
            optimizer.apply([g for g, _ in chosen], [v for _, v in chosen])


@pytest.mark.parametrize(
    ("groups", "partition"),
    [
        (None, [["body"], ["neck"], ["head"]]),
        # "neck" is in no group, so it trains with the last group's optimizer.
        ([["body"], ["head"]], [["body"], ["neck", "head"]]),
    ],
    ids=["one-group-per-layer", "ungrouped-goes-to-last"],
)
def test_each_group_moves_as_its_own_optimizer_alone(groups, partition) -> None:
    x, y = _data()
    rates = [1e-3, keras.optimizers.schedules.ExponentialDecay(3e-2, 1, 0.5), 0.3][
        -len(partition) :
    ]
    model = _model()
    reference = _model()
    reference.set_weights(model.get_weights())

    model.compile(
        optimizer=discriminative(model, keras.optimizers.Adam(beta_1=0.8), rates, groups=groups),
        loss="mse",
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)

    alone = [keras.optimizers.Adam(learning_rate=rate, beta_1=0.8) for rate in rates]
    _train_by_hand(reference, partition, alone, x, y)

    start = _model().get_weights()
    for trained, expected, initial in zip(
        model.get_weights(), reference.get_weights(), start, strict=True
    ):
        assert not np.allclose(expected, initial)  # the comparison is not vacuous
        np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-6)


def test_pair_spreads_rates_geometrically_from_first_to_last_group() -> None:
    model = _model()
    for lrs in [(1e-4, 1e-1), slice(1e-4, 1e-1)]:
        owners = rate_owners(discriminative(model, keras.optimizers.SGD(), lrs))
        rates = [float(owner.learning_rate) for owner in owners]
        np.testing.assert_allclose(rates, np.geomspace(1e-4, 1e-1, 3), rtol=1e-6)
    single = discriminative(model, keras.optimizers.SGD(), (1e-4, 1e-1), groups=[model.layers])
    assert [float(o.learning_rate) for o in rate_owners(single)] == pytest.approx([1e-1])


def test_group_optimizers_are_clones_of_the_template() -> None:
    model = _model()
    template = keras.optimizers.SGD(momentum=0.7, nesterov=True, clipnorm=2.0, weight_decay=1e-3)
    owners = rate_owners(discriminative(model, template, [0.1, 0.2, 0.3]))
    for owner, rate in zip(owners, [0.1, 0.2, 0.3], strict=True):
        config = owner.get_config()
        assert config["learning_rate"] == pytest.approx(rate)
        for key in ("momentum", "nesterov", "clipnorm", "weight_decay"):
            assert config[key] == template.get_config()[key]
        assert owner is not template


def test_every_group_updates_in_the_same_single_train_step() -> None:
    """Per-layer rates cost no extra passes: one compiled train step moves every group."""
    x, y = _data()
    model = _model()
    multi = discriminative(model, keras.optimizers.SGD(), (1e-3, 1e-1))
    model.compile(optimizer=multi, loss="mse")

    for step, start in enumerate(range(0, len(x), BATCH_SIZE), start=1):
        before = model.get_weights()
        model.train_on_batch(x[start : start + BATCH_SIZE], y[start : start + BATCH_SIZE])
        # One step: the MultiOptimizer and every group's optimizer advanced once...
        assert int(multi.iterations) == step
        assert [int(owner.iterations) for owner in rate_owners(multi)] == [step] * 3
        # ...and every weight of every group changed.
        after = model.get_weights()
        assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_model_saves_and_reloads_with_rates_and_state(tmp_path: Path) -> None:
    x, y = _data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)
    model = _model()
    model.compile(
        optimizer=discriminative(
            model, keras.optimizers.Adam(), [1e-3, schedule], groups=[["body", "neck"], "head"]
        ),
        loss="mse",
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)

    assert isinstance(reloaded.optimizer, keras.optimizers.MultiOptimizer)
    before, after = rate_owners(model.optimizer), rate_owners(reloaded.optimizer)
    assert len(after) == 2
    assert float(after[0].learning_rate) == pytest.approx(1e-3)
    assert after[1].get_config()["learning_rate"] == before[1].get_config()["learning_rate"]
    assert int(reloaded.optimizer.iterations) == NUM_BATCHES
    for saved, loaded in zip(before, after, strict=True):
        assert len(saved.variables) == len(loaded.variables)
        for a, b in zip(saved.variables, loaded.variables, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    for m in (model, reloaded):
        m.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    for continued, resumed in zip(model.get_weights(), reloaded.get_weights(), strict=True):
        np.testing.assert_allclose(resumed, continued, rtol=1e-6, atol=1e-7)


def _nested_model() -> keras.Model:
    block = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="inner")], name="block")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="head")(block(inputs))
    return keras.Model(inputs, outputs)


def _inner(model: keras.Model) -> keras.layers.Layer:
    return model.get_layer("block").get_layer("inner")


@pytest.mark.parametrize(
    ("make_model", "lrs", "groups", "message"),
    [
        (_model, [0.1, 0.2], [["body", "neck"], ["neck", "head"]], "groups 0 and 1"),
        (_nested_model, [0.1, 0.2], [["block"], [_inner]], "groups 0 and 1"),
        (_model, [0.1, 0.2], None, "2 rates for 3 layer groups"),
        (_model, (0.1, 0.01), None, "greater than"),
        (_model, [0.1, 0.0, 0.2], None, r"`lrs\[1\]` must be > 0, got 0.0"),
        (_model, [0.1, -1.0, 0.2], None, r"`lrs\[1\]` must be > 0, got -1.0"),
        (_model, [0.1, float("nan"), 0.2], None, r"`lrs\[1\]` must be finite"),
        (_model, (0.0, 0.1), None, "`low` must be > 0"),
        (_model, (0.01, float("inf")), None, "`high` must be finite"),
        (_model, (0.01, 0.05, 0.1), None, "pair"),
        (_model, slice(0.01, 0.1, 2), None, "step"),
        (_model, [0.1], ["nope"], "does not have"),
        (_model, [0.1, 0.2], [["body"], []], "empty"),
        (_model, [0.1, 0.2], [["body"], ["drop"]], "no weights"),
        (_model, [0.1], [], "empty"),
    ],
)
def test_bad_input_raises_value_error(make_model, lrs, groups, message) -> None:
    model = make_model()
    if groups is not None and not isinstance(groups, str):
        groups = [[m(model) if callable(m) else m for m in group] for group in groups]
    with pytest.raises(ValueError, match=message):
        discriminative(model, keras.optimizers.SGD(), lrs, groups=groups)


def test_layer_names_that_clash_inside_nested_layers_are_refused() -> None:
    block = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="head")], name="block")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(block(inputs)))
    with pytest.raises(ValueError, match="distinct names"):
        discriminative(model, keras.optimizers.SGD(), [0.1, 0.2], groups=["block", "head"])


def test_layer_of_another_model_and_unbuilt_model_are_refused() -> None:
    model, other = _model(), _model()
    with pytest.raises(ValueError, match="not part of the model"):
        discriminative(model, keras.optimizers.SGD(), [0.1], groups=[other.layers[0]])
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Build it first"):
        discriminative(unbuilt, keras.optimizers.SGD(), [0.1])


def test_wrapped_template_and_non_numeric_rate_raise_type_error() -> None:
    model = _model()
    multi = discriminative(model, keras.optimizers.SGD(), (0.01, 0.1))
    with pytest.raises(TypeError, match="plain Keras optimizer"):
        discriminative(model, multi, (0.01, 0.1))
    with pytest.raises(TypeError, match=r"`lrs\[1\]` must be a number or a LearningRateSchedule"):
        discriminative(model, keras.optimizers.SGD(), [0.1, "fast", 0.2])
    with pytest.raises(TypeError, match="`low`"):
        discriminative(model, keras.optimizers.SGD(), ("slow", 0.1))


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        # A wrong type is a TypeError (before the shared checks these were ValueErrors).
        ("body", "list of layer groups"),
        ([["body"], [3]], r"`groups\[1\]` contains 3"),
    ],
)
def test_groups_of_the_wrong_type_raise_type_error(groups, message) -> None:
    with pytest.raises(TypeError, match=message):
        discriminative(_model(), keras.optimizers.SGD(), [0.1, 0.2], groups=groups)
