"""Measurement 4: epochs to a validation accuracy under fixed rates and schedules.

SGD with momentum on the digits CNN. First the :data:`FIXED_RATES`; the one with
the best mean final validation accuracy is the best fixed rate ``r``. Then, over
the same epochs: step decay (``r``, times :data:`DECAY_GAMMA` at the fractions
:data:`DECAY_AT` of the run), cosine decay from ``r``, CLR (triangular2, ``r``
times :data:`CLR_RANGE`, a half-cycle of 2 units), SGDR (cosine restarts from
``r``, cycles of 1, 2, 4 and 8 units: they end with the run) and one-cycle
(``OneCycle`` callback, peak ``r`` times :data:`ONE_CYCLE_PEAK`, momentum cycled,
run with one step per call so that the callback sets every step's rate), where a
unit is 1/:data:`CYCLE_UNITS` of the run. Schedules in the optimizer run
:data:`STEPS_PER_EXECUTION` steps per call (the same updates).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from benchmarks.common import BATCH_SIZE, DATA_SEED, log
from lrtools import callbacks, plotting, schedules
from lrtools.data import load_digits
from lrtools.experiments import Config, rate_sweep, run_experiment
from lrtools.models import digits_cnn

NAME = "time_to_accuracy"
TABLES = ("time_to_accuracy_curves.csv", "time_to_accuracy.csv")
FIGURE = "time_to_accuracy.png"

MODEL = digits_cnn
MOMENTUM = 0.9
FIXED_RATES = (0.01, 0.03, 0.1)
STEPS_PER_EXECUTION = 8
DECAY_AT, DECAY_GAMMA = (1 / 2, 3 / 4), 0.1
CLR_RANGE = (1 / 10, 3.0)
ONE_CYCLE_PEAK = 3.0
CYCLE_UNITS = 15  # CLR's half-cycle is 2 units, SGDR's cycles 1, 2, 4 and 8


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        epochs: epochs of every run.
        seeds: the seeds of every setup.
        target_accuracy: the validation accuracy the runs are timed to.
    """

    epochs: int
    seeds: tuple[int, ...]
    target_accuracy: float


FULL = Settings(epochs=15, seeds=(0, 1, 2, 3, 4), target_accuracy=0.95)
QUICK = dataclasses.replace(FULL, epochs=3, seeds=(0,))


def fixed_name(rate: float) -> str:
    """The name of a fixed-rate setup (``lrtools.experiments.rate_sweep``'s)."""
    return f"SGD {rate:g}"


def best_fixed_name(rate: float) -> str:
    """The name the best fixed rate is shown under."""
    return f"best fixed ({rate:g})"


def momentum_sgd(learning_rate: Any) -> Callable[[], keras.optimizers.Optimizer]:
    """A factory of SGD optimizers with momentum at ``learning_rate`` (a rate or schedule)."""
    return lambda: keras.optimizers.SGD(learning_rate, momentum=MOMENTUM)


