"""Measurement 5: which suggestion rule of the range test picks the best rate?

For each problem the book already trains (a network, an optimizer, a batch size)
and each seed: one range test (chapter 3's settings) gives the rate of each rule
of ``RangeTestResult.suggest`` and of a consensus rule, the median of the three
(on a log scale the middle one, so one rule that strays cannot move it). The
network then trains for a few epochs at each suggested rate, and at every rate of
a small log grid, all from the same initial weights, with the same batches and the
same budget. A rule's score on a seed is its validation accuracy; its gap is the
accuracy of the grid's best rate (the one with the best mean over seeds) minus its
own, in percentage points.

Every run of one problem and seed reuses one compiled model: before each run its
initial weights and its optimizer's initial state are put back and the rate is
set, so the step is traced once (the runs are otherwise exactly fresh models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmarks.common import DATA_SEED, LOSS, RANGE_TEST_STEPS, log
from lrtools.data import load_digits
from lrtools.finder import lr_range_test
from lrtools.models import digits_cnn, digits_mlp, digits_rnn, small_resnet

NAME = "suggestions"
TABLES = ("suggestion_runs.csv",)
FIGURE = "suggestions.png"

METHODS = ("steepest", "valley", "minimum")
CONSENSUS = "median of three"
RULES = (*METHODS, CONSENSUS)
GRID = "grid"
RANGE_TEST_START, RANGE_TEST_END = 1e-6, 10.0  # chapter 3's range test
STEPS_PER_EXECUTION = 8
ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SGD_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A network, its optimizer and its batch size, as a chapter trains them.

    Attributes:
        model: the builder ``(input_shape, num_classes) -> keras.Model``.
        optimizer: the optimizer class.
        options: further arguments of the optimizer (e.g. the momentum).
        batch_size: the mini-batch size of the range test and of every run.
        grid: the rates of the grid, a half-decade apart.
        chapter: where the book trains it so.
    """

    model: Callable[..., keras.Model]
    optimizer: type[keras.optimizers.Optimizer]
    options: dict[str, float]
    batch_size: int
    grid: tuple[float, ...]
    chapter: str


PROBLEMS = {
    "CNN, Adam": Problem(digits_cnn, keras.optimizers.Adam, {}, 32, ADAM_GRID, "3"),
    "MLP, SGD + momentum": Problem(
        digits_mlp, keras.optimizers.SGD, {"momentum": 0.9}, 32, SGD_GRID, "4 to 8"
    ),
    "ResNet, SGD + momentum": Problem(
        small_resnet,
        keras.optimizers.SGD,
        {"momentum": 0.9, "weight_decay": 1e-4},
        64,
        SGD_GRID,
        "10",
    ),
    "GRU, Adam": Problem(digits_rnn, keras.optimizers.Adam, {}, 32, ADAM_GRID, "10"),
}
"""Problem name -> its set-up, on the 8x8 digits (the MLP flattens them itself)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        problems: names of :data:`PROBLEMS` to measure.
        seeds: seeds of the initial weights, the batches and the range test.
        epochs: epochs of every training run.
    """

    problems: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int


FULL = Settings(problems=tuple(PROBLEMS), seeds=(0, 1, 2), epochs=4)
QUICK = Settings(problems=("CNN, Adam", "MLP, SGD + momentum"), seeds=(0,), epochs=1)


def consensus(rates: dict[str, float]) -> float:
    """The consensus rule: the median of the rules' rates (NaN for a rule that gave none).

    Example:

    >>> consensus({"steepest": 0.5, "valley": 0.01, "minimum": 0.03})
    0.03
    """
    finite = [rate for rate in rates.values() if np.isfinite(rate)]
    return float(np.median(finite)) if finite else float("nan")


def _trainer(problem: Problem, data: Any, seed: int, epochs: int) -> tuple[keras.Model, Callable]:
    """One compiled model of ``problem`` and a function that trains it afresh at a rate."""
    keras.utils.set_random_seed(seed)
    model = problem.model(data.input_shape, data.num_classes)
    model.compile(
        optimizer=problem.optimizer(1e-3, **problem.options),
        loss=LOSS,
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    model.optimizer.build(model.trainable_variables)
    weights = model.get_weights()
    state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    trained: dict[float, tuple[float, float]] = {}

    def train(rate: float) -> tuple[float, float]:
        if rate not in trained:
            model.set_weights(weights)
            for variable, value in zip(model.optimizer.variables, state):
                variable.assign(value)
            model.optimizer.learning_rate = rate
            keras.utils.set_random_seed(seed)
            model.fit(
                data.x_train, data.y_train, batch_size=problem.batch_size, epochs=epochs, verbose=0
            )
            final = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)
            trained[rate] = (float(final["accuracy"]), float(final["loss"]))
        return trained[rate]

    return model, train


