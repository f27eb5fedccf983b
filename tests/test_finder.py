"""Tests for lrtools.finder: the learning-rate range test."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import lrtools
from lrtools import schedules
from lrtools.finder import DISAGREEMENT_FACTOR, METHODS, RangeTestResult, lr_range_test

QUIET = {"verbose": 0}


# --------------------------------------------------------------------------- helpers


def least_squares(seed: int = 0, rows: int = 64):
    """A linear least-squares problem and its divergence threshold for gradient descent.

    Keras's MSE is the mean over rows of (x.w + b - y)^2, so its Hessian in
    (w, b) is H = 2/n Xb^T Xb with a column of ones for the bias; full-batch
    gradient descent diverges for rates above 2 / lambda_max(H).
    """
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(rows, 4)) * [1.0, 2.0, 0.5, 3.0]).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(rows, 1))).astype("float32")
    with_bias = np.hstack([x, np.ones((rows, 1))]).astype("float64")
    hessian = 2.0 / rows * with_bias.T @ with_bias
    return x, y, 2.0 / np.linalg.eigvalsh(hessian).max()


def linear_model(optimizer) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def small_net(optimizer, *, dtype=None) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", dtype=dtype, name="hidden"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(1, dtype=dtype, name="head"),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    return model


def regression_data(rows: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype("float32")
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2]).astype("float32")
    return x, y


def state(model: keras.Model) -> list[np.ndarray]:
    """Every value the test must restore: weights, optimizer and metric variables."""
    variables = [*model.variables, *model.optimizer.variables, *model.metrics_variables]
    return [np.array(v.numpy()) for v in variables]


def assert_same_state(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        assert old.dtype == new.dtype
        assert np.array_equal(old, new), "a variable changed"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


# --------------------------------------------------------------------------- theory


@pytest.mark.parametrize("seed", [0, 1])
def test_stops_just_above_the_gradient_descent_threshold(seed):
    x, y, threshold = least_squares(seed)
    model = linear_model(keras.optimizers.SGD(0.01))  # plain gradient descent, no momentum
    result = lr_range_test(
        model,
        x,
        y,
        batch_size=len(x),  # the whole data set each step: gradient descent
        start_lr=threshold / 100,
        end_lr=threshold * 100,
        num_steps=200,
        **QUIET,
    )
    assert result.diverged
    # Below the threshold gradient descent on a quadratic never increases the loss.
    stable = result.lrs[:-1] < threshold
    steps = result.losses[1:][stable] / result.losses[:-1][stable]
    assert np.all(steps <= 1 + 1e-5)
    # The test stops above the threshold, but not far above (measured: 2.8x-3.0x).
    assert threshold < result.lrs[-1] < 3.5 * threshold
    suggestions = result.suggestions()
    for method in METHODS:
        assert suggestions[method] < threshold
    base_lr, max_lr = result.suggest_range()
    assert base_lr < max_lr < threshold


def test_schedule_optimizer_sweeps_the_same_rates_as_a_float_one():
    x, y, threshold = least_squares()
    kwargs = {"batch_size": len(x), "start_lr": threshold / 100, "end_lr": threshold * 100}
    plain = lr_range_test(linear_model(keras.optimizers.SGD(0.01)), x, y, **kwargs, **QUIET)
    keras.utils.set_random_seed(0)
    decaying = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=1, decay_rate=0.5)
    scheduled = lr_range_test(linear_model(keras.optimizers.SGD(decaying)), x, y, **kwargs, **QUIET)
    assert len(scheduled.lrs) == len(plain.lrs)
    np.testing.assert_allclose(scheduled.losses, plain.losses, rtol=1e-5)


# --------------------------------------------------------------------------- restore


def sgd_momentum_float():
    return keras.optimizers.SGD(0.05, momentum=0.9)


def adam_float():
    return keras.optimizers.Adam(1e-3)


def sgd_keras_schedule():
    return keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(0.05, decay_steps=1000), momentum=0.9
    )


def adam_lrtools_schedule():
    return keras.optimizers.Adam(schedules.Warmup(schedules.CosineDecay(1e-3, 1000), 10))


def adam_keras_schedule():
    return keras.optimizers.Adam(
        keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=100, decay_rate=0.9)
    )


@pytest.mark.parametrize(
    "make_optimizer",
    [
        sgd_momentum_float,
        adam_float,
        sgd_keras_schedule,
        adam_keras_schedule,
        adam_lrtools_schedule,
    ],
)
def test_restores_weights_slots_step_and_rate_exactly(make_optimizer):
    x, y = regression_data()
    model = small_net(make_optimizer())
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # non-zero slots and step counter
    optimizer = model.optimizer
    rate, train_function = optimizer._learning_rate, model.train_function
    rate_value = np.array(keras.ops.convert_to_numpy(optimizer.learning_rate))
    before = state(model)

    result = lr_range_test(model, x, y, num_steps=30, **QUIET)

    assert len(result.lrs) > 5
    assert_same_state(before, state(model))
    assert optimizer._learning_rate is rate
    assert model.train_function is train_function
    assert np.array_equal(keras.ops.convert_to_numpy(optimizer.learning_rate), rate_value)
    # The restored model trains on: its step counter and rate move as before the test.
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert int(optimizer.iterations.numpy()) == 2 * math.ceil(len(x) / 32)


def test_restore_false_keeps_the_trained_weights_but_puts_the_rate_back():
    x, y = regression_data()
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=1000)
    model = small_net(keras.optimizers.SGD(schedule))
    model.fit(x, y, epochs=1, verbose=0)
    weights = [w.numpy().copy() for w in model.weights]
    result = lr_range_test(model, x, y, num_steps=20, restore=False, **QUIET)
    assert model.optimizer._learning_rate is schedule
    assert int(model.optimizer.iterations.numpy()) == 3 + len(result.lrs)
    assert not all(np.array_equal(w, v.numpy()) for w, v in zip(weights, model.weights))


def test_unbuilt_model_is_built_and_left_untrained():
    x, y = regression_data()
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    lr_range_test(model, x, y, num_steps=10, **QUIET)
    assert model.built and model.optimizer.built
    assert int(model.optimizer.iterations.numpy()) == 0
    for slot in model.optimizer.variables[2:]:  # iterations and rate come first
        assert not np.any(slot.numpy())


def test_a_fresh_model_keeps_the_step_the_test_traced_when_its_rate_is_a_variable():
    # Before, the test put back the fresh model's train_function (None): every later
    # range test or fit traced the step again (the warm range test's extra trace).
    x, y = regression_data()
    model = small_net(adam_float())
    lr_range_test(model, x, y, num_steps=20, **QUIET)
    traced = model.train_function
    assert traced is not None
    lr_range_test(model, x, y, num_steps=20, **QUIET)
    assert model.train_function is traced  # the second test did not trace again
    assert int(model.optimizer.iterations.numpy()) == 0
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # the kept step trains the model
    assert int(model.optimizer.iterations.numpy()) == math.ceil(len(x) / 32)


@pytest.mark.parametrize("make_optimizer", [sgd_keras_schedule, adam_lrtools_schedule])
def test_a_step_traced_with_the_temporary_rate_variable_is_dropped(make_optimizer):
    x, y = regression_data()
    model = small_net(make_optimizer())
    lr_range_test(model, x, y, num_steps=20, **QUIET)
    assert model.train_function is None  # the next fit traces the step with the schedule
    schedule = model.optimizer._learning_rate
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    steps = int(model.optimizer.iterations.numpy())
    expected = float(keras.ops.convert_to_numpy(schedule(steps)))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == expected


def test_restores_after_an_error_inside_the_test(monkeypatch):
    x, y = regression_data()
    model = small_net(sgd_keras_schedule())
    model.fit(x, y, epochs=1, verbose=0)
    rate, before = model.optimizer._learning_rate, state(model)
    train_on_batch = model.train_on_batch
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return train_on_batch(*args, **kwargs)

    monkeypatch.setattr(model, "train_on_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        lr_range_test(model, x, y, num_steps=20, **QUIET)
    assert model.optimizer._learning_rate is rate
    assert_same_state(before, state(model))


def test_loss_scale_optimizer_is_driven_and_restored():
    x, y = regression_data()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01, momentum=0.9))
    model = small_net(optimizer, dtype="mixed_float16")
    model.fit(x, y, epochs=1, verbose=0)
    before = state(model)
    result = lr_range_test(model, x, y, start_lr=1e-5, end_lr=100.0, num_steps=60, **QUIET)
    assert result.diverged
    assert 1e-5 < result.suggest() < 100.0
    assert_same_state(before, state(model))


def test_multi_optimizer_keeps_group_ratios_and_is_restored(monkeypatch):
    x, y = regression_data()
    head = keras.optimizers.SGD(0.1, momentum=0.9)
    body = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.01, decay_steps=1000))
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(default_optimizer=body, optimizer_map={"head/.*": head})
    )
    model = small_net(optimizer)
    model.fit(x, y, epochs=1, verbose=0)
    body_rate = body._learning_rate
    before = state(model)
    seen = []
    train_on_batch = model.train_on_batch

    def spy(*args, **kwargs):
        seen.append((float(head.learning_rate.numpy()), float(body.learning_rate.numpy())))
        return train_on_batch(*args, **kwargs)

    monkeypatch.setattr(model, "train_on_batch", spy)
    result = lr_range_test(model, x, y, num_steps=20, **QUIET)

    head_rates, body_rates = np.array(seen).T
    np.testing.assert_allclose(head_rates, result.lrs, rtol=1e-6)  # the faster group: lr itself
    ratio = float(body_rate(3).numpy()) / 0.1  # body / head at the start (step 3)
    np.testing.assert_allclose(body_rates / head_rates, ratio, rtol=1e-5)
    assert body._learning_rate is body_rate
    assert_same_state(before, state(model))


# --------------------------------------------------------------------------- data


def dataset(x, y, batch_size=32):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(batch_size)


def generator(x, y, batch_size=32):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size=32):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


@pytest.mark.parametrize("kind", ["arrays", "dataset", "generator", "pydataset"])
def test_every_input_kind_cycles_through_its_batches(kind):
    x, y = regression_data(rows=96)  # 3 batches of 32 for 40 steps
    inputs = {
        "arrays": lambda: (x, y),
        "dataset": lambda: (dataset(x, y), None),
        "generator": lambda: (generator(x, y), None),
        "pydataset": lambda: (Batches(x, y), None),
    }[kind]()
    model = small_net(keras.optimizers.SGD(0.01))
    result = lr_range_test(model, *inputs, end_lr=1e-2, num_steps=40, **QUIET)
    assert len(result.lrs) == 40 and not result.diverged
    assert np.all(np.isfinite(result.losses))


def spy_batches(monkeypatch, model):
    batches = []
    train_on_batch = model.train_on_batch

    def spy(x, y=None, *args, **kwargs):
        batches.append(np.array(x))
        return train_on_batch(x, y, *args, **kwargs)

    monkeypatch.setattr(model, "train_on_batch", spy)
    return batches


def test_max_samples_on_arrays_tests_a_fixed_random_sample(monkeypatch):
    x, y = regression_data(rows=96)
    x[:, 0] = np.arange(len(x))  # a row id
    model = small_net(keras.optimizers.SGD(0.01))
    batches = spy_batches(monkeypatch, model)
    lr_range_test(model, x, y, max_samples=20, batch_size=8, end_lr=1e-2, num_steps=12, **QUIET)
    ids = np.concatenate([batch[:, 0] for batch in batches])
    assert {len(batch) for batch in batches} == {8}
    assert len(set(ids)) == 20
    assert not set(ids) <= set(range(20))  # random rows, not the first ones


def test_max_samples_on_a_generator_keeps_the_first_samples(monkeypatch):
    x, y = regression_data(rows=96)
    model = small_net(keras.optimizers.SGD(0.01))
    batches = spy_batches(monkeypatch, model)
    lr_range_test(model, generator(x, y, 8), max_samples=20, end_lr=1e-2, num_steps=12, **QUIET)
    seen = np.unique(np.concatenate(batches), axis=0)
    assert len(seen) == 20
    assert np.array_equal(seen, np.unique(x[:20], axis=0))


def test_validation_data_records_the_loss_on_the_fixed_batch_after_each_step():
    x, y = regression_data(rows=96)
    x_val, y_val = regression_data(rows=40, seed=1)
    model = small_net(keras.optimizers.SGD(0.01))
    result = lr_range_test(
        model, x, y, validation_data=(x_val, y_val), num_steps=15, restore=False, **QUIET
    )
    assert result.validation
    final = model.evaluate(x_val, y_val, batch_size=len(x_val), verbose=0)[0]
    np.testing.assert_allclose(result.losses[-1], final, rtol=1e-5)


def test_repeats_start_from_the_same_state_with_different_shuffles():
    x, y = regression_data(rows=96)
    model = small_net(keras.optimizers.SGD(0.01))
    model.layers[1].rate = 0.0  # no dropout: full-batch repeats must then be identical
    full = lr_range_test(model, x, y, batch_size=96, num_steps=30, repeats=2, **QUIET)
    # Same start, same full batch: equal up to the summation order of the shuffled rows.
    np.testing.assert_allclose(full.repeat_losses[0][:10], full.repeat_losses[1][:10], rtol=1e-5)
    shuffled = lr_range_test(model, x, y, batch_size=16, num_steps=30, repeats=3, **QUIET)
    assert shuffled.repeats == 3
    assert not np.array_equal(shuffled.repeat_losses[0], shuffled.repeat_losses[1])
    steps = len(shuffled.lrs)
    np.testing.assert_allclose(
        shuffled.losses, np.mean([r[:steps] for r in shuffled.repeat_losses], axis=0)
    )
    per_repeat = shuffled.repeat_suggestions("valley")
    assert per_repeat.shape == (3,)
    assert math.isclose(shuffled.suggest("valley"), np.exp(np.median(np.log(per_repeat))))
    spreads = shuffled.suggestions().spreads
    assert set(spreads) == set(METHODS)
    assert all(low <= high for low, high in spreads.values())


@pytest.mark.parametrize("mode", ["exponential", "linear"])
def test_modes_space_the_rates(mode):
    x, y = regression_data()
    model = small_net(keras.optimizers.SGD(0.01))
    result = lr_range_test(
        model, x, y, start_lr=1e-4, end_lr=1e-2, num_steps=11, mode=mode, **QUIET
    )
    expected = {"exponential": np.geomspace, "linear": np.linspace}[mode](1e-4, 1e-2, 11)
    np.testing.assert_allclose(result.lrs, expected)


# --------------------------------------------------------------------------- early stops


def test_stops_on_a_non_finite_loss():
    x, y, _ = least_squares()
    model = linear_model(keras.optimizers.SGD(0.01))
    result = lr_range_test(
        model, x, y, batch_size=len(x), end_lr=1e12, diverge_factor=math.inf, **QUIET
    )
    assert result.diverged and len(result.lrs) < 100
    assert not np.isfinite(result.losses[-1])
    assert np.all(np.isfinite(result.losses[:-1]))
    assert result.suggest() < result.lrs[-1]


def test_nan_from_the_first_step_says_so_instead_of_suggesting():
    x, y = regression_data()
    y[0, 0] = np.nan
    model = small_net(keras.optimizers.SGD(0.01))
    with pytest.warns(UserWarning, match="not finite from the first step"):
        result = lr_range_test(model, x, y, batch_size=len(x), **QUIET)
    assert result.diverged and len(result.lrs) == 1
    for method in METHODS:
        with pytest.raises(ValueError, match="not finite"):
            result.suggest(method)
    assert "no suggestion" in repr(result)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, ValueError, "smaller than end_lr"),
        ({"start_lr": 0.0}, ValueError, "`start_lr` must be > 0"),
        ({"end_lr": -1.0}, ValueError, "`end_lr` must be > 0"),
        ({"end_lr": math.nan}, ValueError, "`end_lr` must be finite"),
        ({"num_steps": 1}, ValueError, "num_steps"),
        ({"mode": "cubic"}, ValueError, "mode"),
        ({"smoothing": 1.0}, ValueError, "smoothing"),
        ({"diverge_factor": 1.0}, ValueError, "diverge_factor"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"repeats": 0}, ValueError, "repeats"),
        ({"max_samples": 0}, ValueError, "max_samples"),
        ({"verbose": 3}, ValueError, "verbose"),
        ({"validation_data": 3}, TypeError, "validation_data"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x, y = regression_data()
    with pytest.raises(error, match=match):
        lr_range_test(small_net(keras.optimizers.SGD(0.01)), x, y, **kwargs)


def test_uncompiled_model_and_non_model():
    x, y = regression_data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compile"):
        lr_range_test(model, x, y)
    with pytest.raises(TypeError, match="keras.Model"):
        lr_range_test("model", x, y)


@pytest.mark.parametrize(
    ("make_data", "error", "match"),
    [
        (lambda x, y: (x[:0], y[:0]), ValueError, "empty"),
        (lambda x, y: (x, y[:10]), ValueError, "same number of rows"),
        (lambda x, y: (dataset(x, y).take(0), None), ValueError, "no batches"),
        (lambda x, y: (iter([]), None), ValueError, "no batches"),
        (lambda x, y: (dataset(x, y), y), ValueError, "y must be None"),
        (lambda x, y: (5, None), TypeError, "x must be"),
    ],
)
def test_bad_data(make_data, error, match):
    x, y = regression_data()
    with pytest.raises(error, match=match):
        lr_range_test(small_net(keras.optimizers.SGD(0.01)), *make_data(x, y), **QUIET)


def test_unknown_method():
    result = RangeTestResult(np.geomspace(1e-4, 1, 10), [np.linspace(1, 0, 10)])
    with pytest.raises(ValueError, match="Unknown method"):
        result.suggest("median")
    with pytest.raises(ValueError, match="Unknown method"):
        result.plot(suggest="median")


# --------------------------------------------------------------------------- the result


def curve(lrs, centre=1e-2):
    """A loss that falls fastest at ``centre`` (in log rate) and explodes at 100x ``centre``."""
    return 1.0 - np.tanh(np.log(lrs / centre)) + (lrs / (100 * centre)) ** 4


def test_suggestion_methods_on_a_known_curve():
    lrs = np.geomspace(1e-5, 10.0, 301)
    result = RangeTestResult(lrs, [curve(lrs)], smoothing=0.0)
    step = np.log(lrs[1] / lrs[0])
    assert abs(np.log(result.suggest("steepest") / 1e-2)) <= step
    lowest = lrs[np.argmin(curve(lrs))]
    assert math.isclose(result.suggest("minimum"), lowest / 10)
    # The valley runs from the first step after the skipped 10 % to the minimum.
    skip = len(lrs) // 10
    assert math.isclose(result.suggest("valley"), lrs[(skip + np.argmin(curve(lrs))) // 2])
    base_lr, max_lr = result.suggest_range()
    assert base_lr < 1e-2 < max_lr < lowest


def test_suggestions_flag_disagreement():
    lrs = np.geomspace(1e-5, 10.0, 301)
    agreeing = RangeTestResult(lrs, [curve(lrs)], smoothing=0.0).suggestions()
    assert agreeing.ratio == max(agreeing.rates.values()) / min(agreeing.rates.values())
    assert agreeing.disagree == (agreeing.ratio > DISAGREEMENT_FACTOR)
    # Two drops far apart: steepest picks the first, the minimum lies after the second.
    drop = 1.0 - np.tanh(np.log(lrs / 1e-4))
    two_drops = drop + 0.5 * (1.0 - np.tanh(np.log(lrs / 1e-1))) + (lrs / 3.0) ** 4
    disagreeing = RangeTestResult(lrs, [two_drops], smoothing=0.0).suggestions()
    assert disagreeing.disagree and disagreeing.ratio > DISAGREEMENT_FACTOR
    assert "DISAGREE" in repr(disagreeing)


def test_loss_that_never_falls_gives_no_suggestion():
    lrs = np.geomspace(1e-5, 10.0, 50)
    result = RangeTestResult(lrs, [np.linspace(1.0, 5.0, 50)])
    with pytest.raises(ValueError, match="never fell"):
        result.suggest()
    with pytest.raises(ValueError, match="never fell"):
        result.suggest_range()


def test_smoothing_is_a_bias_corrected_moving_average():
    losses = np.array([4.0, 2.0, 1.0, 3.0])
    result = RangeTestResult(np.geomspace(1e-3, 1.0, 4), [losses], smoothing=0.5)
    average, expected = 0.0, []
    for t, loss in enumerate(losses):
        average = 0.5 * average + 0.5 * loss
        expected.append(average / (1 - 0.5 ** (t + 1)))
    np.testing.assert_allclose(result.smoothed_losses, expected)
    unsmoothed = RangeTestResult(np.geomspace(1e-3, 1.0, 4), [losses], smoothing=0.0)
    np.testing.assert_array_equal(unsmoothed.smoothed_losses, losses)


def test_to_frame_repr_and_plot():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    lrs = np.geomspace(1e-5, 10.0, 120)
    result = RangeTestResult(lrs, [curve(lrs), 1.1 * curve(lrs)[:100]], diverged=True)
    frame = result.to_frame()
    assert list(frame.columns) == ["repeat", "step", "lr", "loss", "smoothed_loss"]
    assert len(frame) == 220 and set(frame["repeat"]) == {0, 1}
    np.testing.assert_array_equal(frame.loc[frame["repeat"] == 1, "lr"], lrs[:100])
    text = repr(result)
    assert "steps=100" in text and "repeats=2" in text and "valley=" in text
    ax = result.plot(suggest="valley")
    assert ax.get_xscale() == "log"
    marked = [line for line in ax.get_lines() if line.get_label().startswith("valley")]
    assert len(marked) == 1 and math.isclose(marked[0].get_xdata()[0], result.suggest("valley"))
    assert len(ax.collections) == 1  # the band over the repeats
    assert "learning rate" in ax.get_xlabel()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_progress_bar_and_silence(capsys):
    x, y = regression_data()
    model = small_net(keras.optimizers.SGD(0.01))
    lr_range_test(model, x, y, num_steps=5, verbose=0)
    assert capsys.readouterr().out == ""
    lr_range_test(model, x, y, num_steps=5, verbose=1)
    assert "lr" in capsys.readouterr().out


def test_writes_no_files(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the range test must not write temporary files")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.chdir(tmp_path)
    x, y = regression_data()
    lr_range_test(small_net(keras.optimizers.Adam(1e-3)), x, y, num_steps=10, **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_package_shortcuts():
    assert lrtools.lr_range_test is lr_range_test
    assert lrtools.RangeTestResult is RangeTestResult


# --------------------------------------------------------------------------- integration


MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from lrtools import lr_range_test

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = (x[:, :1] - x[:, 1:2]).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=1000)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    before = [np.array(v.numpy()) for v in model.variables + model.optimizer.variables]
    with strategy.scope():
        result = lr_range_test(model, x, y, num_steps=60, verbose=0)
    after = [np.array(v.numpy()) for v in model.variables + model.optimizer.variables]
    assert strategy.num_replicas_in_sync == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert model.optimizer._learning_rate is schedule
    assert result.diverged and 1e-7 < result.suggest() < 10.0
    print("mirrored ok", result.suggestions().rates)
    """
)


