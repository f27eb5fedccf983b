"""Tests for lrtools.tuning.search_learning_rate (keras-tuner), local and distributed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from lrtools.tuning import search_learning_rate

pytest.importorskip("keras_tuner")
pytest.importorskip("pandas")

_HELPER = Path(__file__).with_name("_distributed_search.py")
_spec = importlib.util.spec_from_file_location("_distributed_search", _HELPER)
problem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(problem)

X, Y, X_VAL, Y_VAL = problem.tiny_problem()
STEPS_PER_EPOCH = math.ceil(len(X) / problem.BATCH_SIZE)


def _search(build_model=problem.build_model, **kwargs):
    arguments = {
        "validation_data": (X_VAL, Y_VAL),
        "min_lr": 1e-3,
        "max_lr": 0.3,
        "max_trials": 3,
        "epochs": 1,
        "batch_size": problem.BATCH_SIZE,
        "seed": 0,
        "fit_kwargs": {"shuffle": False},
        **kwargs,
    }
    return search_learning_rate(build_model, X, Y, **arguments)


@pytest.fixture(scope="module")
def random_search():
    """One random search in a temporary directory; returns (result, tempdir used)."""
    with tempfile.TemporaryDirectory() as parent, pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", parent)
        result = _search(strategy="random")
        leftovers = os.listdir(parent)
    return result, leftovers


def test_random_search_reports_every_trial(random_search) -> None:
    result, _ = random_search
    trials = result.trials
    assert list(trials.columns) == [
        "trial_id",
        "learning_rate",
        "schedule",
        "val_loss",
        "steps",
        "epochs",
        "status",
    ]
    assert len(trials) == 3 and trials["trial_id"].is_unique
    assert (trials["status"] == "COMPLETED").all()
    assert trials["learning_rate"].between(1e-3, 0.3).all()
    assert trials["learning_rate"].nunique() == 3
    assert (trials["steps"] == STEPS_PER_EPOCH).all()
    assert (trials["schedule"] == "constant").all()
    best = trials.loc[trials["val_loss"].idxmin()]
    assert result.best_learning_rate == pytest.approx(best["learning_rate"])
    assert result.best_schedule == "constant" and result.objective == "val_loss"


def test_reported_metric_is_what_training_at_that_rate_gives(random_search) -> None:
    result, _ = random_search
    for row in result.trials.itertuples():
        model = problem.build_model(row.learning_rate)
        model.fit(X, Y, batch_size=problem.BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
        val_loss = model.evaluate(X_VAL, Y_VAL, batch_size=problem.BATCH_SIZE, verbose=0)
        assert row.val_loss == pytest.approx(val_loss, rel=1e-5)


def test_temporary_directory_is_removed(random_search) -> None:
    _, leftovers = random_search
    assert leftovers == []


def test_grid_tries_the_log_grid_with_every_schedule() -> None:
    received = []

    def build_model(learning_rate):
        received.append(learning_rate)
        return problem.build_model(learning_rate)

    def cosine(learning_rate, steps_per_epoch, epochs):
        return keras.optimizers.schedules.CosineDecay(learning_rate, steps_per_epoch * epochs)

    result = _search(
        build_model, strategy="grid", max_trials=4, schedules={"constant": None, "cosine": cosine}
    )
    trials = result.trials
    assert len(trials) == 4
    for name in ("constant", "cosine"):
        rates = sorted(trials.loc[trials["schedule"] == name, "learning_rate"])
        np.testing.assert_allclose(rates, np.geomspace(1e-3, 0.3, 2), rtol=1e-6)

    # Each trial's model received its rate, as a float or as the schedule the factory made.
    trial_inputs = received[-4:]  # earlier calls declare the search space
    for row, given in zip(trials.itertuples(), trial_inputs, strict=True):
        if row.schedule == "cosine":
            assert isinstance(given, keras.optimizers.schedules.CosineDecay)
            assert given.initial_learning_rate == pytest.approx(row.learning_rate)
            assert given.decay_steps == STEPS_PER_EPOCH
        else:
            assert given == pytest.approx(row.learning_rate)
    best = trials.loc[trials["val_loss"].idxmin()]
    assert (result.best_learning_rate, result.best_schedule) == (
        pytest.approx(best["learning_rate"]),
        best["schedule"],
    )


def test_bayesian_search_runs() -> None:
    result = _search(strategy="bayesian", max_trials=2, tuner_kwargs={"num_initial_points": 1})
    assert len(result.trials) == 2
    assert result.trials["val_loss"].map(math.isfinite).all()


def test_hyperband_continues_the_step_count_of_continued_trials() -> None:
    result = _search(strategy="hyperband", epochs=2, tuner_kwargs={"factor": 2})
    oracle_trials = result.tuner.oracle.trials
    continued = 0
    for row in result.trials.itertuples():
        values = oracle_trials[row.trial_id].hyperparameters.values
        assert row.epochs == values["tuner/epochs"]
        if values["tuner/epochs"] - values["tuner/initial_epoch"] == 1:
            # One epoch trained in this trial: the step count includes the inherited epochs.
            assert row.steps == values["tuner/epochs"] * STEPS_PER_EPOCH
            continued += values["tuner/initial_epoch"] > 0
    assert continued >= 1


def test_diverging_rate_is_kept_with_the_worst_objective() -> None:
    result = _search(strategy="grid", min_lr=1e-3, max_lr=1e30, max_trials=2)
    trials = result.trials.sort_values("learning_rate")
    assert (trials["status"] == "COMPLETED").all()
    assert trials["learning_rate"].tolist() == pytest.approx([1e-3, 1e30])
    assert trials["val_loss"].iloc[-1] == math.inf
    assert math.isfinite(trials["val_loss"].iloc[0])
    assert result.best_learning_rate == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"strategy": "annealing"}, "Unknown `strategy`"),
        ({"min_lr": 0.1, "max_lr": 0.1}, "smaller than"),
        ({"min_lr": 0.5, "max_lr": 0.1}, "smaller than"),
        ({"min_lr": 0.0}, "`min_lr` must be > 0"),
        ({"min_lr": -1e-3}, "`min_lr` must be > 0"),
        ({"max_lr": float("inf")}, "`max_lr` must be finite"),
        ({"max_trials": 0}, "max_trials"),
        ({"max_trials": 2.5}, "max_trials"),
        ({"seed": -1}, "seed"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedules": {}}, "non-empty"),
        ({"fit_kwargs": {"epochs": 5}}, "must not set"),
        ({"tuner_kwargs": {"max_trials": 5}}, "must not set"),
        ({"strategy": "grid", "max_trials": 1, "schedules": {"a": None, "b": None}}, "needs"),
    ],
)
def test_bad_input_raises_value_error(arguments, message) -> None:
    with pytest.raises(ValueError, match=message):
        _search(**arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"strategy": 1}, "strategy"),
        ({"min_lr": "1e-3"}, "min_lr"),
        ({"epochs": True}, "epochs"),
        ({"overwrite": "yes"}, "overwrite"),
        # A wrong type is a TypeError (before the shared checks these were ValueErrors).
        ({"schedules": ["cosine"]}, "schedules"),
        ({"schedules": {1: None}}, "strings"),
    ],
)
def test_arguments_of_the_wrong_type_raise_type_error(arguments, message) -> None:
    with pytest.raises(TypeError, match=message):
        _search(**arguments)


def test_bad_callables_raise_type_error() -> None:
    with pytest.raises(TypeError, match="build_model"):
        search_learning_rate("model", X, Y, validation_data=(X_VAL, Y_VAL))
    with pytest.raises(TypeError, match="schedules"):
        _search(schedules={"cosine": 0.5})
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        _search(schedules={"broken": lambda lr, steps, epochs: lr})
    with pytest.raises(TypeError, match="compiled"):
        _search(lambda lr: keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]))


# --------------------------------------------------------------------------- failed trials


@pytest.mark.parametrize("max_trials", [2, 3])
def test_a_search_whose_trials_all_failed_raises_the_first_error(max_trials) -> None:
    # Without validation data fit logs no "val_loss", so every trial fails. Two trials stay
    # under keras-tuner's limit of three consecutive failures (it then returned a "best" rate
    # of a failed trial); three reach it (it then raised its own error, about the last trial).
    with pytest.raises(
        RuntimeError, match=f"Every one of the {max_trials} trials failed"
    ) as caught:
        _search(strategy="grid", validation_data=None, max_trials=max_trials)
    message = str(caught.value)
    assert "(trial 0," in message  # the first trial's error, not the last one's
    assert "'val_loss' is not among the logs of fit (loss)" in message


def test_failed_trials_never_count() -> None:
    # Rates above 0.1 fail when the model is built; the grid is 1e-3, 0.0173, 0.3.
    def fails_above_a_tenth(learning_rate):
        if learning_rate > 0.1:
            raise ValueError("this rate is refused")
        return problem.build_model(learning_rate)

    result = _search(fails_above_a_tenth, strategy="grid", min_lr=1e-3, max_lr=0.3)
    trials = result.trials.set_index("learning_rate").sort_index()
    assert trials["status"].tolist() == ["COMPLETED", "COMPLETED", "FAILED"]
    assert math.isnan(trials["val_loss"].iloc[-1])
    assert result.best_learning_rate <= 0.1


def test_an_objective_fit_logs_without_validation_data_works() -> None:
    result = _search(strategy="grid", validation_data=None, objective="loss", max_trials=2)
    assert (result.trials["status"] == "COMPLETED").all()
    assert result.objective == "loss"


def test_lrtools_imports_tuning_without_keras_tuner_or_pandas() -> None:
    # Make keras_tuner and pandas unimportable, as in an install with only Keras and NumPy.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'keras_tuner', 'pandas'}:\n"
        "            raise ImportError(f'{name} is not installed')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lrtools, lrtools.tuning, lrtools.optimizers\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_shares_trials_between_workers(tmp_path: Path) -> None:
    """A chief and two workers on 127.0.0.1: the workers split the trials, the chief has all."""
    port = _free_loopback_port()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    result_json = tmp_path / "result.json"
    processes = {}
    started = time.monotonic()
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = {
                **os.environ,
                "KERASTUNER_TUNER_ID": tuner_id,
                "KERASTUNER_ORACLE_IP": "127.0.0.1",
                "KERASTUNER_ORACLE_PORT": str(port),
                "TF_CPP_MIN_LOG_LEVEL": "2",
                # Three processes may share one GPU: don't let each grab all its memory.
                "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            }
            command = [sys.executable, str(_HELPER), str(tmp_path / tuner_id)]
            command += [str(result_json), str(barrier), "2"]
            processes[tuner_id] = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        outputs = {}
        for tuner_id, process in processes.items():
            remaining = max(1.0, 300 - (time.monotonic() - started))
            outputs[tuner_id], _ = process.communicate(timeout=remaining)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    wall_time = time.monotonic() - started
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id} failed:\n{outputs[tuner_id][-3000:]}"

    trials = json.loads(result_json.read_text())
    chief_ids = {trial["trial_id"] for trial in trials}
    assert len(chief_ids) == problem.MAX_TRIALS
    assert all(trial["status"] == "COMPLETED" for trial in trials)
    assert all(math.isfinite(trial["val_loss"]) for trial in trials)
    assert all(trial["steps"] == STEPS_PER_EPOCH for trial in trials)

    # Each worker keeps a checkpoint folder for every trial it trained.
    worked = {
        tuner_id: {
            folder.name.removeprefix("trial_")
            for folder in (tmp_path / tuner_id / "learning_rate_search").glob("trial_*")
        }
        for tuner_id in ("tuner0", "tuner1")
    }
    assert worked["tuner0"] and worked["tuner1"], worked
    assert worked["tuner0"].isdisjoint(worked["tuner1"])
    assert worked["tuner0"] | worked["tuner1"] == chief_ids
    print(f"distributed search wall time: {wall_time:.1f} s")