def _suggested_rates(model: keras.Model, problem: Problem, data: Any, seed: int) -> dict:
    """Each rule's rate from one range test on ``model`` (NaN where a rule gives none)."""
    keras.utils.set_random_seed(seed)
    result = lr_range_test(
        model,
        data.x_train,
        data.y_train,
        batch_size=problem.batch_size,
        start_lr=RANGE_TEST_START,
        end_lr=RANGE_TEST_END,
        num_steps=RANGE_TEST_STEPS,
        verbose=0,
    )
    rates = {}
    for method in METHODS:
        try:
            rates[method] = float(result.suggest(method))
        except ValueError:  # a curve that gives this rule nothing to read
            rates[method] = float("nan")
    rates[CONSENSUS] = consensus(rates)
    return rates


def measure(settings: Settings) -> dict[str, pd.DataFrame]:
    """Range test, then every rule's rate and every grid rate trained, per problem and seed.

    Returns:
        ``suggestion_runs.csv``: one row per problem, seed and rule (``"grid"`` for
        a grid rate): the rate, the final validation accuracy and loss (NaN for a
        rule that suggested nothing).
    """
    data = load_digits(kind="images", seed=DATA_SEED)
    rows = []
    for name in settings.problems:
        problem = PROBLEMS[name]
        for seed in settings.seeds:
            model, train = _trainer(problem, data, seed, settings.epochs)
            picks = _suggested_rates(model, problem, data, seed)
            runs = [(rule, rate) for rule, rate in picks.items()]
            runs += [(GRID, rate) for rate in problem.grid]
            for rule, rate in runs:
                accuracy, loss = train(rate) if np.isfinite(rate) else (np.nan, np.nan)
                rows.append(
                    {
                        "problem": name,
                        "seed": seed,
                        "rule": rule,
                        "learning_rate": rate,
                        "val_accuracy": accuracy,
                        "val_loss": loss,
                    }
                )
            log(
                f"[suggestions] {name}, seed {seed}: "
                + ", ".join(
                    f"{rule} {rate:.3g} -> {train(rate)[0]:.3f}"
                    for rule, rate in picks.items()
                    if np.isfinite(rate)
                )
                + f"; grid best {max(train(rate)[0] for rate in problem.grid):.3f}"
            )
    return {"suggestion_runs.csv": pd.DataFrame(rows)}


