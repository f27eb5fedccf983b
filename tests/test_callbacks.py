"""Tests for lrtools.callbacks.

The central checks re-implement the optimizers' update rules in NumPy, feed them
the rates and momenta the callbacks report for every step, and compare with the
weights ``model.fit`` produced: this proves that the values reach the compiled
train step, not only an attribute.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from _interrupt import RaiseAtStep

from lrtools import callbacks, schedules
from lrtools._rates import rate_object, rate_owners

BATCH_SIZE = 8
N_SAMPLES = 32
STEPS_PER_EPOCH = N_SAMPLES // BATCH_SIZE


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_SAMPLES, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    return x, y


X, Y = make_data()


def build_network(seed: int = 0) -> keras.Model:
    """A two-layer linear network: small enough to re-implement its training in NumPy."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="hidden"), keras.layers.Dense(1, name="out")]
    )


def build_model(optimizer: keras.optimizers.Optimizer, seed: int = 0) -> keras.Model:
    model = build_network(seed)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def fit(model: keras.Model, epochs: int, callbacks_: list, initial_epoch: int = 0):
    return model.fit(
        X,
        Y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks_,
    )


def gradients(weights: list[np.ndarray], step: int) -> list[np.ndarray]:
    """MSE gradients of the two-layer linear model on the batch of ``step``."""
    w1, b1, w2, b2 = weights
    start = (step % STEPS_PER_EPOCH) * BATCH_SIZE
    xb, yb = X[start : start + BATCH_SIZE], Y[start : start + BATCH_SIZE]
    hidden = xb @ w1 + b1
    d_out = 2.0 * (hidden @ w2 + b2 - yb) / BATCH_SIZE
    d_hidden = d_out @ w2.T
    return [xb.T @ d_hidden, d_hidden.sum(0), hidden.T @ d_out, d_out.sum(0)]


def simulate_sgd(weights, rates, momenta, nesterov=False, rate_scales=(1.0, 1.0, 1.0, 1.0)):
    """Keras's SGD update rule with per-step rates and momenta, in float64.

    ``rate_scales`` multiplies the rate of each weight tensor (w1, b1, w2, b2).
    """
    weights = [w.astype("float64") for w in weights]
    velocities = [np.zeros_like(w) for w in weights]
    for step, (step_rate, momentum) in enumerate(zip(rates, momenta, strict=True)):
        for w, v, g, scale in zip(
            weights, velocities, gradients(weights, step), rate_scales, strict=True
        ):
            rate = step_rate * scale
            v *= momentum
            v -= rate * g
            w += momentum * v - rate * g if nesterov else v
    return weights


def simulate_adam(weights, rates, beta_1s, beta_2=0.999, epsilon=1e-7):
    """Keras's Adam update rule with per-step rates and beta_1, in float64."""
    weights = [w.astype("float64") for w in weights]
    ms = [np.zeros_like(w) for w in weights]
    vs = [np.zeros_like(w) for w in weights]
    for step, (rate, beta_1) in enumerate(zip(rates, beta_1s, strict=True)):
        local_step = step + 1
        alpha = rate * np.sqrt(1 - beta_2**local_step) / (1 - beta_1**local_step)
        for w, m, v, g in zip(weights, ms, vs, gradients(weights, step), strict=True):
            m += (g - m) * (1 - beta_1)
            v += (g * g - v) * (1 - beta_2)
            w -= m * alpha / (np.sqrt(v) + epsilon)
    return weights


def assert_weights_close(model: keras.Model, expected: list[np.ndarray]) -> None:
    for actual, wanted in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=2e-5, atol=2e-6)


def max_difference(model: keras.Model, expected: list[np.ndarray]) -> float:
    return max(float(np.abs(a - e).max()) for a, e in zip(model.get_weights(), expected))


class OwnerRates(keras.callbacks.Callback):
    """Records every rate owner's rate before each batch (after the callbacks before it)."""

    def __init__(self):
        super().__init__()
        self.rates: list[list[float]] = []

    def on_train_batch_begin(self, batch, logs=None):
        owners = rate_owners(self.model.optimizer)
        self.rates.append([float(keras.ops.convert_to_numpy(o.learning_rate)) for o in owners])


# --------------------------------------------------------------------------- LRScheduler


def step_decay(epoch):
    return 0.1 * 0.5 ** (epoch // 2)


def test_epoch_function_sets_rates_history_and_updates():
    model = build_model(keras.optimizers.SGD(1.0))
    initial = model.get_weights()
    scheduler = callbacks.LRScheduler(step_decay, unit="epoch")
    history = fit(model, epochs=5, callbacks_=[scheduler])

    expected_per_epoch = [step_decay(epoch) for epoch in range(5)]
    np.testing.assert_allclose(history.history["learning_rate"], expected_per_epoch, rtol=1e-6)
    expected_per_step = np.repeat(expected_per_epoch, STEPS_PER_EPOCH)
    assert scheduler.steps == list(range(5 * STEPS_PER_EPOCH))
    np.testing.assert_allclose(scheduler.rates, expected_per_step, rtol=1e-6)
    assert_weights_close(model, simulate_sgd(initial, expected_per_step, np.zeros(20)))


def test_function_of_epoch_and_rate_receives_the_current_rate():
    model = build_model(keras.optimizers.SGD(0.2))
    seen = []

    def halve(epoch, lr):
        seen.append((epoch, lr))
        return lr * 0.5

    history = fit(model, epochs=3, callbacks_=[callbacks.LRScheduler(halve, unit="epoch")])
    np.testing.assert_allclose([lr for _, lr in seen], [0.2, 0.1, 0.05], rtol=1e-6)
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05, 0.025], rtol=1e-6)


