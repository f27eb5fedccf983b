"""Measurement 3: wall time of a range test against as many plain ``model.fit`` steps.

For each round: a fresh digits CNN (Adam) runs the range test (never stopping
early) twice, and another fresh one runs ``model.fit`` over the same number of
batches twice. The first call of each includes building and tracing ("cold"),
the second does not ("warm").
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from benchmarks.common import BATCH_SIZE, DATA_SEED, LOSS, RANGE_TEST_STEPS, log
from lrtools.data import load_digits
from lrtools.finder import lr_range_test
from lrtools.models import digits_cnn

NAME = "range_test_overhead"
TABLES = ("range_test_overhead.csv",)
FIGURE = "range_test_overhead.png"

MODEL = digits_cnn
OPTIMIZER = keras.optimizers.Adam
RATE = 1e-3  # the optimizer's rate (fit trains at it; the range test replaces it)
RANGE_TEST_START, RANGE_TEST_END = 1e-6, 0.1
TASKS = ("range test", "fit")
STATES = ("cold", "warm")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        rounds: repetitions of the range-test-versus-fit timing.
    """

    rounds: int


FULL = Settings(rounds=3)
QUICK = dataclasses.replace(FULL, rounds=1)


def _run(task: str, model: keras.Model, x: np.ndarray, y: np.ndarray) -> int:
    """Run the range test or ``fit`` once on ``model``; return the steps it ran."""
    if task == "fit":
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
        return RANGE_TEST_STEPS
    result = lr_range_test(
        model,
        x,
        y,
        batch_size=BATCH_SIZE,
        start_lr=RANGE_TEST_START,
        end_lr=RANGE_TEST_END,
        num_steps=RANGE_TEST_STEPS,
        diverge_factor=math.inf,
        verbose=0,
    )
    return len(result.repeat_losses[0])


def measure(settings: Settings) -> dict[str, pd.DataFrame]:
    """Time each task cold and warm, on a fresh model per task and round.

    Returns:
        ``range_test_overhead.csv``: one row per round, task and state, with
        the steps run and the wall time in seconds.
    """
    data = load_digits(kind="images", seed=DATA_SEED)
    x = np.resize(data.x_train, (RANGE_TEST_STEPS * BATCH_SIZE, *data.x_train.shape[1:]))
    y = np.resize(data.y_train, (RANGE_TEST_STEPS * BATCH_SIZE,))
    rows = []
    for number in range(settings.rounds):
        for task in TASKS:
            keras.utils.set_random_seed(number)
            model = MODEL(data.input_shape, data.num_classes)
            model.compile(optimizer=OPTIMIZER(RATE), loss=LOSS, metrics=["accuracy"])
            for state in STATES:
                start = time.perf_counter()
                steps = _run(task, model, x, y)
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "round": number,
                        "task": task,
                        "state": state,
                        "steps": steps,
                        "seconds": seconds,
                    }
                )
                log(f"[range test cost] round {number + 1}: {task}, {state}: {seconds:.2f} s")
    return {"range_test_overhead.csv": pd.DataFrame(rows)}


def summarize(tables: dict[str, pd.DataFrame], settings: Settings) -> dict[str, Any]:
    """The entry of results.json: median seconds of each task and state, and their ratios."""
    medians = tables["range_test_overhead.csv"].groupby(["task", "state"])["seconds"].median()
    ratios = {state: medians["range test", state] / medians["fit", state] for state in STATES}
    return {
        "setup": {
            "model": MODEL.__name__,
            "optimizer": OPTIMIZER.__name__,
            "rate": RATE,
            "batch_size": BATCH_SIZE,
            "steps": RANGE_TEST_STEPS,
            "range_test": {"start_lr": RANGE_TEST_START, "end_lr": RANGE_TEST_END},
        },
        "seconds": {f"{task}, {state}": float(value) for (task, state), value in medians.items()},
        "headline": {f"{state}_ratio": float(ratio) for state, ratio in ratios.items()},
        "targets": [],
        "note": "The issue sets no target for this measurement; it is reported as measured.",
    }


def draw(tables: dict[str, pd.DataFrame], entry: dict[str, Any]) -> Figure:
    """Wall time of the range test and of as many ``fit`` steps, fresh and warm."""
    fig, ax = plt.subplots(figsize=(7, 4))
    runs = tables["range_test_overhead.csv"]
    sns.barplot(
        runs, x="state", y="seconds", hue="task", estimator="median", errorbar=("pi", 100), ax=ax
    )
    ax.set(
        xlabel="model state (cold: first call, tracing included)",
        ylabel="wall time (s), median; bars: min to max",
        title=f"{int(runs['steps'].max())} steps: range test against model.fit",
    )
    fig.tight_layout()
    return fig