@pytest.mark.slow
def test_inside_a_mirrored_strategy_with_two_devices():
    # Logical devices must be set before TensorFlow starts, so this runs in a fresh process.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mirrored ok" in done.stdout


@pytest.mark.slow
def test_suggested_rates_train_a_small_cnn_on_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    images = (digits.images[order, ..., None] / 16.0).astype("float32")
    labels = digits.target[order]
    x_train, y_train, x_test, y_test = images[:1400], labels[:1400], images[1400:], labels[1400:]
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    result = lr_range_test(model, x_train, y_train, batch_size=64, **QUIET)
    start = model.get_weights()

    def accuracy_after_five_epochs(lr):
        model.set_weights(start)
        model.optimizer.learning_rate = lr
        model.fit(x_train, y_train, batch_size=64, epochs=5, verbose=0)
        return model.evaluate(x_test, y_test, verbose=0)[1]

    # Measured over seeds 0-4: 0.957-0.982 for every method; 0.08-0.16 at lr=1e-5.
    for method, lr in result.suggestions().rates.items():
        assert accuracy_after_five_epochs(lr) > 0.95, method
    assert accuracy_after_five_epochs(1e-5) < 0.3  # a rate far below the suggestions fails


# --------------------------------------------------------------------------- issue 13


def test_restore_false_puts_a_float_rate_back_to_its_value():
    x, y = regression_data()
    model = small_net(keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, epochs=1, verbose=0)
    rate = model.optimizer._learning_rate
    weights = [w.numpy().copy() for w in model.weights]
    lr_range_test(model, x, y, num_steps=20, end_lr=1.0, restore=False, **QUIET)
    assert model.optimizer._learning_rate is rate
    assert float(model.optimizer.learning_rate.numpy()) == np.float32(0.05)
    assert not all(np.array_equal(w, v.numpy()) for w, v in zip(weights, model.weights))


