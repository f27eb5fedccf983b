"""One process of a distributed learning-rate search, started by tests/test_tuning.py.

Usage: ``python _distributed_search.py DIRECTORY RESULT_JSON BARRIER_DIR NUM_WORKERS``
with keras-tuner's environment variables (``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``) set. Workers wait until all
workers have started (files in BARRIER_DIR), so that a fast starter cannot take
every trial before a slow one has imported TensorFlow. The chief writes the trials
it collected to RESULT_JSON.

The tiny problem (data and ``build_model``) is shared with test_tuning.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

MAX_TRIALS = 4
BATCH_SIZE = 16


def tiny_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small linear regression: 64 training and 32 validation samples of 4 features."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 1))
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x @ weights + 0.1 * rng.normal(size=(96, 1))).astype("float32")
    return x[:64], y[:64], x[64:], y[64:]


def build_model(learning_rate: float | keras.optimizers.schedules.LearningRateSchedule):
    """A compiled one-layer model, with the same initial weights on every call."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def _wait_for_all_workers(barrier: Path, num_workers: int, timeout_s: float = 180.0) -> None:
    (barrier / os.environ["KERASTUNER_TUNER_ID"]).touch()
    deadline = time.monotonic() + timeout_s
    while len(list(barrier.iterdir())) < num_workers:
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers did not start")
        time.sleep(0.1)


def main(directory: str, result_json: str, barrier: str, num_workers: int) -> None:
    from lrtools.tuning import search_learning_rate

    if os.environ["KERASTUNER_TUNER_ID"] != "chief":
        _wait_for_all_workers(Path(barrier), num_workers)
    x, y, x_val, y_val = tiny_problem()
    result = search_learning_rate(
        build_model,
        x,
        y,
        validation_data=(x_val, y_val),
        strategy="random",
        min_lr=1e-3,
        max_lr=0.3,
        max_trials=MAX_TRIALS,
        epochs=1,
        batch_size=BATCH_SIZE,
        seed=0,
        directory=directory,
    )
    if result is not None:
        result.trials.to_json(result_json, orient="records")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