def test_schedule_per_batch_follows_the_step_inside_fit():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5)
    model = build_model(keras.optimizers.SGD(1.0, momentum=0.5))
    initial = model.get_weights()
    scheduler = callbacks.LRScheduler(schedule)
    history = fit(model, epochs=2, callbacks_=[scheduler])

    expected = keras.ops.convert_to_numpy(schedule(np.arange(8)))
    np.testing.assert_allclose(scheduler.rates, expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], expected[[3, 7]], rtol=1e-6)
    assert_weights_close(model, simulate_sgd(initial, expected, np.full(8, 0.5)))


def test_keras_reads_the_rate_of_an_update_through_get_current_learning_rate():
    # The in-step path (lrtools/_step_rate.py) relies on this private Keras accessor: every
    # optimizer update reads its rate by calling ``self._get_current_learning_rate()``, so an
    # instance attribute of that name decides the rate. If a Keras release renames or bypasses
    # it, this test fails first, with the reason, before the behavioural tests above do.
    optimizer = keras.optimizers.SGD(0.1)
    assert callable(getattr(type(optimizer), "_get_current_learning_rate", None))
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer.build([variable])
    gradient = keras.ops.ones((3,))
    vars(optimizer)["_get_current_learning_rate"] = lambda: keras.ops.convert_to_tensor(0.5)
    try:
        optimizer.apply_gradients([(gradient, variable)])
    finally:
        vars(optimizer).pop("_get_current_learning_rate")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), 0.5)  # 1 - 0.5 * 1
    optimizer.apply_gradients([(gradient, variable)])  # the accessor gone: its own 0.1 again
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), 0.4, rtol=1e-6)


def test_multi_optimizer_groups_keep_their_ratio():
    hidden = keras.optimizers.SGD(0.01)
    out = keras.optimizers.SGD(0.1)
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(hidden, {".*/out/.*": out})
    )
    model = build_model(optimizer)
    schedule = schedules.LinearDecay(0.4, decay_steps=8)
    recorder = OwnerRates()
    history = fit(model, epochs=2, callbacks_=[callbacks.LRScheduler(schedule), recorder])

    expected = keras.ops.convert_to_numpy(schedule(np.arange(8)))
    order = rate_owners(model.optimizer)
    recorded = {o.name: [step[order.index(o)] for step in recorder.rates] for o in (hidden, out)}
    np.testing.assert_allclose(recorded[out.name], expected, rtol=1e-6)
    np.testing.assert_allclose(recorded[hidden.name], expected * 0.1, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], expected[[3, 7]], rtol=1e-6)


class CountingCosine(schedules.CosineDecay):
    """A cosine decay that counts how often it is evaluated."""

    calls = 0

    def __call__(self, step):
        CountingCosine.calls += 1
        return super().__call__(step)


def test_schedule_is_not_evaluated_at_every_step():
    # The compiled step computes the rate (traced once: two calls, for this step and the next);
    # the callback's own eager evaluations come a block of _StepTable.BLOCK steps at a time.
    # So the number of calls does not grow with the number of steps.
    calls = []
    for epochs in (2, 6):
        CountingCosine.calls = 0
        schedule = CountingCosine(0.1, decay_steps=4 * epochs)
        model = build_model(keras.optimizers.SGD(1.0))
        initial = model.get_weights()
        scheduler = callbacks.LRScheduler(schedule)
        fit(model, epochs=epochs, callbacks_=[scheduler])
        calls.append(CountingCosine.calls)
        reference = schedules.CosineDecay(0.1, decay_steps=4 * epochs)
        expected = keras.ops.convert_to_numpy(reference(np.arange(4 * epochs)))
        np.testing.assert_allclose(scheduler.rates, expected, rtol=1e-6)
        assert_weights_close(model, simulate_sgd(initial, expected, np.zeros(4 * epochs)))
    assert calls[0] == calls[1] <= 3