def scheduled_setups(rate: float, total: int) -> dict[str, Any]:
    """The schedules built on the best fixed rate ``rate``, over ``total`` steps."""
    unit = max(total // CYCLE_UNITS, 1)
    low, high = CLR_RANGE
    return {
        "step decay": momentum_sgd(
            schedules.MultiStepDecay(rate, [int(total * at) for at in DECAY_AT], gamma=DECAY_GAMMA)
        ),
        "cosine": momentum_sgd(schedules.CosineDecay(rate, total)),
        "CLR": momentum_sgd(
            schedules.CyclicLR(low * rate, high * rate, step_size=2 * unit, mode="triangular2")
        ),
        "SGDR": momentum_sgd(schedules.CosineRestarts(rate, unit, t_mul=2.0)),
    }


def measure(settings: Settings) -> dict[str, pd.DataFrame]:
    """Train every setup on every seed; the curves and the epoch each run reached the target.

    Returns:
        ``time_to_accuracy_curves.csv`` (one row per setup, seed and epoch) and
        ``time_to_accuracy.csv`` (one row per run: ``epochs_to_target``, empty
        for a run that never reached the target, and ``final_val_accuracy``).
    """
    data = load_digits(kind="images", seed=DATA_SEED)
    total = settings.epochs * math.ceil(len(data.x_train) / BATCH_SIZE)
    common = dict(epochs=settings.epochs, seeds=settings.seeds, batch_size=BATCH_SIZE)
    sweep = rate_sweep(keras.optimizers.SGD, FIXED_RATES, momentum=MOMENTUM)
    fixed = run_experiment(MODEL, sweep, data, steps_per_execution=STEPS_PER_EXECUTION, **common)
    best = fixed.best_config("val_accuracy")
    rate = FIXED_RATES[list(sweep).index(best)]
    log(f"[time to accuracy] best fixed rate: {rate:g}")
    scheduled = run_experiment(
        MODEL,
        scheduled_setups(rate, total),
        data,
        steps_per_execution=STEPS_PER_EXECUTION,
        **common,
    )
    one_cycle = run_experiment(
        MODEL,
        {
            "one-cycle": Config(
                momentum_sgd(rate),
                callbacks=lambda: [callbacks.OneCycle(ONE_CYCLE_PEAK * rate, total)],
            )
        },
        data,
        **common,
    )
    parts = (fixed, scheduled, one_cycle)
    renamed = {best: best_fixed_name(rate)}
    curves = pd.concat([part.frame for part in parts], ignore_index=True)
    curves = curves.replace({"config": renamed})[
        ["config", "seed", "epoch", "loss", "val_loss", "val_accuracy", "lr"]
    ]
    reach = pd.concat(
        [
            part.epochs_to_reach(settings.target_accuracy, metric="val_accuracy").merge(
                part.runs[["config", "seed", "val_accuracy"]], on=["config", "seed"]
            )
            for part in parts
        ],
        ignore_index=True,
    )
    reach = reach.rename(columns={"val_accuracy": "final_val_accuracy"})
    reach = reach.replace({"config": renamed})
    means = reach.groupby("config", sort=False)["epochs_to_target"].mean()
    log(
        "[time to accuracy] mean epochs to target: "
        + ", ".join(f"{config} {epochs:.1f}" for config, epochs in means.items())
    )
    return {"time_to_accuracy_curves.csv": curves, "time_to_accuracy.csv": reach}


def summarize(tables: dict[str, pd.DataFrame], settings: Settings) -> dict[str, Any]:
    """The entry of results.json: mean epochs to the target per setup, and the best fixed rate."""
    reach = tables["time_to_accuracy.csv"]
    grouped = reach.groupby("config", sort=False)
    summary = pd.DataFrame(
        {
            "mean_epochs": grouped["epochs_to_target"].mean(),
            "std_epochs": grouped["epochs_to_target"].std(),
            "reached": grouped["epochs_to_target"].count(),
            "runs": grouped["epochs_to_target"].size(),
            "mean_final_val_accuracy": grouped["final_val_accuracy"].mean(),
        }
    ).reset_index()
    (rate,) = [rate for rate in FIXED_RATES if best_fixed_name(rate) in grouped.groups]
    others = [fixed_name(other) for other in FIXED_RATES if other != rate]
    shown = summary[~summary["config"].isin(others)]
    return {
        "setup": {
            "model": MODEL.__name__,
            "optimizer": f"SGD, momentum {MOMENTUM:g}",
            "batch_size": BATCH_SIZE,
            "steps_per_execution": STEPS_PER_EXECUTION,
            "fixed_rates": list(FIXED_RATES),
            "best_fixed_rate": rate,
            "decay_at": list(DECAY_AT),
            "decay_gamma": DECAY_GAMMA,
            "clr_range": list(CLR_RANGE),
            "one_cycle_peak": ONE_CYCLE_PEAK,
            "cycle_units": CYCLE_UNITS,
        },
        "configs": summary.to_dict(orient="records"),
        "headline": {
            row.config: {"mean_epochs": row.mean_epochs, "reached": int(row.reached)}
            for row in shown.itertuples()
        },
        "targets": [],
        "note": "The issue sets no target for this measurement; it is reported as measured. "
        "Runs that never reach the accuracy count as not reached (empty in the CSV, null here), "
        "not as the last epoch.",
    }


def draw(tables: dict[str, pd.DataFrame], entry: dict[str, Any]) -> Figure:
    """Left: validation accuracy by epoch; right: epochs to the target per run."""
    fig, (curves_ax, reach_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    target_accuracy = entry["settings"]["target_accuracy"]
    reach = tables["time_to_accuracy.csv"]
    plotting.plot_learning_curves(
        tables["time_to_accuracy_curves.csv"], "val_accuracy", ax=curves_ax
    )
    curves_ax.axhline(target_accuracy, color="0.3", linestyle="--", linewidth=1)
    curves_ax.set(ylim=(max(0.0, target_accuracy - 0.25), 1.0), title="Validation accuracy")
    curves_ax.legend(fontsize="x-small", loc="lower right")
    order = list(dict.fromkeys(reach["config"]))
    plotting.plot_scores(
        reach.dropna(subset=["epochs_to_target"]),
        "epochs_to_target",
        x="config",
        ax=reach_ax,
        order=order,
    )
    counts = reach.groupby("config")["epochs_to_target"].agg(["count", "size"])
    reach_ax.set_xticks(
        range(len(order)),
        [f"{name} ({counts.loc[name, 'count']}/{counts.loc[name, 'size']})" for name in order],
        rotation=30,
        ha="right",
    )
    reach_ax.set(
        ylabel=f"epochs to {target_accuracy:.0%} validation accuracy",
        xlabel="setup (runs that reached the target / runs)",
        title="Epochs to the target (dots: seeds; diamond: mean ± sd)",
    )
    fig.tight_layout()
    return fig