def test_restore_must_be_a_real_flag():
    x, y = regression_data()
    with pytest.raises(TypeError, match="restore"):
        lr_range_test(small_net(keras.optimizers.SGD(0.01)), x, y, restore="False", **QUIET)


def test_gradient_accumulation_steps_the_rate_once_per_applied_update(monkeypatch):
    x, y = regression_data(rows=96)
    model = small_net(keras.optimizers.SGD(0.01, gradient_accumulation_steps=3))
    calls = []
    train_on_batch = model.train_on_batch

    def spy(*args, **kwargs):
        step = int(model.optimizer.iterations.numpy())
        rate = float(model.optimizer.learning_rate.numpy())
        logs = train_on_batch(*args, **kwargs)
        calls.append((step, rate, float(logs["loss"])))
        return logs

    monkeypatch.setattr(model, "train_on_batch", spy)
    result = lr_range_test(model, x, y, end_lr=1e-2, num_steps=10, batch_size=16, **QUIET)
    assert len(result.lrs) == 10 and not result.diverged
    assert len(calls) == 30  # three batches per applied update
    steps, rates, losses = np.array(calls).T
    np.testing.assert_array_equal(steps, np.repeat(np.arange(10), 3))  # applied updates
    np.testing.assert_allclose(
        rates.reshape(10, 3), np.repeat(result.lrs[:, None], 3, 1), rtol=1e-6
    )
    np.testing.assert_allclose(result.losses, losses.reshape(10, 3).mean(axis=1), rtol=1e-6)