def test_rate_at_equals_the_schedule_in_any_order_of_steps():
    schedule = schedules.Warmup(schedules.CosineDecay(0.1, decay_steps=3000), warmup_steps=100)
    scheduler = callbacks.LRScheduler(schedule)
    block = callbacks._StepTable.BLOCK
    # Forward, across block ends, far ahead and back again (a resumed or rewound run).
    steps = [0, 1, block - 1, block, block + 1, 5, 2 * block + 7, 99, 100, 2999, 3500]
    got = [scheduler.rate_at(t, math.nan) for t in steps]
    want = [float(keras.ops.convert_to_numpy(schedule(t))) for t in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_schedule_holding_a_variable_is_evaluated_at_every_step():
    # Scaled's factor may be lowered during training (ReduceLROnPlateau): no table for it.
    schedule = schedules.Scaled(schedules.CosineDecay(0.1, decay_steps=100))
    scheduler = callbacks.LRScheduler(schedules.Warmup(schedule, warmup_steps=10))
    before = scheduler.rate_at(50, math.nan)
    schedule.factor.assign(0.5)
    assert scheduler.rate_at(50, math.nan) == pytest.approx(before / 2, rel=1e-6)


def test_pure_function_per_batch_is_tabled_once_an_epoch_inside_fit():
    calls = []

    def halving(step):
        calls.append(step)
        return 0.1 * 0.5 ** (step // 3)

    expected = [halving(step) for step in range(8)]
    calls.clear()
    for pure in (False, True):
        model = build_model(keras.optimizers.SGD(1.0, momentum=0.5))
        initial = model.get_weights()
        scheduler = callbacks.LRScheduler(halving, pure=pure)
        history = fit(model, epochs=2, callbacks_=[scheduler])
        assert scheduler.steps == list(range(8))
        np.testing.assert_allclose(scheduler.rates, expected, rtol=1e-6)
        np.testing.assert_allclose(history.history["learning_rate"], [0.05, 0.025], rtol=1e-6)
        assert_weights_close(model, simulate_sgd(initial, expected, np.full(8, 0.5)))
    # pure=False: before every batch. pure=True on TensorFlow: once per epoch, for its steps
    # and the next epoch's first (JAX calls it before every batch).
    per_batch = list(range(8))
    tabled = [*range(5), *range(4, 9)] if keras.backend.backend() == "tensorflow" else per_batch
    assert calls == per_batch + tabled


def test_pure_is_refused_for_a_function_of_the_rate():
    with pytest.raises(TypeError, match="pure=False"):
        callbacks.LRScheduler(lambda t, lr: lr, pure=True)
    with pytest.raises(TypeError, match="pure"):
        callbacks.LRScheduler(step_decay, pure="yes")


def test_rate_changes_at_every_step_of_an_execution_inside_fit():
    # With steps_per_execution=2 Keras calls batch callbacks every other step; the rate
    # computed in the step still follows every step.
    schedule = schedules.LinearDecay(0.2, decay_steps=8)
    model = build_network()
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse", steps_per_execution=2)
    initial = model.get_weights()
    scheduler = callbacks.LRScheduler(schedule)
    fit(model, epochs=2, callbacks_=[scheduler])
    expected = keras.ops.convert_to_numpy(schedule(np.arange(8)))
    assert scheduler.steps == list(range(8))
    np.testing.assert_allclose(scheduler.rates, expected, rtol=1e-6)
    assert_weights_close(model, simulate_sgd(initial, expected, np.zeros(8)))


class SaveEachEpoch(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        self.model.save(self.path)


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "ctrl-c"]
)
def test_lr_scheduler_leaves_a_float_rate_after_a_failed_fit(tmp_path, error):
    # The schedule is in the optimizer only while the compiled step runs: a model saved
    # during the fit, or left by a fit that raised, holds a plain float rate.
    path = os.fspath(tmp_path / "mid.keras")
    schedule = schedules.CosineDecay(0.1, decay_steps=12)
    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    scheduler = callbacks.LRScheduler(schedule)
    with pytest.raises(type(error)):
        fit(model, 3, [scheduler, SaveEachEpoch(path), RaiseAtStep(6, error)])
    for owner in rate_owners(model.optimizer):
        assert isinstance(rate_object(owner), keras.Variable)
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert rate == pytest.approx(float(schedule(6)), rel=1e-6)  # the next step's rate
    assert scheduler.steps == list(range(4))  # the finished epoch's steps
    reloaded = keras.models.load_model(path)
    assert isinstance(rate_object(reloaded.optimizer), keras.Variable)
    resumed = callbacks.LRScheduler(schedule)
    fit(reloaded, 2, [resumed], initial_epoch=1)
    np.testing.assert_allclose(resumed.rates, schedule(np.arange(4, 8)), rtol=1e-6)
    # The next fit without the callback trains at the rate left, with a plain step.
    fit(model, 1, [])
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == rate
    assert all(isinstance(rate_object(o), keras.Variable) for o in rate_owners(model.optimizer))


def test_plateau_reduction_with_a_scheduler_keeps_the_schedule():
    # As before the scheduler sets the rate of every step; the plateau callback runs
    # alongside without error and logs the rate.
    schedule = schedules.LinearDecay(0.2, decay_steps=12)
    for order in ("scheduler-first", "plateau-first"):
        model = build_model(keras.optimizers.SGD(0.1))
        scheduler = callbacks.LRScheduler(schedule)
        reduce = callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9)
        pair = [scheduler, reduce] if order == "scheduler-first" else [reduce, scheduler]
        recorder = OwnerRates()
        fit(model, 3, [*pair, recorder])
        expected = keras.ops.convert_to_numpy(schedule(np.arange(12)))
        np.testing.assert_allclose(scheduler.rates, expected, rtol=1e-6)
        np.testing.assert_allclose([r[0] for r in recorder.rates], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("function", "message"),
    [(lambda epoch: float("nan"), "finite"), (lambda epoch: -0.1, ">= 0")],
)
def test_bad_rate_from_function_is_refused(function, message):
    model = build_model(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=message):
        fit(model, epochs=1, callbacks_=[callbacks.LRScheduler(function, unit="epoch")])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unit"):
        callbacks.LRScheduler(step_decay, unit="step")
    with pytest.raises(TypeError, match="function"):
        callbacks.LRScheduler(0.1)
    with pytest.raises(TypeError, match=r"\(t\) or \(t, lr\)"):
        callbacks.LRScheduler(lambda a, b, c: 0.1)
    model = build_model(keras.optimizers.SGD(0.1))
    with pytest.raises(TypeError, match="number"):
        fit(model, epochs=1, callbacks_=[callbacks.LRScheduler(lambda epoch: "fast")])


def test_optimizer_compiled_with_a_schedule_is_refused():
    model = build_model(keras.optimizers.SGD(schedules.CosineDecay(0.1, decay_steps=10)))
    with pytest.raises(ValueError, match="float learning_rate"):
        fit(model, epochs=1, callbacks_=[callbacks.LRScheduler(step_decay, unit="epoch")])


# --------------------------------------------------------------------------- OneCycle

ONE_CYCLE_STEPS = 3 * STEPS_PER_EPOCH


