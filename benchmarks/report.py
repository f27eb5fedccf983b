"""Render stored benchmark results: the README table and the figures.

Reads what ``python -m benchmarks.run`` wrote (``results.json`` and the CSV
tables) and never measures anything, so the README, the book's "Measured"
appendix and the PNG files all show the same stored numbers.

Example::

    from benchmarks import report
    results = report.load_results("benchmarks/results")
    print(report.readme_table(results))
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.common import RESULTS_FILE
from benchmarks.registry import MEASUREMENTS
from lrtools import plotting

HEADLINE_RUN = "overhead"
"""The measurement whose run the README table's first line describes."""


def load_results(folder: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Read ``results.json`` from a results folder.

    Args:
        folder: the folder ``python -m benchmarks.run`` wrote to.
        names: the measurements it must hold (default: every registered one).

    Returns:
        Measurement name -> its entry.

    Raises:
        FileNotFoundError: if the folder holds no ``results.json``.
        ValueError: if the file lacks one of the measurements.
    """
    path = Path(folder) / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No {path}: run `python -m benchmarks.run --out {folder}` to measure first."
        )
    results = json.loads(path.read_text(encoding="utf-8"))
    required = MEASUREMENTS if names is None else list(names)
    missing = [name for name in required if name not in results]
    if missing:
        raise ValueError(f"{path} lacks the measurements {missing}.")
    return results


def load_tables(folder: str | os.PathLike, name: str) -> dict[str, pd.DataFrame]:
    """Read the CSV tables of one measurement: file name -> DataFrame."""
    return {table: pd.read_csv(Path(folder) / table) for table in MEASUREMENTS[name].TABLES}


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


def _step_row(label: str, goal: dict[str, Any]) -> tuple[str, ...]:
    points = f"{100 * abs(goal['margin']):.1f} points"
    return (
        label,
        _percent(goal["value"]),
        f"≤ {_percent(goal['threshold'])}",
        _verdict(goal, points),
    )


def _ratio_rows(overhead: dict[str, Any]) -> list[tuple[str, ...]]:
    keras_target, constant_target, callback_target = overhead["targets"]
    headline = overhead["headline"]
    match = f"{headline['worst_schedule_vs_keras']} vs {headline['worst_schedule_vs_keras_floor']}"
    schedules = sum(1 for pair in overhead["floors"] if pair["floor_kind"] == "constant rate")
    return [
        _step_row(
            f"Step time, worst schedule in the optimizer vs Keras's nearest built-in ({match})",
            keras_target,
        ),
        _step_row(
            f"Step time, median of the {schedules} schedules in the optimizer vs a constant rate",
            constant_target,
        ),
        _step_row(
            "Step time, worst of `LRScheduler` (batch unit) and `OneCycle` vs a do-nothing "
            f"batch callback ({headline['worst_batch_callback_vs_empty']})",
            callback_target,
        ),
    ]


def _range_test_rows(cost: dict[str, Any]) -> list[tuple[str, ...]]:
    steps, headline = cost["setup"]["steps"], cost["headline"]
    rows = [
        (
            f"{steps}-step range test vs as many `fit` steps: wall time, {label}",
            f"× {goal['value']:.2f}",
            f"≤ × {goal['threshold']:g}",
            _verdict(goal, f"{abs(goal['margin']):.2f}"),
        )
        for goal, label in zip(cost["targets"], ("fresh model", "warm model"))
    ]
    rows.append(
        (
            f"{steps}-step range test on a model `fit` trained vs as many warm `fit` steps",
            f"× {headline['after_fit_ratio']:.2f}",
            "none set",
            "",
        )
    )
    return rows


def _search_rows(entry: dict[str, Any]) -> list[tuple[str, ...]]:
    search = entry["headline"]
    gap_target, steps_target = entry["targets"]
    return [
        (
            f"Range test ({search['range_test_rule']}) vs {search['best_search']}: "
            "final validation accuracy",
            f"{search['range_test_val_accuracy']:.3f} vs {search['best_search_val_accuracy']:.3f}",
            f"within {gap_target['threshold']:g} point",
            _verdict(gap_target, f"{abs(gap_target['margin']):.1f} points"),
        ),
        (
            "Range test vs search: training steps",
            f"{search['range_test_steps']:.0f} vs {search['search_steps']:.0f} "
            f"(1/{1 / search['step_fraction']:.0f})",
            f"≤ 1/{1 / steps_target['threshold']:.0f}",
            _verdict(steps_target, f"{abs(steps_target['margin']) * 100:.1f} points"),
        ),
    ]


def _reach_rows(reach: dict[str, Any]) -> list[tuple[str, ...]]:
    runs = len(reach["settings"]["seeds"])
    epochs = ", ".join(
        _epochs_to_target(name, entry, runs) for name, entry in reach["headline"].items()
    )
    return [
        (
            f"Epochs to {reach['settings']['target_accuracy']:.0%} validation accuracy "
            f"(mean of {runs} seeds)",
            epochs,
            "none set",
            "",
        ),
    ]


def _suggestion_rows(entry: dict[str, Any]) -> list[tuple[str, ...]]:
    headline, settings = entry["headline"], entry["settings"]
    return [
        (
            f"Range-test rule closest to a grid's best rate ({len(settings['problems'])} "
            f"problems x {len(settings['seeds'])} seeds)",
            f"`{headline['winner']}`: {headline['winner_mean_gap_pp']:.1f} points below on "
            f"average, {headline['winner_worst_problem_gap_pp']:.1f} on its worst problem",
            "none set",
            "",
        )
    ]


SECTIONS = {
    "overhead": _ratio_rows,
    "range_test_overhead": _range_test_rows,
    "range_vs_search": _search_rows,
    "time_to_accuracy": _reach_rows,
    "suggestions": _suggestion_rows,
}
"""Measurement -> the function that makes its rows of the README table, in table order."""


def run_line(run: dict[str, Any]) -> str:
    """One sentence: when, where and how long a run measured, and the machine's load."""
    machine = run["machine"]
    return (
        f"Measured {run['date'][:10]} on {machine['processor']} "
        f"({machine['cpu_count']} CPUs, {machine['platform']}), "
        f"Keras {run['versions']['keras']} on {run['keras_backend']}, "
        f"digits CNN, batch 32; the run took {run['wall_time_s'] / 60:.1f} min, load average "
        f"{run['load_average']['start'][0]:g} at the start, "
        f"{run['load_average']['end'][0]:g} at the end (shared machine)."
    )


def readme_table(results: dict[str, Any]) -> str:
    """Render the short markdown table of headline figures for README.md.

    Args:
        results: the dict of :func:`load_results`.

    Returns:
        Markdown: a line saying when and where the overhead run measured, then a
        table with one row per headline figure, its target and whether it was
        met; a row from another run (``--only``) says when it was measured.

    Example::

        print(readme_table(load_results("benchmarks/results")))
    """
    headline_run = results[HEADLINE_RUN]["run"]
    rows = []
    for name, make_rows in SECTIONS.items():
        if name not in results:
            continue
        run = results[name]["run"]
        for label, *rest in make_rows(results[name]):
            if run != headline_run:  # measured in another run: say when
                label = f"{label} (measured {run['date'][:10]} in another run)"
            rows.append((label, *rest))
    lines = [
        run_line(headline_run),
        "",
        "| measurement | result | target | met |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    return "\n".join(lines)


def figure(folder: str | os.PathLike, name: str, results: dict[str, Any] | None = None):
    """Draw one measurement's figure from a results folder.

    Args:
        folder: the folder ``python -m benchmarks.run`` wrote to.
        name: the measurement.
        results: the dict of :func:`load_results` (read from ``folder`` if omitted).

    Returns:
        The matplotlib Figure.
    """
    results = results if results is not None else load_results(folder, [name])
    return MEASUREMENTS[name].draw(load_tables(folder, name), results[name])


def save_figures(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Draw measurements' figures into PNG files beside the data.

    Args:
        folder: the folder ``python -m benchmarks.run`` wrote to.
        names: the measurements (default: every one in ``results.json``).

    Returns:
        The paths written.
    """
    folder = Path(folder)
    results = load_results(folder, names or ())
    plotting.set_theme()
    written = []
    for name in names or [name for name in MEASUREMENTS if name in results]:
        fig = figure(folder, name, results)
        path = folder / MEASUREMENTS[name].FIGURE
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
