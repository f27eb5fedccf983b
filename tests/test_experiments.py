"""Tests for lrtools.experiments: the experiment runner and its setups."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pandas as pd
import pytest

from lrtools import data as lrdata
from lrtools import experiments as ex
from lrtools import models, runtime, schedules


@pytest.fixture(scope="module")
def small_digits() -> lrdata.Dataset:
    """The flat digits cut down to 160 training examples, for fast runs."""
    digits = lrdata.load_digits(kind="flat")
    return dataclasses.replace(
        digits,
        x_train=digits.x_train[:160],
        y_train=digits.y_train[:160],
        x_val=digits.x_val[:60],
        y_val=digits.y_val[:60],
        x_test=digits.x_test[:60],
        y_test=digits.y_test[:60],
    )


def tiny_mlp(input_shape, num_classes):
    return models.digits_mlp(input_shape, num_classes, hidden_units=8)


# --------------------------------------------------------------------------- setups


def test_rate_sweep_names_and_labels_each_rate():
    setups = ex.rate_sweep(keras.optimizers.SGD, [0.1, 1e-3], momentum=0.9)
    assert list(setups) == ["SGD 0.1", "SGD 0.001"]
    setup = setups["SGD 0.001"]
    assert dict(setup.labels) == {"optimizer": "SGD", "learning_rate": 1e-3}
    optimizer = setup.make_optimizer()
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    assert optimizer.momentum == 0.9


@pytest.mark.parametrize("rates", [[], [0.1, -1.0], [float("nan")]])
def test_rate_sweep_rejects_bad_rates(rates):
    with pytest.raises(ValueError, match="rate"):
        ex.rate_sweep(keras.optimizers.SGD, rates)


@pytest.mark.parametrize("rate", ["0.1", None, True])
def test_rate_sweep_rejects_a_rate_that_is_not_a_number(rate):
    with pytest.raises(TypeError, match=r"learning_rates\[1\]"):
        ex.rate_sweep(keras.optimizers.SGD, [0.1, rate])


def test_config_copies_an_optimizer_for_every_run():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    setup = ex.Config(keras.optimizers.SGD(learning_rate=schedule, momentum=0.5))
    first, second = setup.make_optimizer(), setup.make_optimizer()
    assert first is not second and first is not setup.optimizer
    assert first.get_config() == setup.optimizer.get_config()


def test_config_factory_must_return_an_optimizer():
    with pytest.raises(TypeError, match="must return"):
        ex.Config(lambda: "sgd").make_optimizer()


# --------------------------------------------------------------------------- runner


def test_run_experiment_tabulates_every_epoch_of_every_run(small_digits):
    configs = {"fast": keras.optimizers.SGD(0.5), "slow": lambda: keras.optimizers.SGD(0.01)}
    result = ex.run_experiment(
        tiny_mlp, configs, small_digits, epochs=2, seeds=[0, 1], evaluate_test=True, verbose=0
    )
    frame, runs = result.frame, result.runs
    assert len(frame) == 2 * 2 * 2
    assert {
        "config",
        "seed",
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "wall_time",
    } <= set(frame.columns)
    assert sorted(frame["epoch"].unique()) == [1, 2]
    assert result.configs == ["fast", "slow"]
    assert set(result.histories) == {("fast", 0), ("slow", 0), ("fast", 1), ("slow", 1)}
    assert len(runs) == 4 and {"test_loss", "test_accuracy", "epochs"} <= set(runs.columns)
    # The per-run table holds the last epoch of each history.
    for row in runs.itertuples():
        history = result.histories[(row.config, row.seed)]
        assert row.val_loss == pytest.approx(history["val_loss"][-1])
        assert row.epochs == 2
    np.testing.assert_allclose(frame.loc[frame["config"] == "fast", "lr"], 0.5)
    np.testing.assert_allclose(frame.loc[frame["config"] == "slow", "lr"], 0.01)
    # Wall time grows within a run.
    for _, run in frame.groupby(["config", "seed"]):
        assert np.all(np.diff(run["wall_time"].to_numpy()) > 0)


def test_same_seed_gives_every_setup_the_same_start(small_digits):
    configs = {"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.SGD(0.1)}
    result = ex.run_experiment(tiny_mlp, configs, small_digits, epochs=1, seeds=[0, 1], verbose=0)
    histories = result.histories
    assert histories[("a", 0)] == histories[("b", 0)]
    assert histories[("a", 1)] == histories[("b", 1)]
    assert histories[("a", 0)]["loss"] != histories[("a", 1)]["loss"]


def test_steps_per_execution_gives_the_same_training(small_digits):
    configs = {"sgd": keras.optimizers.SGD(0.1)}
    one, several = (
        ex.run_experiment(
            tiny_mlp, configs, small_digits, epochs=2, steps_per_execution=n, verbose=0
        ).histories[("sgd", 0)]
        for n in (1, 4)
    )
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(several[key], one[key], rtol=1e-4)


def test_run_experiment_leaves_the_given_optimizer_untouched(small_digits):
    optimizer = keras.optimizers.SGD(0.1)
    ex.run_experiment(tiny_mlp, {"sgd": optimizer}, small_digits, epochs=1, verbose=0)
    assert not optimizer.built


def test_lr_column_follows_schedules_and_callbacks(small_digits):
    steps_per_epoch = math.ceil(len(small_digits.y_train) / 32)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    configs = {
        "in optimizer": keras.optimizers.SGD(learning_rate=schedule),
        "by callback": ex.Config(
            keras.optimizers.SGD(0.1),
            callbacks=lambda: [keras.callbacks.LearningRateScheduler(lambda e: 0.1 / (1 + e))],
            labels={"style": "epoch function"},
        ),
    }
    result = ex.run_experiment(tiny_mlp, configs, small_digits, epochs=2, verbose=0)
    frame = result.frame.set_index(["config", "epoch"])
    for epoch in (1, 2):
        # The rate of the epoch's last update, at step epoch * steps_per_epoch - 1.
        expected = float(schedule(epoch * steps_per_epoch - 1))
        assert frame.loc[("in optimizer", epoch), "lr"] == pytest.approx(expected, rel=1e-5)
        assert frame.loc[("by callback", epoch), "lr"] == pytest.approx(0.1 / epoch, rel=1e-5)
    assert frame.loc[("by callback", 1), "style"] == "epoch function"
    # The rate the callback logs stays in the history; the tables call it "lr".
    assert "learning_rate" in result.histories[("by callback", 0)]
    assert "learning_rate" not in result.frame.columns
    assert frame.loc[("in optimizer", 1), "style"] != "epoch function"


def _named_mlp(input_shape, num_classes):
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Dense(8, activation="relu", name="body"),
            keras.layers.Dense(num_classes, activation="softmax", name="head"),
        ]
    )


def test_lr_column_of_several_groups_is_the_largest_groups_rate(small_digits):
    """With a MultiOptimizer the table records the rate lrtools's callbacks set: the largest."""

    def two_groups():
        # The body's optimizer comes first in the MultiOptimizer, with the smaller rate.
        body = keras.optimizers.SGD(0.01)
        optimizer_map = keras.optimizers.OptimizerMap(
            default_optimizer=keras.optimizers.SGD(0.1),
            optimizer_map={"(?:.*/)?body/.*": body},
        )
        return keras.optimizers.MultiOptimizer(optimizer_map)

    result = ex.run_experiment(
        _named_mlp, {"groups": two_groups}, small_digits, epochs=1, verbose=0
    )
    assert result.frame["lr"].tolist() == pytest.approx([0.1])