@pytest.mark.parametrize(
    ("optimizer", "simulate"),
    [
        (lambda: keras.optimizers.SGD(0.1, momentum=0.9), simulate_sgd),
        (
            lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
            lambda w, r, m: simulate_sgd(w, r, m, nesterov=True),
        ),
        (lambda: keras.optimizers.Adam(0.1), simulate_adam),
        (
            lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.9)),
            simulate_sgd,
        ),
    ],
    ids=["sgd", "sgd-nesterov", "adam", "loss-scaled-sgd"],
)
def test_one_cycle_momentum_changes_the_updates_inside_fit(optimizer, simulate):
    model = build_model(optimizer())
    initial = model.get_weights()
    one_cycle = callbacks.OneCycle(0.05, total_steps=ONE_CYCLE_STEPS)
    history = fit(model, epochs=3, callbacks_=[one_cycle])

    steps = np.arange(ONE_CYCLE_STEPS)
    reference = schedules.OneCycle(0.05, total_steps=ONE_CYCLE_STEPS)
    rates = keras.ops.convert_to_numpy(reference(steps))
    momenta = keras.ops.convert_to_numpy(reference.momentum(steps, 0.85, 0.95))
    np.testing.assert_allclose(one_cycle.rates, rates, rtol=1e-6)
    np.testing.assert_allclose(one_cycle.momenta, momenta, rtol=1e-6)
    assert history.history["momentum"] == pytest.approx(momenta[[3, 7, 11]].tolist(), rel=1e-6)

    assert_weights_close(model, simulate(initial, rates, momenta))
    # The check can tell: with the compiled constant momentum the weights differ far more.
    constant = simulate(initial, rates, np.full(ONE_CYCLE_STEPS, 0.9))
    assert max_difference(model, constant) > 100 * 2e-5
    # After training the optimizer is as it was compiled.
    assert all("update_step" not in vars(owner) for owner in rate_owners(model.optimizer))


def test_one_cycle_on_multi_optimizer_inside_fit():
    hidden = keras.optimizers.SGD(0.01, momentum=0.9)
    out = keras.optimizers.SGD(0.04, momentum=0.9)
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(hidden, {".*/out/.*": out})
    )
    model = build_model(optimizer)
    initial = model.get_weights()
    one_cycle = callbacks.OneCycle(0.05, total_steps=ONE_CYCLE_STEPS)
    fit(model, epochs=3, callbacks_=[one_cycle])

    # The output group (largest rate) follows the schedule, the hidden group at 1/4 of it.
    expected = simulate_sgd(
        initial, one_cycle.rates, one_cycle.momenta, rate_scales=(0.25, 0.25, 1.0, 1.0)
    )
    assert_weights_close(model, expected)
    assert max_difference(model, simulate_sgd(initial, one_cycle.rates, one_cycle.momenta)) > 1e-3


def test_one_cycle_without_momentum_cycling_keeps_the_compiled_momentum():
    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    initial = model.get_weights()
    one_cycle = callbacks.OneCycle(0.05, total_steps=8, cycle_momentum=False)
    fit(model, epochs=2, callbacks_=[one_cycle])
    assert one_cycle.momenta == []
    assert_weights_close(model, simulate_sgd(initial, one_cycle.rates, np.full(8, 0.9)))


def test_one_cycle_refuses_what_it_cannot_cycle():
    with pytest.raises(ValueError, match="base_momentum"):
        callbacks.OneCycle(0.1, total_steps=10, base_momentum=0.95, max_momentum=0.85)
    with pytest.raises(ValueError, match="pct_start"):
        callbacks.OneCycle(0.1, total_steps=10, pct_start=1.5)
    for optimizer, message in [
        (keras.optimizers.SGD(0.1), "without momentum"),
        (keras.optimizers.RMSprop(0.1), "RMSprop"),
    ]:
        model = build_model(optimizer)
        with pytest.raises(ValueError, match=message):
            fit(model, epochs=1, callbacks_=[callbacks.OneCycle(0.1, total_steps=8)])


def test_one_cycle_takes_a_schedule_or_its_arguments():
    schedule = schedules.OneCycle(0.05, total_steps=8, pct_start=0.25, three_phase=True)
    given = callbacks.OneCycle(schedule=schedule, base_momentum=0.8)
    built = callbacks.OneCycle(0.05, 8, 0.25, three_phase=True, base_momentum=0.8)
    assert given.schedule is schedule and given.total_steps == built.total_steps == 8
    steps = np.arange(10)
    for callback in (given, built):
        np.testing.assert_allclose(
            [callback.rate_at(t, math.nan) for t in steps],
            keras.ops.convert_to_numpy(schedule(steps)),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(callback.momentum_at(steps)),
            keras.ops.convert_to_numpy(schedule.momentum(steps, 0.8, 0.95)),
            rtol=1e-6,
        )
    # The signature shows the schedule's arguments and defaults, derived from schedules.OneCycle.
    parameters = inspect.signature(callbacks.OneCycle).parameters
    for name, parameter in inspect.signature(schedules.OneCycle).parameters.items():
        if name not in ("max_lr", "total_steps"):
            assert parameters[name].default == parameter.default, name
    assert parameters["cycle_momentum"].default is True


def test_one_cycle_refuses_a_schedule_and_its_arguments_together():
    schedule = schedules.OneCycle(0.05, total_steps=8)
    with pytest.raises(TypeError, match="not both"):
        callbacks.OneCycle(0.05, schedule=schedule)
    with pytest.raises(TypeError, match="schedules.OneCycle"):
        callbacks.OneCycle(schedule=schedules.CosineDecay(0.1, 10))
    with pytest.raises(TypeError, match="max_lr"):
        callbacks.OneCycle()
    with pytest.raises(TypeError, match="warmup"):
        callbacks.OneCycle(0.05, 8, warmup=3)
    with pytest.raises(TypeError, match="cycle_momentum"):
        callbacks.OneCycle(0.05, 8, cycle_momentum="False")