def scores(runs: pd.DataFrame) -> pd.DataFrame:
    """Every rule's run with the accuracy of the grid's best rate and its gap to it.

    The grid's best rate of a problem is the one with the best mean validation
    accuracy over the seeds; ``gap_pp`` is its accuracy on the run's seed minus the
    run's, in percentage points (a rule that suggested nothing has a NaN gap).
    """
    grid = runs[runs["rule"] == GRID]
    means = grid.groupby(["problem", "learning_rate"], sort=False)["val_accuracy"].mean()
    best_rate = means.groupby(level="problem", sort=False).idxmax().map(lambda key: key[1])
    best = grid[grid["learning_rate"] == grid["problem"].map(best_rate)]
    best = best[["problem", "seed", "learning_rate", "val_accuracy"]].rename(
        columns={"learning_rate": "grid_best_rate", "val_accuracy": "grid_best_accuracy"}
    )
    ruled = runs[runs["rule"] != GRID].merge(best, on=["problem", "seed"])
    ruled["gap_pp"] = 100 * (ruled["grid_best_accuracy"] - ruled["val_accuracy"])
    return ruled


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Problems x rules: mean and sd of the accuracy and of the gap over seeds, the rates."""
    scored = scores(runs)
    grouped = scored.groupby(["problem", "rule"], sort=False)
    return grouped.agg(
        mean_val_accuracy=("val_accuracy", "mean"),
        std_val_accuracy=("val_accuracy", "std"),
        mean_gap_pp=("gap_pp", "mean"),
        std_gap_pp=("gap_pp", "std"),
        min_learning_rate=("learning_rate", "min"),
        max_learning_rate=("learning_rate", "max"),
        suggested=("learning_rate", "count"),
        grid_best_rate=("grid_best_rate", "first"),
        grid_best_accuracy=("grid_best_accuracy", "mean"),
    ).reset_index()


def summarize(tables: dict[str, pd.DataFrame], settings: Settings) -> dict[str, Any]:
    """The entry of results.json: the table, each rule's mean and worst gap, and the winner.

    A rule's overall score is its mean gap over the problems (each problem's mean
    over seeds); the worst case is its largest gap on one problem (mean over seeds)
    and on one run. The winner has the smallest mean gap.
    """
    runs = tables["suggestion_runs.csv"]
    by_problem = table(runs)
    scored = scores(runs)
    overall = pd.DataFrame(
        {
            "mean_gap_pp": by_problem.groupby("rule", sort=False)["mean_gap_pp"].mean(),
            "worst_problem_gap_pp": by_problem.groupby("rule", sort=False)["mean_gap_pp"].max(),
            "worst_run_gap_pp": scored.groupby("rule", sort=False)["gap_pp"].max(),
            "runs_without_suggestion": scored.groupby("rule", sort=False)["learning_rate"].apply(
                lambda rates: int(rates.isna().sum())
            ),
        }
    ).loc[list(RULES)]
    winner = str(overall["mean_gap_pp"].idxmin())
    return {
        "setup": {
            "problems": {
                name: {
                    "model": problem.model.__name__,
                    "optimizer": problem.optimizer.__name__,
                    "options": problem.options,
                    "batch_size": problem.batch_size,
                    "grid": list(problem.grid),
                    "chapter": problem.chapter,
                }
                for name, problem in PROBLEMS.items()
                if name in settings.problems
            },
            "data": f"load_digits(kind='images', seed={DATA_SEED})",
            "rules": list(RULES),
            "consensus": "the median of the three rules' rates",
            "range_test": {
                "start_lr": RANGE_TEST_START,
                "end_lr": RANGE_TEST_END,
                "num_steps": RANGE_TEST_STEPS,
            },
            "steps_per_execution": STEPS_PER_EXECUTION,
            "score": "validation accuracy after the run; gap: the grid's best rate (best mean "
            "over seeds) minus the rule's, in percentage points, per seed",
        },
        "table": by_problem.to_dict(orient="records"),
        "overall": overall.reset_index(names="rule").to_dict(orient="records"),
        "headline": {
            "winner": winner,
            "winner_mean_gap_pp": float(overall.loc[winner, "mean_gap_pp"]),
            "winner_worst_problem_gap_pp": float(overall.loc[winner, "worst_problem_gap_pp"]),
            "mean_gap_pp": {rule: float(value) for rule, value in overall["mean_gap_pp"].items()},
        },
        "targets": [],
        "note": "The issue sets no target; the rule with the smallest mean gap is the winner.",
    }


def draw(tables: dict[str, pd.DataFrame], entry: dict[str, Any]) -> Figure:
    """One panel per problem: the grid's accuracy by rate, and each rule's picks on it."""
    runs = tables["suggestion_runs.csv"]
    problems = list(dict.fromkeys(runs["problem"]))
    fig, axes = plt.subplots(
        1, len(problems), figsize=(4.2 * len(problems), 4.2), sharey=True, squeeze=False
    )
    # The consensus often equals one of the rules: a small cross, drawn on top, shows both.
    styles = {
        rule: {"marker": marker, "s": 60, "edgecolor": "black"}
        for rule, marker in zip(METHODS, "v^s")
    }
    styles[CONSENSUS] = {"marker": "x", "s": 70, "zorder": 4}
    for ax, problem in zip(axes[0], problems):
        frame = runs[runs["problem"] == problem]
        grid = frame[frame["rule"] == GRID]
        means = grid.groupby("learning_rate")["val_accuracy"].mean()
        ax.plot(means.index, means.values, color="0.4", label="grid (mean over seeds)")
        ax.scatter(grid["learning_rate"], grid["val_accuracy"], color="0.6", s=12)
        for number, rule in enumerate(RULES):
            picked = frame[frame["rule"] == rule]
            ax.scatter(
                picked["learning_rate"],
                picked["val_accuracy"],
                color=f"C{number}",
                linewidth=0.5 if rule != CONSENSUS else 1.5,
                label=rule,
                **{"zorder": 3, **styles[rule]},
            )
        ax.set(xscale="log", xlabel="learning rate (log scale)", title=problem)
    axes[0][0].set_ylabel("validation accuracy after the run")
    axes[0][0].legend(fontsize="x-small", loc="lower left")
    fig.suptitle(f"Each rule's pick against a grid (winner: {entry['headline']['winner']})")
    fig.tight_layout()
    return fig