def test_progress_prints_one_line_per_run_unless_silent(small_digits, capsys):
    configs = {"sgd": keras.optimizers.SGD(0.1)}
    ex.run_experiment(tiny_mlp, configs, small_digits, epochs=1, seeds=[0, 1], verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] sgd (seed 0)") and "val_accuracy" in lines[0]
    ex.run_experiment(tiny_mlp, configs, small_digits, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def _noisy_mlp(input_shape, num_classes):
    """A network with every kind of state a reset must cover: weights, BatchNorm's moving
    statistics and a Dropout layer's seed state."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


def _schedule_setups():
    """Adam with a fixed rate, an lrtools warm-up schedule and a Keras schedule."""
    return {
        "fixed": keras.optimizers.Adam(3e-2, beta_2=0.99),
        "warm-up": lambda: keras.optimizers.Adam(
            schedules.Warmup(schedules.LinearDecay(0.1, 6), 4), beta_2=0.99
        ),
        "keras cosine": keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(1e-2, 10, warmup_target=0.05, warmup_steps=3),
            beta_2=0.99,
        ),
    }


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_reuse_network_gives_exactly_the_runs_of_fresh_networks(small_digits, steps_per_execution):
    setups = ex.rate_sweep(keras.optimizers.Adam, [3e-2, 1e-3, 1e-1], beta_2=0.99)
    fresh, shared = _fresh_and_shared(small_digits, setups, steps_per_execution)
    assert shared.histories == fresh.histories  # every epoch's metrics, bit for bit
    untimed = [column for column in fresh.runs if column != "wall_time"]
    pd.testing.assert_frame_equal(shared.runs[untimed], fresh.runs[untimed])
    assert shared.frame["lr"].tolist() == fresh.frame["lr"].tolist()


def test_reuse_network_follows_schedules_as_fresh_networks_do(small_digits):
    fresh, shared = _fresh_and_shared(small_digits, _schedule_setups(), steps_per_execution=2)
    # The rates are the schedules' own, to float32 rounding (TensorFlow's graph rewrites round
    # a rate computed inside the step a few units differently in the last place) ...
    np.testing.assert_allclose(shared.frame["lr"], fresh.frame["lr"], rtol=1e-6)
    # ... and so are the runs, over these few steps.
    for key, history in fresh.histories.items():
        for metric, values in history.items():
            np.testing.assert_allclose(shared.histories[key][metric], values, rtol=1e-5)


def _fresh_and_shared(data, setups, steps_per_execution):
    """The same experiment on fresh networks and on one shared network per seed."""
    kwargs = dict(
        epochs=2,
        seeds=[0, 4],
        batch_size=32,
        evaluate_test=True,
        verbose=0,
        steps_per_execution=steps_per_execution,
    )
    fresh = ex.run_experiment(_noisy_mlp, setups, data, **kwargs)
    shared = ex.run_experiment(_noisy_mlp, setups, data, reuse_network=True, **kwargs)
    # The setups really differ: a reset that failed to set the rate would repeat one run.
    assert len({tuple(history["loss"]) for history in shared.histories.values()}) == 6
    return fresh, shared


@pytest.mark.parametrize("schedules_too", [False, True])
def test_reuse_network_compiles_one_network_per_seed(small_digits, schedules_too):
    built = []

    def counted_mlp(input_shape, num_classes):
        built.append(None)
        return tiny_mlp(input_shape, num_classes)

    setups = ex.rate_sweep(keras.optimizers.SGD, [0.1, 0.01, 0.001])
    if schedules_too:
        setups["decay"] = keras.optimizers.SGD(schedules.LinearDecay(0.1, 5))
    ex.run_experiment(
        counted_mlp, setups, small_digits, epochs=1, seeds=[0, 1], reuse_network=True, verbose=0
    )
    # JAX would bake a table of scheduled rates into its trace: there, schedules train fresh
    # networks (the same runs, checked above on both back-ends).
    shared = not schedules_too or keras.backend.backend() == "tensorflow"
    assert len(built) == (2 if shared else 2 * len(setups))


@pytest.mark.parametrize(
    ("configs", "kwargs", "message"),
    [
        (
            {"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.SGD(0.1, momentum=0.9)},
            {},
            "differ only in the learning rate",
        ),
        ({"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.Adam(0.1)}, {}, "differ only"),
        (
            {"a": keras.optimizers.SGD(schedules.Scaled(schedules.Constant(0.1), 2.0))},
            {},
            "callbacks or another rate",
        ),
        (
            {"a": lambda: keras.optimizers.SGD(lambda: 0.1)},
            {},
            "callbacks or another rate",
        ),
        (
            {"a": ex.Config(keras.optimizers.SGD(0.1), callbacks=lambda: [])},
            {},
            "callbacks or another rate",
        ),
        ({"a": keras.optimizers.SGD(0.1)}, {"keep_models": True}, "keep_models"),
    ],
)
def test_reuse_network_refuses_setups_it_cannot_reset(small_digits, configs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ex.run_experiment(
            tiny_mlp, configs, small_digits, epochs=1, reuse_network=True, verbose=0, **kwargs
        )


@pytest.mark.parametrize(
    ("configs", "kwargs", "error", "message"),
    [
        ({}, {}, ValueError, "at least one setup"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"seeds": []}, ValueError, "seed"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"epochs": 0}, ValueError, "epochs"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"steps_per_execution": 0}, ValueError, "steps_per"),
        ({"bad": 0.1}, {}, TypeError, "keras optimizer"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"epochs": 1.5}, ValueError, "epochs"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"epochs": "2"}, TypeError, "epochs"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"batch_size": 0}, ValueError, "batch_size"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"seeds": [-1]}, ValueError, r"seeds\[0\]"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"seeds": ["0"]}, TypeError, r"seeds\[0\]"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"evaluate_test": "no"}, TypeError, "evaluate_test"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"keep_models": 1}, TypeError, "keep_models"),
        ({"sgd": keras.optimizers.SGD(0.1)}, {"reuse_network": 1}, TypeError, "reuse_network"),
        (
            {"schedule": keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)},
            {},
            TypeError,
            "pass an optimizer",
        ),
    ],
)
def test_run_experiment_rejects_bad_input(small_digits, configs, kwargs, error, message):
    with pytest.raises(error, match=message):
        ex.run_experiment(tiny_mlp, configs, small_digits, **{"epochs": 1, "verbose": 0, **kwargs})


# --------------------------------------------------------------------------- result helpers


@pytest.fixture
def hand_made_result() -> ex.ExperimentResult:
    """Two setups, two seeds, three epochs, with known validation accuracies."""
    accuracies = {
        ("steady", 0): [0.5, 0.8, 0.9],
        ("steady", 1): [0.6, 0.7, 0.95],
        ("stuck", 0): [0.1, 0.1, 0.2],
        ("stuck", 1): [0.1, 0.3, 0.85],
    }
    rows = [
        {"config": c, "seed": s, "epoch": e + 1, "val_accuracy": a, "val_loss": 1 - a}
        for (c, s), values in accuracies.items()
        for e, a in enumerate(values)
    ]
    frame = pd.DataFrame(rows)
    runs = frame[frame["epoch"] == 3].drop(columns="epoch").reset_index(drop=True)
    histories = {key: {"val_accuracy": values} for key, values in accuracies.items()}
    return ex.ExperimentResult(frame=frame, runs=runs, histories=histories)


def test_summary_gives_mean_and_spread_over_seeds_in_run_order(hand_made_result):
    table = hand_made_result.summary("val_accuracy")
    assert list(table.index) == ["steady", "stuck"]
    assert table.loc["steady", "mean"] == pytest.approx(np.mean([0.9, 0.95]))
    assert table.loc["stuck", "std"] == pytest.approx(np.std([0.2, 0.85], ddof=1))
    assert table.loc["stuck", "min"] == pytest.approx(0.2)
    assert table.loc["stuck", "max"] == pytest.approx(0.85)
    assert table["seeds"].tolist() == [2, 2]
    with pytest.raises(KeyError, match="val_accuracy"):
        hand_made_result.summary("accuracy")


def test_best_config_maximises_scores_and_minimises_losses(hand_made_result):
    assert hand_made_result.best_config("val_accuracy") == "steady"
    assert hand_made_result.best_config("val_loss") == "steady"
    # Flip the losses: the lowest loss now belongs to "stuck".
    flipped = dataclasses.replace(
        hand_made_result, runs=hand_made_result.runs.assign(val_loss=lambda t: t["val_accuracy"])
    )
    assert flipped.best_config("val_loss") == "stuck"


def test_epochs_to_reach_finds_the_first_epoch_at_the_target(hand_made_result):
    table = hand_made_result.epochs_to_reach(0.8).set_index(["config", "seed"])["epochs_to_target"]
    assert table[("steady", 0)] == 2
    assert table[("steady", 1)] == 3
    assert math.isnan(table[("stuck", 0)])
    assert table[("stuck", 1)] == 3
    losses = hand_made_result.epochs_to_reach(0.25, metric="val_loss")
    by_run = losses.set_index(["config", "seed"])["epochs_to_target"]
    # val_loss is 1 - val_accuracy here: steady seed 0 goes 0.5, 0.2, 0.1.
    assert by_run[("steady", 0)] == 2 and math.isnan(by_run[("stuck", 0)])
    with pytest.raises(KeyError, match="accuracy"):
        hand_made_result.epochs_to_reach(0.8, metric="accuracy")


def test_keep_models_returns_each_trained_network(small_digits):
    setups = {"SGD": keras.optimizers.SGD(0.1)}
    result = ex.run_experiment(
        tiny_mlp, setups, small_digits, epochs=1, seeds=(0, 1), keep_models=True, verbose=0
    )
    assert set(result.models) == {("SGD", 0), ("SGD", 1)}
    final = result.runs.set_index(["config", "seed"])["val_accuracy"]
    for key, model in result.models.items():
        scores = model.evaluate(small_digits.x_val, small_digits.y_val, verbose=0, return_dict=True)
        assert scores["accuracy"] == pytest.approx(final[key])
    assert ex.run_experiment(tiny_mlp, setups, small_digits, epochs=1, verbose=0).models == {}


def test_sequence_accuracy_as_a_metric_of_run_experiment():
    task = lrdata.make_sequence_task("reverse", length=4, vocab_size=5, train_size=64, seed=0)
    result = ex.run_experiment(
        lambda shape, classes: models.small_transformer(shape, classes, embed_dim=8, ff_dim=8),
        {"Adam": keras.optimizers.Adam(1e-2)},
        task,
        epochs=1,
        metrics=("accuracy", models.sequence_accuracy),
        keep_models=True,
        verbose=0,
    )
    logged = result.runs.iloc[0]
    predicted = result.models[("Adam", 0)].predict(task.x_val, verbose=0).argmax(axis=-1)
    assert logged["val_sequence_accuracy"] == pytest.approx(
        np.all(predicted == task.y_val, axis=1).mean()
    )
    assert logged["val_accuracy"] == pytest.approx(np.mean(predicted == task.y_val))


def test_small_resnet_trains_under_mixed_precision_with_a_schedule(small_digits):
    images = dataclasses.replace(
        small_digits,
        x_train=small_digits.x_train.reshape(-1, 8, 8, 1),
        x_val=small_digits.x_val.reshape(-1, 8, 8, 1),
        x_test=small_digits.x_test.reshape(-1, 8, 8, 1),
        input_shape=(8, 8, 1),
    )
    schedule = schedules.MultiStepDecay(0.1, [3], gamma=0.1)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        result = ex.run_experiment(
            lambda shape, classes: models.small_resnet(shape, classes, filters=(4,)),
            {"step": lambda: keras.optimizers.SGD(schedule, momentum=0.9)},
            images,
            epochs=2,
            batch_size=64,
            keep_models=True,
            verbose=0,
        )
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    # Keras wraps the optimizer for loss scaling; the schedule inside still sets the rate.
    assert isinstance(result.models[("step", 0)].optimizer, keras.optimizers.LossScaleOptimizer)
    # 160 examples in batches of 64: updates 0-2, then 3-5; the drop comes at update 3.
    np.testing.assert_allclose(result.frame["lr"], [0.1, 0.1 * 0.1], rtol=1e-6)
    assert np.isfinite(result.runs["loss"]).all()


# --------------------------------------------------------------------------- moved names

MOVED = {
    "digits_cnn": models,
    "digits_mlp": models,
    "small_resnet": models,
    "digits_rnn": models,
    "small_transformer": models,
    "PositionEmbedding": models,
    "sequence_accuracy": models,
    "has_accelerator": runtime,
}


@pytest.mark.parametrize("name", sorted(MOVED))
def test_moved_names_still_work_from_experiments_with_a_deprecation_warning(name):
    new_home = MOVED[name]
    with pytest.warns(DeprecationWarning, match=rf"{new_home.__name__}\.{name}"):
        old = getattr(ex, name)
    assert old is getattr(new_home, name)
    with pytest.warns(DeprecationWarning, match=name):
        exec(f"from lrtools.experiments import {name}", {})


def test_experiments_keeps_only_the_runner():
    assert set(ex.__all__) == {"Config", "ExperimentResult", "rate_sweep", "run_experiment"}
    for name in MOVED:
        assert name not in vars(ex)
    with pytest.raises(AttributeError, match="no_such_name"):
        ex.no_such_name  # noqa: B018