def test_gradient_accumulation_starting_mid_group_still_updates_at_each_rate(monkeypatch):
    x, y = regression_data(rows=96)
    model = small_net(keras.optimizers.SGD(0.01, gradient_accumulation_steps=2))
    model.train_on_batch(x[:16], y[:16])  # one batch into an accumulation group
    updates, calls = [], []
    train_on_batch = model.train_on_batch

    def spy(*args, **kwargs):
        calls.append(1)
        applied = (int(model.optimizer._iterations.numpy()) + 1) % 2 == 0  # every 2nd batch
        if applied:
            updates.append(float(model.optimizer.learning_rate.numpy()))
        return train_on_batch(*args, **kwargs)

    monkeypatch.setattr(model, "train_on_batch", spy)
    result = lr_range_test(model, x, y, end_lr=1e-2, num_steps=8, **QUIET)
    np.testing.assert_allclose(updates, result.lrs, rtol=1e-6)  # one update per swept rate
    assert len(calls) == 1 + 2 * 7  # the open group is completed first, then groups of 2


def test_val_every_measures_the_whole_validation_set(monkeypatch):
    x, y = regression_data(rows=96)
    x_val, y_val = regression_data(rows=40, seed=1)
    model = small_net(keras.optimizers.SGD(0.01))
    evaluations = []
    evaluate = model.evaluate

    def spy(*args, **kwargs):
        evaluations.append(len(kwargs["x"]))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(model, "evaluate", spy)
    result = lr_range_test(
        model,
        x,
        y,
        validation_data=(x_val, y_val),
        val_every=5,
        batch_size=16,
        end_lr=1e-2,
        num_steps=20,
        restore=False,
        **QUIET,
    )
    assert result.validation
    assert evaluations == [40] * 4  # every 5th of 20 steps, all 40 validation rows
    np.testing.assert_allclose(result.lrs, np.geomspace(1e-7, 1e-2, 20)[4::5])
    final = evaluate(x_val, y_val, batch_size=16, verbose=0)[0]
    np.testing.assert_allclose(result.losses[-1], final, rtol=1e-5)


