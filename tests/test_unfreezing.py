"""Tests for lrtools.callbacks.GradualUnfreezing (ULMFiT's gradual unfreezing)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from _interrupt import RaiseAtStep

from lrtools._rates import current_rate, rate_owners
from lrtools.callbacks import GradualUnfreezing
from lrtools.optimizers import discriminative

RATES = [1e-3, 3e-3, 1e-2]
rng = np.random.default_rng(0)
X = rng.normal(size=(32, 4)).astype("float32")
Y = (X @ rng.normal(size=(4, 1))).astype("float32")


def build_network(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh", name="first"),
            keras.layers.Dense(5, activation="tanh", name="second"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def build_model(template: keras.optimizers.Optimizer, seed: int = 0) -> keras.Model:
    model = build_network(seed)
    model.compile(optimizer=discriminative(model, template, RATES), loss="mse")
    return model


def fit(model: keras.Model, epochs: int, callbacks: list, initial_epoch: int = 0):
    return model.fit(
        X,
        Y,
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


class EpochWeights(keras.callbacks.Callback):
    """Records each layer's weights at the end of every epoch, and every group's rate."""

    def __init__(self):
        super().__init__()
        self.weights: list[list[list[np.ndarray]]] = []
        self.rates: list[list[float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append([current_rate(o) for o in rate_owners(self.model.optimizer)])

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([layer.get_weights() for layer in self.model.layers])


def moved(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(),
    "sgd-momentum": lambda: keras.optimizers.SGD(momentum=0.9, nesterov=True),
    "adamw-decay": lambda: keras.optimizers.AdamW(weight_decay=0.5),
}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_frozen_groups_do_not_move_and_unfrozen_ones_do(make_optimizer):
    model = build_model(make_optimizer())
    initial = [layer.get_weights() for layer in model.layers]
    record = EpochWeights()
    history = fit(model, 4, [GradualUnfreezing(), record])
    # layers: first, second, head; after epoch e the last e + 1 groups have trained.
    for epoch, weights in enumerate(record.weights):
        for index, (before, after) in enumerate(zip(initial, weights, strict=True)):
            assert moved(before, after) == (index >= 2 - epoch), (epoch, model.layers[index].name)
    # Once unfrozen, a group moves in every epoch.
    for earlier, later in zip(record.weights[2:], record.weights[3:]):
        assert all(moved(b, a) for b, a in zip(earlier, later, strict=True))
    assert history.history["unfrozen_groups"] == [1, 2, 3, 3]
    # The optimizer's own rates never change: the mask lives inside the step only.
    np.testing.assert_allclose(record.rates, [RATES] * len(record.rates), rtol=1e-6)


def test_unfrozen_groups_train_at_their_own_rates():
    # In the first epoch only the head trains: exactly as with a frozen body and SGD at the
    # head's rate (plain SGD has no state, so frozen and zero-rate bodies give the same head).
    model = build_model(keras.optimizers.SGD())
    reference = build_network()
    for layer in reference.layers[:-1]:
        layer.trainable = False
    reference.compile(optimizer=keras.optimizers.SGD(RATES[-1]), loss="mse")
    fit(model, 1, [GradualUnfreezing()])
    fit(reference, 1, [])
    for actual, expected in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def test_epochs_per_group_and_resume_follow_the_epoch_number():
    unfreezing = GradualUnfreezing(epochs_per_group=2)
    assert [unfreezing.unfrozen_groups(e, 3) for e in range(7)] == [1, 1, 2, 2, 3, 3, 3]
    # A run resumed at epoch 4 with one epoch per group trains every group at once.
    model = build_model(keras.optimizers.Adam())
    initial = model.get_weights()
    history = fit(model, 5, [GradualUnfreezing()], initial_epoch=4)
    assert history.history["unfrozen_groups"] == [3]
    assert all(moved([b], [a]) for b, a in zip(initial, model.get_weights(), strict=True))


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "ctrl-c"]
)
def test_a_failed_fit_leaves_nothing_behind(error):
    model = build_model(keras.optimizers.Adam())
    with pytest.raises(type(error)):
        fit(model, 3, [GradualUnfreezing(), RaiseAtStep(2, error)])  # in the head-only epoch
    owners = rate_owners(model.optimizer)
    assert all("_get_current_learning_rate" not in vars(owner) for owner in owners)
    np.testing.assert_allclose([current_rate(o) for o in owners], RATES, rtol=1e-6)
    # The next fit without the callback trains every group, at once.
    before = [layer.get_weights() for layer in model.layers]
    fit(model, 1, [])
    after = [layer.get_weights() for layer in model.layers]
    assert all(moved(b, a) for b, a in zip(before, after, strict=True))


def test_the_mask_composes_with_a_schedule_in_the_optimizer():
    model = build_network()
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 4, 0.5)
    optimizer = discriminative(model, keras.optimizers.SGD(), [1e-3, 1e-3, schedule])
    model.compile(optimizer=optimizer, loss="mse")
    initial = [layer.get_weights() for layer in model.layers]
    fit(model, 1, [GradualUnfreezing()])
    after = [layer.get_weights() for layer in model.layers]
    assert [moved(b, a) for b, a in zip(initial, after, strict=True)] == [False, False, True]


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, ValueError), ("2", TypeError), (True, TypeError)],
)
def test_bad_epochs_per_group_is_refused(value, error):
    with pytest.raises(error, match="epochs_per_group"):
        GradualUnfreezing(epochs_per_group=value)


def test_an_optimizer_with_one_group_is_refused():
    model = build_network()
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    with pytest.raises(ValueError, match="several layer groups"):
        fit(model, 1, [GradualUnfreezing()])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_outside_fit_is_refused():
    model = build_model(keras.optimizers.Adam())
    unfreezing = GradualUnfreezing()
    unfreezing.set_model(model)
    with pytest.raises(RuntimeError, match="inside model.fit"):
        unfreezing.on_train_begin()


def test_docstring_example_runs():
    import doctest

    import lrtools._unfreezing

    result = doctest.testmod(lrtools._unfreezing, verbose=False)
    assert result.attempted > 0 and result.failed == 0, result