def test_all_zero_group_rates_follow_the_schedule_with_a_warning():
    # The one policy of _rates.group_ratios: ratio 1 for every group, with a warning.
    hidden, out = keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.0)
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(hidden, {".*/out/.*": out})
    )
    model = build_model(optimizer)
    recorder = OwnerRates()
    schedule = schedules.LinearDecay(0.4, decay_steps=4)
    with pytest.warns(UserWarning, match="proportions are unknown"):
        fit(model, epochs=1, callbacks_=[callbacks.LRScheduler(schedule), recorder])
    expected = keras.ops.convert_to_numpy(schedule(np.arange(4)))
    for group in range(2):
        np.testing.assert_allclose([step[group] for step in recorder.rates], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "ctrl-c"]
)
def test_one_cycle_patch_survives_no_failed_fit(error):
    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(type(error)):
        fit(model, 3, [callbacks.OneCycle(0.05, total_steps=12), RaiseAtStep(3, error)])
    assert all("update_step" not in vars(owner) for owner in rate_owners(model.optimizer))

    # The next fit, without OneCycle, trains with the compiled momentum 0.9 at the rate left.
    for velocity in model.optimizer.momentums:
        velocity.assign(np.zeros(velocity.shape, "float32"))
    initial, rate = (
        model.get_weights(),
        float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
    )
    fit(model, 1, [])
    expected = simulate_sgd(initial, np.full(4, rate), np.full(4, 0.9))
    assert_weights_close(model, expected)


def test_one_cycle_takes_total_steps_from_the_fit():
    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    one_cycle = callbacks.OneCycle(0.05, pct_start=0.25)
    assert one_cycle.total_steps is None
    fit(model, 3, [one_cycle])
    assert one_cycle.total_steps == 3 * STEPS_PER_EPOCH
    reference = schedules.OneCycle(0.05, 3 * STEPS_PER_EPOCH, pct_start=0.25)
    steps = np.arange(3 * STEPS_PER_EPOCH)
    np.testing.assert_allclose(
        one_cycle.rates, keras.ops.convert_to_numpy(reference(steps)), rtol=1e-6
    )
    momenta = keras.ops.convert_to_numpy(reference.momentum(steps))
    np.testing.assert_allclose(one_cycle.momenta, momenta, rtol=1e-6)


def test_one_cycle_warns_once_when_training_past_total_steps():
    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.warns(UserWarning, match="past total_steps=4") as caught:
        fit(model, 3, [callbacks.OneCycle(0.05, total_steps=4)])
    assert sum("past total_steps" in str(w.message) for w in caught) == 1


def test_one_cycle_refuses_momentum_cycling_on_torch_at_once(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        callbacks.OneCycle(0.05, total_steps=8)
    assert callbacks.OneCycle(0.05, total_steps=8, cycle_momentum=False).total_steps == 8


# --------------------------------------------------------------------------- resume


def resume_matches_one_run(tmp_path, optimizer, make_callback, epochs=4, split=2):
    """Train ``epochs`` in one run, and ``split`` + save/reload + the rest; compare.

    ``make_callback(run)`` is called with ``"whole"`` for the uninterrupted run and
    ``"resumed"`` for both parts of the interrupted one. Returns, per run part
    (whole, first, second), the callback and an :class:`OwnerRates` recorder.
    """
    parts = []

    def train(model, run, initial_epoch, until):
        callback, recorder = make_callback(run), OwnerRates()
        fit(model, until, [callback, recorder], initial_epoch=initial_epoch)
        parts.append((callback, recorder))

    whole = build_model(optimizer())
    train(whole, "whole", 0, epochs)
    first = build_model(optimizer())
    train(first, "resumed", 0, split)
    path = os.fspath(tmp_path / "run.keras")
    first.save(path)
    second = keras.models.load_model(path)
    train(second, "resumed", split, epochs)

    for actual, wanted in zip(second.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)
    (_, whole_rates), (_, first_rates), (_, second_rates) = parts
    assert len(second_rates.rates) == (epochs - split) * STEPS_PER_EPOCH
    np.testing.assert_allclose(whole_rates.rates, first_rates.rates + second_rates.rates, rtol=1e-6)
    return [callback for callback, _ in parts]


@pytest.mark.parametrize(
    ("schedule", "unit"),
    [(lambda epoch, lr: lr * 0.7, "epoch"), (schedules.CosineDecay(0.1, decay_steps=16), "batch")],
    ids=["epoch-function", "batch-schedule"],
)
def test_lr_scheduler_resumes(tmp_path, schedule, unit):
    whole, first, second = resume_matches_one_run(
        tmp_path,
        lambda: keras.optimizers.SGD(0.1, momentum=0.5),
        lambda run: callbacks.LRScheduler(schedule, unit=unit),
    )
    assert second.steps == list(range(8, 16))
    np.testing.assert_allclose(whole.rates, first.rates + second.rates, rtol=1e-6)


def test_one_cycle_resumes(tmp_path):
    whole, first, second = resume_matches_one_run(
        tmp_path,
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda run: callbacks.OneCycle(0.05, total_steps=16),
    )
    np.testing.assert_allclose(whole.rates, first.rates + second.rates, rtol=1e-6)
    np.testing.assert_allclose(whole.momenta, first.momenta + second.momenta, rtol=1e-6)


def test_snapshot_ensemble_resumes_from_its_directory(tmp_path):
    whole, first, second = resume_matches_one_run(
        tmp_path,
        lambda: keras.optimizers.SGD(0.1, momentum=0.5),
        lambda run: callbacks.SnapshotEnsemble(3, directory=tmp_path / run),
    )
    assert [s.step for s in first.snapshots] == [3, 6]
    assert [s.step for s in second.snapshots] == [s.step for s in whole.snapshots]
    assert [s.step for s in whole.snapshots] == [3, 6, 9, 12, 15]
    model = build_network()
    for resumed, uninterrupted in zip(second.snapshots, whole.snapshots, strict=True):
        resumed.load_into(model)
        resumed_weights = model.get_weights()
        uninterrupted.load_into(model)
        for actual, wanted in zip(resumed_weights, model.get_weights(), strict=True):
            np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)