def test_val_every_works_with_a_dataset_and_checks_its_arguments():
    x, y = regression_data(rows=96)
    x_val, y_val = regression_data(rows=40, seed=1)
    model = small_net(keras.optimizers.SGD(0.01))
    result = lr_range_test(
        model,
        x,
        y,
        validation_data=dataset(x_val, y_val, 16),
        val_every=2,
        end_lr=1e-2,
        num_steps=10,
        **QUIET,
    )
    assert len(result.lrs) == 5
    with pytest.raises(ValueError, match="val_every` needs validation_data"):
        lr_range_test(model, x, y, val_every=2, **QUIET)
    with pytest.raises(TypeError, match="generator is used up"):
        lr_range_test(model, x, y, validation_data=generator(x_val, y_val), val_every=2, **QUIET)
    with pytest.raises(ValueError, match="val_every"):
        lr_range_test(model, x, y, validation_data=(x_val, y_val), val_every=0, **QUIET)
    with pytest.raises(ValueError, match="at least two points"):
        lr_range_test(
            model, x, y, validation_data=(x_val, y_val), val_every=6, num_steps=10, **QUIET
        )


@pytest.mark.parametrize(
    ("make_data", "error", "match"),
    [
        (lambda x, y: (x.tolist(), y.tolist()), TypeError, r"x=np.asarray\(x"),
        (lambda x, y: (x, y[:, 0].tolist()), TypeError, r"y=np.asarray\(y"),
        (lambda x, y: ("train.npz", None), TypeError, "file name.*Load it first"),
        (lambda x, y: (x, y[:10]), ValueError, "x has 96 rows but y has 10"),
    ],
)
def test_bad_input_says_what_to_change(make_data, error, match):
    x, y = regression_data(rows=96)
    with pytest.raises(error, match=match):
        lr_range_test(small_net(keras.optimizers.SGD(0.01)), *make_data(x, y), **QUIET)


def test_a_network_that_learns_nothing_gets_no_suggestion():
    x, y = regression_data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, trainable=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    # Full batches of shuffled rows: the loss is constant up to the rounding of the sum.
    result = lr_range_test(model, x, y, batch_size=len(x), num_steps=30, **QUIET)
    assert np.ptp(result.losses) < 1e-5 * result.losses[0]
    with pytest.raises(ValueError, match="flat"):
        result.suggest()
    with pytest.raises(ValueError, match="flat"):
        result.suggest_range()
