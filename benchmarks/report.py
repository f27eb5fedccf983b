"""Render stored benchmark results: the README table and the figures.

Reads what ``benchmarks/run.py`` wrote (``results.json`` and the CSV tables)
and never measures anything, so the README, the book's "Measured" appendix and
the PNG files all show the same stored numbers. Needs pandas, matplotlib and
seaborn only (no Keras).

Example::

    from benchmarks import report
    results = report.load_results("benchmarks/results")
    print(report.readme_table(results))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from lrtools import plotting

SECTIONS = ("overhead", "range_vs_search", "range_test_overhead", "time_to_accuracy")
"""The four measurements, as keys of results.json."""

FIGURES = {
    "overhead": "overhead.png",
    "range_vs_search": "range_vs_search.png",
    "range_test_overhead": "range_test_overhead.png",
    "time_to_accuracy": "time_to_accuracy.png",
}
"""The PNG file of each measurement's figure."""


def load_results(folder: str | os.PathLike) -> dict[str, Any]:
    """Read ``results.json`` from a results folder.

    Args:
        folder: the folder ``benchmarks/run.py`` wrote to.

    Returns:
        The results as a dict.

    Raises:
        FileNotFoundError: if the folder holds no ``results.json``.
        ValueError: if the file lacks one of the four measurements.
    """
    path = Path(folder) / "results.json"
    if not path.exists():
        raise FileNotFoundError(
            f"No {path}: run `python benchmarks/run.py --out {folder}` to measure first."
        )
    results = json.loads(path.read_text(encoding="utf-8"))
    missing = [section for section in SECTIONS if section not in results]
    if missing:
        raise ValueError(f"{path} lacks the measurements {missing}.")
    return results


def _percent(ratio: float) -> str:
    """A step-time ratio as an overhead in percent, e.g. 1.034 -> '+3.4 %'."""
    return f"{100 * (ratio - 1):+.1f} %"


def _verdict(target: dict[str, Any], margin: str) -> str:
    """'yes (by ...)' or 'no (missed by ...)' for a target entry."""
    return f"yes (by {margin})" if target["met"] else f"**no** (missed by {margin})"


def _epochs_to_target(name: str, entry: dict[str, Any], runs: int) -> str:
    """'cosine 6.8', or with the runs that reached the target when not all did."""
    if entry["reached"] == 0:
        return f"{name} never (0/{runs})"
    mean = f"{name} {entry['mean_epochs']:.1f}"
    return mean if entry["reached"] == runs else f"{mean} ({entry['reached']}/{runs} reached)"


