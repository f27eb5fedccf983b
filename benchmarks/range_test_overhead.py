"""Measurement 3: wall time of a range test against as many plain ``model.fit`` steps.

In each round, in a shuffled order: a fresh digits CNN (Adam) runs the range test
(never stopping early) twice; another fresh one runs ``model.fit`` over the same
number of batches twice; a third is trained by one ``fit`` (untimed) and then runs
the range test once. The first call on a fresh model includes building and tracing
("cold"), the second does not ("warm"). Each ratio divides the range test's time
by ``fit``'s in the same round; the figure is the median over rounds, with quartiles.
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

from benchmarks.common import BATCH_SIZE, DATA_SEED, LOSS, RANGE_TEST_STEPS, log, target
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
AFTER_FIT = "after fit"  # the range test's state on a model one ``fit`` already trained
TARGET = 1.2  # issue 14: range test / as many fit steps, cold and warm


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        rounds: repetitions of the range-test-versus-fit timing.
    """

    rounds: int


FULL = Settings(rounds=9)
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


def _compiled(seed: int, data: Any) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = MODEL(data.input_shape, data.num_classes)
    model.compile(optimizer=OPTIMIZER(RATE), loss=LOSS, metrics=["accuracy"])
    return model


def _timed(task: str, model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    start = time.perf_counter()
    steps = _run(task, model, x, y)
    return steps, time.perf_counter() - start


def measure(settings: Settings) -> dict[str, pd.DataFrame]:
    """Time each task cold and warm, and the range test after a fit, interleaved over rounds.

    Returns:
        ``range_test_overhead.csv``: one row per round, task and state, with
        the steps run and the wall time in seconds.
    """
    data = load_digits(kind="images", seed=DATA_SEED)
    x = np.resize(data.x_train, (RANGE_TEST_STEPS * BATCH_SIZE, *data.x_train.shape[1:]))
    y = np.resize(data.y_train, (RANGE_TEST_STEPS * BATCH_SIZE,))
    rng, rows = np.random.default_rng(0), []
    jobs = [(task, STATES) for task in TASKS] + [("range test", (AFTER_FIT,))]
    for number in range(settings.rounds):
        for index in rng.permutation(len(jobs)):
            task, states = jobs[index]
            model = _compiled(number, data)
            if states == (AFTER_FIT,):
                _run("fit", model, x, y)
            for state in states:
                steps, seconds = _timed(task, model, x, y)
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


def ratios(runs: pd.DataFrame) -> pd.DataFrame:
    """Per round: the range test's time over ``fit``'s, cold, warm and after a fit.

    After a fit, the range test is compared with a warm ``fit`` (the model is traced).
    """
    seconds = runs.pivot_table(index="round", columns=["task", "state"], values="seconds")
    fit = seconds["fit"]
    tested = seconds["range test"]
    return pd.DataFrame(
        {
            "cold": tested["cold"] / fit["cold"],
            "warm": tested["warm"] / fit["warm"],
            AFTER_FIT: tested[AFTER_FIT] / fit["warm"],
        }
    )


def summarize(tables: dict[str, pd.DataFrame], settings: Settings) -> dict[str, Any]:
    """The entry of results.json: median seconds, ratios (median, quartiles), targets."""
    runs = tables["range_test_overhead.csv"]
    medians = runs.groupby(["task", "state"])["seconds"].median()
    per_round = ratios(runs)
    spread = {
        state: [float(per_round[state].quantile(0.25)), float(per_round[state].quantile(0.75))]
        for state in per_round
    }
    headline = {f"{state}_ratio": float(per_round[state].median()) for state in STATES}
    headline["after_fit_ratio"] = float(per_round[AFTER_FIT].median())
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
        "headline": headline,
        "quartiles": spread,
        "targets": [
            target(
                f"range test within {TARGET:g}x of as many fit steps, {label} "
                "(median over rounds of the ratio)",
                headline[f"{state}_ratio"],
                TARGET,
                "ratio",
            )
            for state, label in (("cold", "fresh model"), ("warm", "warm model"))
        ],
    }


def draw(tables: dict[str, pd.DataFrame], entry: dict[str, Any]) -> Figure:
    """Wall time of the range test and of as many ``fit`` steps, fresh, warm and after a fit."""
    fig, ax = plt.subplots(figsize=(8, 4))
    runs = tables["range_test_overhead.csv"]
    sns.barplot(
        runs,
        x="state",
        y="seconds",
        hue="task",
        order=[*STATES, AFTER_FIT],
        estimator="median",
        errorbar=("pi", 50),
        ax=ax,
    )
    ax.set(
        xlabel="model state (cold: first call, tracing included; after fit: a trained model)",
        ylabel="wall time (s), median; bars: quartiles",
        title=f"{int(runs['steps'].max())} steps: range test against model.fit",
    )
    fig.tight_layout()
    return fig