def test_plateau_reduction_resumes_with_its_factor(tmp_path):
    schedule = schedules.CosineDecay(0.1, decay_steps=12)
    # min_delta is so large that no epoch counts as an improvement after the first:
    # the factor halves at the end of epochs 1 and 2.
    resume_matches_one_run(
        tmp_path,
        lambda: keras.optimizers.SGD(schedule),
        lambda run: callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9),
        epochs=3,
    )
    saved = keras.models.load_model(os.fspath(tmp_path / "run.keras"))
    assert float(keras.ops.convert_to_numpy(saved.optimizer._learning_rate.factor)) == 0.5


# --------------------------------------------------------------------------- ReduceLROnPlateau


def test_plateau_reduction_scales_a_schedule_inside_fit():
    schedule = schedules.CosineDecay(0.1, decay_steps=32)
    model = build_model(keras.optimizers.SGD(schedule))
    initial = model.get_weights()
    reduce = callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9)
    history = fit(model, epochs=4, callbacks_=[reduce])

    # Reductions at the end of epochs 1, 2 and 3: factors 1, 1, 0.5, 0.25 per epoch.
    factors = np.repeat([1.0, 1.0, 0.5, 0.25], STEPS_PER_EPOCH)
    rates = factors * keras.ops.convert_to_numpy(schedule(np.arange(16)))
    assert_weights_close(model, simulate_sgd(initial, rates, np.zeros(16)))
    assert isinstance(model.optimizer._learning_rate, schedules.Scaled)
    assert float(keras.ops.convert_to_numpy(model.optimizer._learning_rate.factor)) == 0.125
    assert len(history.history["learning_rate"]) == 4


def test_plateau_reduction_respects_min_lr_on_a_schedule():
    schedule = schedules.Constant(0.1)
    model = build_model(keras.optimizers.SGD(schedule))
    reduce = callbacks.ReduceLROnPlateau(
        "loss", factor=0.1, patience=1, min_delta=1e9, min_lr=0.004
    )
    fit(model, epochs=4, callbacks_=[reduce])
    # 0.1 -> 0.01 -> max(0.001, 0.004) -> unchanged (already at min_lr).
    factor = float(keras.ops.convert_to_numpy(model.optimizer._learning_rate.factor))
    assert factor == pytest.approx(0.04, rel=1e-6)


def test_plateau_reduction_on_a_float_rate_matches_keras():
    histories = []
    for callback_class in (callbacks.ReduceLROnPlateau, keras.callbacks.ReduceLROnPlateau):
        model = build_model(keras.optimizers.SGD(0.1))
        reduce = callback_class("loss", factor=0.3, patience=2, min_delta=1e9, cooldown=1)
        histories.append(fit(model, epochs=7, callbacks_=[reduce]).history)
    ours, theirs = histories
    np.testing.assert_allclose(ours["learning_rate"], theirs["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-6)
    assert len(set(np.round(ours["learning_rate"], 8))) >= 3  # it did reduce, twice


def test_plateau_reduction_on_multi_optimizer_reduces_every_group():
    hidden = keras.optimizers.SGD(0.01)
    out = keras.optimizers.SGD(schedules.Constant(0.1))
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(hidden, {".*/out/.*": out})
    )
    model = build_model(optimizer)
    reduce = callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9)
    history = fit(model, epochs=3, callbacks_=[reduce]).history

    # Logged before each epoch's reduction: reductions at the end of epochs 1 and 2.
    np.testing.assert_allclose(history[f"learning_rate_{hidden.name}"], [0.01, 0.01, 0.005])
    np.testing.assert_allclose(history[f"learning_rate_{out.name}"], [0.1, 0.1, 0.05])
    np.testing.assert_allclose(history["learning_rate"], [0.1, 0.1, 0.05])
    assert float(keras.ops.convert_to_numpy(hidden.learning_rate)) == pytest.approx(0.0025)
    assert float(keras.ops.convert_to_numpy(out._learning_rate.factor)) == 0.25


def test_plateau_reduction_bad_arguments():
    for arguments, message in [
        ({"factor": 1.0}, "factor"),
        ({"factor": 0.0}, "factor"),
        ({"patience": -1}, "patience"),
        ({"min_lr": -0.1}, "min_lr"),
    ]:
        with pytest.raises(ValueError, match=message):
            callbacks.ReduceLROnPlateau(**arguments)


# --------------------------------------------------------------------------- SnapshotEnsemble