def readme_table(results: dict[str, Any]) -> str:
    """Render the short markdown table of headline figures for README.md.

    Args:
        results: the dict of :func:`load_results`.

    Returns:
        Markdown: a line saying when and where it was measured, then a table
        with one row per headline figure, its target and whether it was met.

    Example::

        print(readme_table(load_results("benchmarks/results")))
    """
    overhead = results["overhead"]
    schedule_target, callback_target = overhead["targets"]
    search = results["range_vs_search"]["headline"]
    gap_target, steps_target = results["range_vs_search"]["targets"]
    cost = results["range_test_overhead"]["headline"]
    reach = results["time_to_accuracy"]
    accuracy = reach["setup"]["target_accuracy"]
    runs = len(reach["setup"]["seeds"])
    epochs = ", ".join(
        _epochs_to_target(name, entry, runs) for name, entry in reach["headline"].items()
    )
    machine = results["machine"]
    rows = [
        (
            "Step time, worst schedule in the optimizer "
            f"({overhead['headline']['worst_schedule']})",
            _percent(schedule_target["value"]),
            f"≤ {_percent(schedule_target['threshold'])}",
            _verdict(schedule_target, f"{100 * abs(schedule_target['margin']):.1f} points"),
        ),
        (
            f"Step time, worst batch callback ({overhead['headline']['worst_batch_callback']})",
            _percent(callback_target["value"]),
            f"≤ {_percent(callback_target['threshold'])}",
            _verdict(callback_target, f"{100 * abs(callback_target['margin']):.1f} points"),
        ),
        (
            f"Range test ({search['range_test_rule']}) vs {search['best_search']}: "
            "final validation accuracy",
            f"{search['range_test_val_accuracy']:.3f} vs {search['best_search_val_accuracy']:.3f}",
            "within 1 point",
            _verdict(gap_target, f"{abs(gap_target['margin']):.1f} points"),
        ),
        (
            "Range test vs search: training steps",
            f"{search['range_test_steps']:.0f} vs {search['search_steps']:.0f} "
            f"(1/{1 / search['step_fraction']:.0f})",
            "≤ 1/20",
            _verdict(steps_target, f"{abs(steps_target['margin']) * 100:.1f} points"),
        ),
        (
            f"{results['range_test_overhead']['setup']['steps']}-step range test vs as many "
            "`fit` steps: wall time",
            f"× {cost['cold_ratio']:.2f} (fresh model), × {cost['warm_ratio']:.2f} (warm)",
            "none set",
            "",
        ),
        (
            f"Epochs to {accuracy:.0%} validation accuracy (mean of {runs} seeds)",
            epochs,
            "none set",
            "",
        ),
    ]
    lines = [
        f"Measured {results['date'][:10]} on {machine['processor']} "
        f"({machine['cpu_count']} CPUs, {machine['platform']}), "
        f"Keras {results['versions']['keras']} on {results['keras_backend']}, "
        f"digits CNN, batch 32; full run in {results['wall_time_s'] / 60:.1f} min, load average "
        f"{results['load_average']['start'][0]:g} at the start, "
        f"{results['load_average']['end'][0]:g} at the end (shared machine).",
        "",
        "| measurement | result | target | met |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def draw_overhead(summary: pd.DataFrame, targets: Sequence[float], ax: Axes) -> Axes:
    """Median step-time ratio to the constant rate per variant, with its quartiles over rounds.

    Args:
        summary: ``overhead.csv``: ``variant``, ``kind``, ``median_ratio``,
            ``ratio_q1``, ``ratio_q3``.
        targets: the ratio targets to draw as vertical lines.
        ax: the Axes to draw on.

    Returns:
        The Axes.
    """
    rows = summary.reset_index(drop=True)
    positions = range(len(rows))
    for kind, frame in rows.groupby("kind", sort=False):
        ax.errorbar(
            frame["median_ratio"],
            frame.index,
            xerr=[
                frame["median_ratio"] - frame["ratio_q1"],
                frame["ratio_q3"] - frame["median_ratio"],
            ],
            fmt="o",
            capsize=3,
            label=kind,
        )
    for threshold, style in zip(targets, (":", "--")):
        ax.axvline(threshold, color="0.4", linestyle=style, label=f"target ≤ {threshold:g}")
    ax.set_yticks(list(positions), rows["variant"])
    ax.invert_yaxis()
    ax.set(xlabel="step time ÷ constant-rate step time", ylabel="")
    ax.set_title("Cost of a training step (median over rounds; bars: quartiles)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def draw_range_vs_search(
    trials: pd.DataFrame, finals: pd.DataFrame, axes: Sequence[Axes]
) -> Sequence[Axes]:
    """Left: every search trial and the chosen rates; right: accuracy against steps spent.

    Args:
        trials: ``search_trials.csv``: ``strategy``, ``learning_rate``, ``val_accuracy``.
        finals: ``final_runs.csv``: ``method``, ``seed``, ``learning_rate``,
            ``val_accuracy``, ``steps_spent``.
        axes: two Axes.

    Returns:
        The two Axes.
    """
    trials_ax, cost_ax = axes
    for (strategy, frame), marker in zip(trials.groupby("strategy", sort=False), "so"):
        trials_ax.scatter(
            frame["learning_rate"], frame["val_accuracy"], marker=marker, label=f"{strategy} trial"
        )
    chosen = finals.groupby("method", sort=False)
    # The same colour for a method in both panels, after the two colours of the trials.
    colours = {method: f"C{number}" for number, method in enumerate(chosen.groups, start=2)}
    for method, frame in chosen:
        trials_ax.scatter(
            frame["learning_rate"],
            frame["val_accuracy"],
            marker="*",
            s=120,
            color=colours[method],
            edgecolor="black",
            linewidth=0.5,
            label=f"final runs, {method}",
        )
    trials_ax.set(
        xscale="log",
        xlabel="learning rate (log scale)",
        ylabel="validation accuracy (trials: best epoch)",
        title="Search trials and the chosen rates",
    )
    trials_ax.legend(fontsize="x-small", loc="lower left")
    means = chosen.agg(
        steps=("steps_spent", "first"),
        accuracy=("val_accuracy", "mean"),
        spread=("val_accuracy", "std"),
    )
    for method, row in means.iterrows():
        cost_ax.errorbar(
            row["steps"],
            row["accuracy"],
            yerr=0.0 if math.isnan(row["spread"]) else row["spread"],
            fmt="D",
            capsize=4,
            color=colours[method],
            label=method,
        )
    cost_ax.legend(fontsize="small", loc="center")
    cost_ax.set(
        xscale="log",
        xlabel="training steps spent choosing the rate (log scale)",
        ylabel="final validation accuracy (mean ± sd)",
        title="What the choice cost and what it gave",
    )
    return axes


def draw_range_test_overhead(runs: pd.DataFrame, ax: Axes) -> Axes:
    """Wall time of the range test and of as many ``fit`` steps, fresh and warm.

    Args:
        runs: ``range_test_overhead.csv``: ``task``, ``state``, ``seconds``.
        ax: the Axes to draw on.

    Returns:
        The Axes.
    """
    sns.barplot(
        runs, x="state", y="seconds", hue="task", estimator="median", errorbar=("pi", 100), ax=ax
    )
    ax.set(
        xlabel="model state (cold: first call, tracing included)",
        ylabel="wall time (s), median; bars: min to max",
        title=f"{int(runs['steps'].max())} steps: range test against model.fit",
    )
    return ax


def draw_time_to_accuracy(
    curves: pd.DataFrame, reach: pd.DataFrame, target_accuracy: float, axes: Sequence[Axes]
) -> Sequence[Axes]:
    """Left: validation accuracy by epoch; right: epochs to the target per run.

    Args:
        curves: ``time_to_accuracy_curves.csv`` (one row per config, seed, epoch).
        reach: ``time_to_accuracy.csv`` (one row per run; ``epochs_to_target``
            is empty for a run that never reached the target).
        target_accuracy: the target, drawn as a horizontal line.
        axes: two Axes.

    Returns:
        The two Axes.
    """
    curves_ax, reach_ax = axes
    plotting.plot_learning_curves(curves, "val_accuracy", ax=curves_ax)
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
    return axes


def save_figures(folder: str | os.PathLike) -> list[Path]:
    """Draw the four figures of a results folder into PNG files beside the data.

    Args:
        folder: the folder ``benchmarks/run.py`` wrote to.

    Returns:
        The paths written.
    """
    folder = Path(folder)
    results = load_results(folder)
    plotting.set_theme()
    written = []
    for section, filename in FIGURES.items():
        if section in ("range_vs_search", "time_to_accuracy"):
            fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
        else:
            fig, axes = plt.subplots(figsize=(10, 6) if section == "overhead" else (7, 4))
        if section == "overhead":
            draw_overhead(
                pd.read_csv(folder / "overhead.csv"),
                [target["threshold"] for target in results["overhead"]["targets"]],
                axes,
            )
        elif section == "range_vs_search":
            draw_range_vs_search(
                pd.read_csv(folder / "search_trials.csv"),
                pd.read_csv(folder / "final_runs.csv"),
                axes,
            )
        elif section == "range_test_overhead":
            draw_range_test_overhead(pd.read_csv(folder / "range_test_overhead.csv"), axes)
        else:
            draw_time_to_accuracy(
                pd.read_csv(folder / "time_to_accuracy_curves.csv"),
                pd.read_csv(folder / "time_to_accuracy.csv"),
                results["time_to_accuracy"]["setup"]["target_accuracy"],
                axes,
            )
        fig.tight_layout()
        path = folder / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