class WeightsAtStep(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.weights[step] = self.model.get_weights()


def linear_predictions(weights_list, x):
    """The two-layer linear model's prediction for each set of weights."""
    return [(x @ w1 + b1) @ w2 + b2 for w1, b1, w2, b2 in weights_list]


@pytest.mark.parametrize("directory", [False, True], ids=["memory", "directory"])
def test_snapshots_at_cycle_ends_and_their_average(tmp_path, directory):
    model = build_model(keras.optimizers.SGD(schedules.CosineRestarts(0.1, first_cycle_steps=3)))
    snapshots = callbacks.SnapshotEnsemble(
        3, directory=tmp_path / "snaps" if directory else None, keep=2
    )
    recorder = WeightsAtStep()
    fit(model, epochs=3, callbacks_=[snapshots, recorder])  # 12 steps: cycle ends 3, 6, 9, 12

    assert [s.step for s in snapshots.snapshots] == [9, 12]
    if directory:
        assert sorted(os.listdir(tmp_path / "snaps")) == [
            "snapshot-00000009.weights.h5",
            "snapshot-00000012.weights.h5",
            "snapshots.json",  # the manifest: which run wrote which snapshot
        ]
    expected = np.mean(linear_predictions([recorder.weights[9], recorder.weights[12]], X), axis=0)
    np.testing.assert_allclose(snapshots.predict(X), expected, rtol=1e-5, atol=1e-6)
    ensemble = snapshots.ensemble()
    np.testing.assert_allclose(ensemble.predict(X, verbose=0), expected, rtol=1e-5, atol=1e-6)
    # The trained model keeps its own (last) weights.
    for actual, wanted in zip(model.get_weights(), recorder.weights[12], strict=True):
        np.testing.assert_array_equal(actual, wanted)


def test_snapshots_with_growing_cycles_and_a_saved_ensemble(tmp_path):
    model = build_model(keras.optimizers.SGD(0.05))
    snapshots = callbacks.SnapshotEnsemble([2, 4, 8])
    recorder = WeightsAtStep()
    fit(model, epochs=4, callbacks_=[snapshots, recorder])  # 16 steps: ends 2, 6, 14

    assert [s.step for s in snapshots.snapshots] == [2, 6, 14]
    ensemble = snapshots.ensemble()
    path = os.fspath(tmp_path / "ensemble.keras")
    ensemble.save(path)
    reloaded = keras.models.load_model(path)
    weights = [recorder.weights[step] for step in (2, 6, 14)]
    expected = np.mean(linear_predictions(weights, X), axis=0)
    np.testing.assert_allclose(reloaded.predict(X, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_snapshot_ensemble_warns_when_a_cycle_end_falls_inside_a_compiled_call():
    model = build_network(0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", steps_per_execution=2)
    snapshots = callbacks.SnapshotEnsemble(3)  # 4 steps an epoch, seen at steps 2 and 4
    with pytest.warns(UserWarning, match=r"missed the cycle end\(s\) at step\(s\) \[3\]"):
        fit(model, epochs=1, callbacks_=[snapshots])
    assert snapshots.snapshots == []


def test_snapshot_ensemble_bad_input():
    for cycle_steps in (0, -3, 2.5, [], [3, 0], True):
        with pytest.raises(ValueError, match="cycle_steps"):
            callbacks.SnapshotEnsemble(cycle_steps)
    with pytest.raises(ValueError, match="keep"):
        callbacks.SnapshotEnsemble(3, keep=0)
    snapshots = callbacks.SnapshotEnsemble(100)
    model = build_model(keras.optimizers.SGD(0.1))
    fit(model, epochs=1, callbacks_=[snapshots])
    with pytest.raises(ValueError, match="No snapshot"):
        snapshots.predict(X)


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


@pytest.fixture
def unwritable_directory(tmp_path):
    """A folder that exists but cannot be written (as root too: a /proc folder)."""
    if os.geteuid() == 0:
        if not os.path.isdir("/proc/self"):
            pytest.skip("needs /proc to have an unwritable folder as root")
        yield "/proc/self"
        return
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_snapshot_folder_that_cannot_be_written_is_refused_when_training_begins(
    unwritable_directory,
):
    model = build_model(keras.optimizers.SGD(0.05))
    counter = CountBatches()
    snapshots = callbacks.SnapshotEnsemble(3, directory=unwritable_directory)
    with pytest.raises(ValueError, match="cannot write to the directory"):
        fit(model, 2, [snapshots, counter])
    assert counter.batches == 0


def test_snapshots_of_an_earlier_run_are_not_mixed_in(tmp_path):
    folder = tmp_path / "snaps"
    earlier = callbacks.SnapshotEnsemble(3, directory=folder)
    fit(build_model(keras.optimizers.SGD(0.05), seed=1), 3, [earlier])  # ends 3, 6, 9, 12
    assert [s.step for s in earlier.snapshots] == [3, 6, 9, 12]

    model = build_model(keras.optimizers.SGD(0.05), seed=2)
    recorder = WeightsAtStep()
    snapshots = callbacks.SnapshotEnsemble(3, directory=folder)
    with pytest.warns(UserWarning, match="ignores 4 snapshot file"):
        fit(model, 2, [snapshots, recorder])  # 8 steps: ends 3, 6
    assert [s.step for s in snapshots.snapshots] == [3, 6]
    expected = np.mean(linear_predictions([recorder.weights[3], recorder.weights[6]], X), axis=0)
    np.testing.assert_allclose(snapshots.predict(X), expected, rtol=1e-5, atol=1e-6)


def test_snapshots_of_another_architecture_are_not_mixed_in(tmp_path):
    folder = tmp_path / "snaps"
    wide = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    wide.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    fit(wide, 1, [callbacks.SnapshotEnsemble(2, directory=folder)])  # ends 2, 4

    model = build_model(keras.optimizers.SGD(0.05))
    fit(model, 2, [])  # at step 8: the files' steps are not ahead of this run
    snapshots = callbacks.SnapshotEnsemble(3, directory=folder)
    with pytest.warns(UserWarning, match="ignores 2 snapshot file"):
        fit(model, 3, [snapshots], initial_epoch=2)  # steps 8-12: end 9, 12
    assert [s.step for s in snapshots.snapshots] == [9, 12]


def test_plateau_reduction_on_a_missing_metric_says_which_exist():
    model = build_model(keras.optimizers.SGD(0.1))
    counter = CountBatches()
    reduce = callbacks.ReduceLROnPlateau("val_loss", patience=1)
    with pytest.raises(ValueError, match=r"'val_loss'.*not among.*: learning_rate, loss\."):
        fit(model, 3, [reduce, counter])
    assert counter.batches == STEPS_PER_EPOCH  # refused at the end of the first epoch


# --------------------------------------------------------------------------- LearningRateLogger


def test_rate_logger_on_a_float_rate_logs_rate_and_momentum():
    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    logger = callbacks.LearningRateLogger()
    history = fit(model, 3, [logger]).history
    np.testing.assert_allclose(history["learning_rate"], [0.1] * 3, rtol=1e-6)
    np.testing.assert_allclose(history["momentum"], [0.9] * 3, rtol=1e-6)
    assert logger.epochs["learning_rate"] == history["learning_rate"]


def test_rate_logger_on_a_variable_set_by_a_callback():
    model = build_model(keras.optimizers.SGD(1.0))
    logger = callbacks.LearningRateLogger(per_batch=True)
    fit(model, 5, [callbacks.LRScheduler(step_decay, unit="epoch"), logger])
    expected = [step_decay(epoch) for epoch in range(5)]
    np.testing.assert_allclose(logger.epochs["learning_rate"], expected, rtol=1e-6)
    np.testing.assert_allclose(
        logger.batches["learning_rate"], np.repeat(expected, STEPS_PER_EPOCH), rtol=1e-6
    )


def test_rate_logger_on_a_schedule_inside_the_optimizer():
    schedule = schedules.CosineDecay(0.1, decay_steps=12)
    model = build_model(keras.optimizers.Adam(schedule, beta_1=0.8))
    logger = callbacks.LearningRateLogger(per_batch=True)
    history = fit(model, 3, [logger]).history
    rates = keras.ops.convert_to_numpy(schedule(np.arange(12)))
    # The rate of each epoch's last update, and of every update.
    np.testing.assert_allclose(history["learning_rate"], rates[[3, 7, 11]], rtol=1e-6)
    np.testing.assert_allclose(history["beta_1"], [0.8] * 3, rtol=1e-6)
    assert logger.batches["step"] == list(range(12))
    np.testing.assert_allclose(logger.batches["learning_rate"], rates, rtol=1e-6)


def test_rate_logger_logs_each_group_of_a_multi_optimizer():
    hidden = keras.optimizers.SGD(0.01, momentum=0.5)
    schedule = schedules.LinearDecay(0.2, decay_steps=8)
    out = keras.optimizers.Adam(schedule)
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(hidden, {".*/out/.*": out})
    )
    model = build_model(optimizer)
    history = fit(model, 2, [callbacks.LearningRateLogger()]).history
    out_rates = keras.ops.convert_to_numpy(schedule(np.array([3, 7])))
    np.testing.assert_allclose(history[f"learning_rate_{hidden.name}"], [0.01, 0.01], rtol=1e-6)
    np.testing.assert_allclose(history[f"momentum_{hidden.name}"], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(history[f"learning_rate_{out.name}"], out_rates, rtol=1e-6)
    np.testing.assert_allclose(history[f"beta_1_{out.name}"], [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(history["learning_rate"], np.maximum(out_rates, 0.01), rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="reads TensorFlow events")
def test_rate_logger_values_reach_tensorboard(tmp_path):
    import tensorflow as tf

    model = build_model(keras.optimizers.SGD(0.1, momentum=0.9))
    board = keras.callbacks.TensorBoard(os.fspath(tmp_path), update_freq="batch")
    fit(model, 2, [callbacks.LearningRateLogger(per_batch=True), board])
    values: dict[str, list[float]] = {}
    for root, _, files in os.walk(tmp_path / "train"):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    if value.tag.startswith(("epoch_", "batch_")):
                        number = float(tf.make_ndarray(value.tensor))
                        values.setdefault(value.tag, []).append(number)
    np.testing.assert_allclose(values["epoch_momentum"], [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(values["batch_momentum"], [0.9] * 8, rtol=1e-6)
    np.testing.assert_allclose(values["batch_learning_rate"], [0.1] * 8, rtol=1e-6)


# --------------------------------------------------------------------------- other backends

MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from lrtools import callbacks, schedules

x = np.asarray(json.loads(sys.argv[1]), dtype="float32")
y = np.asarray(json.loads(sys.argv[2]), dtype="float32")
makers = {
    "scheduler": lambda: callbacks.LRScheduler(schedules.CosineDecay(0.1, decay_steps=12)),
    "one_cycle": lambda: callbacks.OneCycle(0.05, total_steps=12),
}
results = {}
for name, strategy in [
    ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
    ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
]:
    for callback_name, make_callback in makers.items():
        with strategy.scope():
            keras.utils.set_random_seed(0)
            layers = [keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)]
            model = keras.Sequential(layers)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
        callback = make_callback()
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[callback])
        results[f"{name}/{callback_name}"] = {
            "replicas": strategy.num_replicas_in_sync,
            "rates": callback.rates,
            "momenta": getattr(callback, "momenta", []),
            "weights": [w.tolist() for w in model.get_weights()],
        }
print("RESULT" + json.dumps(results))
"""


def run_python(code: str, *args: str, backend: str = "tensorflow") -> str:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute test")
def test_mirrored_strategy_gives_the_rates_and_updates_of_one_device():
    output = run_python(MIRRORED_SCRIPT, json.dumps(X.tolist()), json.dumps(Y.tolist()))
    results = json.loads(output.split("RESULT", 1)[1])
    for callback_name in ("scheduler", "one_cycle"):
        one, mirrored = results[f"one/{callback_name}"], results[f"mirrored/{callback_name}"]
        assert (one["replicas"], mirrored["replicas"]) == (1, 2)
        assert len(one["rates"]) == 12
        np.testing.assert_allclose(mirrored["rates"], one["rates"], rtol=1e-6)
        np.testing.assert_allclose(mirrored["momenta"], one["momenta"], rtol=1e-6)
        for actual, wanted in zip(mirrored["weights"], one["weights"], strict=True):
            np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)
    assert len(results["mirrored/one_cycle"]["momenta"]) == 12
    # The one-cycle weights really used the cycled momentum on two replicas as well.
    one_cycle = results["mirrored/one_cycle"]
    initial = build_network().get_weights()
    expected = simulate_sgd(initial, one_cycle["rates"], one_cycle["momenta"])
    for actual, wanted in zip(one_cycle["weights"], expected, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=2e-5, atol=2e-6)
