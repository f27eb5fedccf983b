"""Figures with one look for the whole book: schedules, learning curves, sweeps, scores.

Every function draws on a Matplotlib ``Axes`` (a new figure when ``ax`` is
``None``), labels its axes in words, and returns the ``Axes``; none calls
``plt.show()``, so they work in notebooks, scripts and headless builds alike.
Call :func:`set_theme` once at the top of a notebook.

The module needs the ``[plot]`` extra (matplotlib, seaborn, pandas); without it,
importing it raises an ``ImportError`` that names the extra and the pip command.

The learning-curve, sweep and score plots read the tidy tables of
:class:`lrtools.experiments.ExperimentResult`: with several seeds they show the
mean and the spread over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from lrtools._extras import require
from lrtools.suggestions import DEFAULT_METHOD, check_method

if TYPE_CHECKING:  # pragma: no cover - imported for type hints only
    import pandas as pd
    from matplotlib.axes import Axes

    from lrtools.finder import RangeTestResult

plt = require("matplotlib.pyplot", feature="lrtools.plotting")
sns = require("seaborn", feature="lrtools.plotting")
require("pandas", feature="lrtools.plotting")
MaxNLocator = require("matplotlib.ticker", feature="lrtools.plotting").MaxNLocator

# Words for the column names the experiment tables use.
_AXIS_LABELS: dict[str, str] = {
    "loss": "training loss",
    "accuracy": "training accuracy",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "learning_rate": "learning rate",
    "lr": "learning rate",
    "epoch": "epoch",
    "wall_time": "wall time (s)",
}


def axis_label(column: str) -> str:
    """Return the words the book's figures use for a table column.

    Args:
        column: a column name such as ``"val_accuracy"``.

    Returns:
        A readable label, e.g. ``"validation accuracy"``; unknown names get
        their underscores replaced by spaces.

    Example:

    >>> axis_label("val_loss")
    'validation loss'
    """
    return _AXIS_LABELS.get(column, column.replace("_", " "))


def set_theme() -> None:
    """Apply the book's seaborn theme: white grid, colour-blind palette, 7x4 in figures.

    Example:

    >>> set_theme()
    """
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette="colorblind",
        rc={"figure.figsize": (7.0, 4.0), "axes.titlesize": "medium", "legend.frameon": True},
    )


def _new_axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots()
    return ax


def _rates(schedule: Any, steps: np.ndarray) -> np.ndarray:
    """Evaluate a schedule or a plain function of the step at every step."""
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        try:
            values = np.asarray(keras.ops.convert_to_numpy(schedule(steps)), dtype="float64")
            if values.shape == steps.shape:
                return values
        except Exception:  # noqa: BLE001 - not vectorised: evaluate step by step below
            pass
    if not callable(schedule):
        raise TypeError(
            "Each schedule must be a keras LearningRateSchedule or a function of the step, "
            f"got {type(schedule).__name__}."
        )
    return np.array(
        [float(keras.ops.convert_to_numpy(schedule(int(step)))) for step in steps],
        dtype="float64",
    )


def plot_schedules(
    schedules: Mapping[str, Any],
    steps: int | np.ndarray,
    *,
    ax: Axes | None = None,
    log: bool = False,
    xlabel: str = "training step",
) -> Axes:
    """Plot several learning-rate schedules against the step, one line each.

    Args:
        schedules: name -> schedule; a schedule is any
            ``keras.optimizers.schedules.LearningRateSchedule`` or a function
            of the step (or the epoch) returning a rate.
        steps: the number of steps to plot (``0 .. steps-1``) or the steps
            themselves.
        ax: the Axes to draw on; a new figure when ``None``.
        log: use a logarithmic learning-rate axis.
        xlabel: label of the x-axis, e.g. ``"epoch"`` for epoch functions.

    Returns:
        The Axes, with labelled axes and a legend.

    Raises:
        ValueError: if ``schedules`` is empty or there are no steps.
        TypeError: if a schedule is neither a schedule nor callable.

    Example:

    >>> from lrtools.schedules import CosineDecay, StepDecay
    >>> ax = plot_schedules(
    ...     {"cosine": CosineDecay(0.1, 100), "step": StepDecay(0.1, 0.5, 25)}, 100
    ... )
    >>> ax.get_ylabel()
    'learning rate'
    """
    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule.")
    step_values = np.arange(steps) if np.isscalar(steps) else np.asarray(steps)
    if step_values.size == 0:
        raise ValueError(f"plot_schedules needs at least one step, got {steps!r}.")
    ax = _new_axes(ax)
    for name, schedule in schedules.items():
        ax.plot(step_values, _rates(schedule, step_values), label=str(name))
    ax.set(xlabel=xlabel, ylabel="learning rate")
    if log:
        ax.set_yscale("log")
    ax.legend()
    return ax


def _check_columns(frame: pd.DataFrame, columns: list[str | None]) -> None:
    missing = [column for column in columns if column is not None and column not in frame]
    if missing:
        raise KeyError(
            f"Column(s) {', '.join(map(repr, missing))} not in the table; it has "
            f"{', '.join(map(str, frame.columns))}."
        )


def _last_epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the last epoch of every run of a per-epoch table; other tables pass through."""
    if "epoch" not in frame:
        return frame
    last = frame.groupby(["config", "seed"], sort=False)["epoch"].transform("max")
    return frame[frame["epoch"] == last]


def plot_learning_curves(
    frame: pd.DataFrame,
    metric: str = "val_accuracy",
    *,
    hue: str | None = "config",
    ax: Axes | None = None,
    log_y: bool = False,
    band: Any = "sd",
    palette: Any = None,
) -> Axes:
    """Plot a metric against the epoch, one line per setup, mean over seeds.

    Args:
        frame: the per-epoch table, ``ExperimentResult.frame``.
        metric: the column to plot, e.g. ``"val_accuracy"`` or ``"loss"``.
        hue: the column that tells the lines apart (``None`` for one line).
        ax: the Axes to draw on; a new figure when ``None``.
        log_y: use a logarithmic y-axis (useful for losses).
        band: seaborn's ``errorbar`` for the band over seeds: ``"sd"`` (mean
            plus or minus one standard deviation), ``("pi", 100)`` (min to
            max), or ``None`` for no band.
        palette: seaborn palette for the lines, e.g. ``"rocket"`` to shade
            setups that are ordered (such as rates); the theme's by default.

    Returns:
        The Axes.

    Raises:
        KeyError: if ``metric``, ``hue`` or ``epoch`` is not a column.

    Example:

    >>> ax = plot_learning_curves(result.frame, "val_loss", log_y=True)  # doctest: +SKIP
    """
    _check_columns(frame, ["epoch", metric, hue])
    ax = _new_axes(ax)
    sns.lineplot(data=frame, x="epoch", y=metric, hue=hue, errorbar=band, palette=palette, ax=ax)
    ax.set(xlabel="epoch", ylabel=axis_label(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    if log_y:
        ax.set_yscale("log")
    return ax


def plot_sweep(
    frame: pd.DataFrame,
    x: str = "learning_rate",
    y: str = "val_accuracy",
    *,
    hue: str | None = "optimizer",
    ax: Axes | None = None,
    log_x: bool = True,
    band: Any = "sd",
    palette: Any = None,
) -> Axes:
    """Plot a final metric against a setting (usually the learning rate).

    Each point is the mean over seeds, with a band for their spread and a
    marker per setting.

    Args:
        frame: one row per run, ``ExperimentResult.runs``; given the
            per-epoch table instead, the last epoch of every run is used.
        x: the setting on the x-axis, e.g. ``"learning_rate"`` (a label column
            that :func:`lrtools.experiments.rate_sweep` adds).
        y: the final metric, e.g. ``"val_accuracy"`` or ``"test_accuracy"``.
        hue: the column that tells the lines apart, e.g. ``"optimizer"``
            (``None`` for one line).
        ax: the Axes to draw on; a new figure when ``None``.
        log_x: use a logarithmic x-axis (the default, as rates span decades).
        band: seaborn's ``errorbar`` for the band over seeds (see
            :func:`plot_learning_curves`).
        palette: seaborn palette for the lines; the theme's by default.

    Returns:
        The Axes.

    Raises:
        KeyError: if ``x``, ``y`` or ``hue`` is not a column.

    Example:

    >>> ax = plot_sweep(result.runs, y="test_accuracy")  # doctest: +SKIP
    """
    _check_columns(frame, [x, y, hue])
    frame = _last_epochs(frame)
    ax = _new_axes(ax)
    sns.lineplot(data=frame, x=x, y=y, hue=hue, marker="o", errorbar=band, palette=palette, ax=ax)
    ax.set(xlabel=axis_label(x), ylabel=axis_label(y))
    if log_x:
        ax.set_xscale("log")
    return ax


def plot_scores(
    frame: pd.DataFrame,
    y: str = "test_accuracy",
    *,
    x: str = "config",
    ax: Axes | None = None,
    order: list[str] | None = None,
) -> Axes:
    """Compare a final metric across setups: one dot per seed, the mean with a bar of ±1 sd.

    Args:
        frame: one row per run, ``ExperimentResult.runs``; given the
            per-epoch table instead, the last epoch of every run is used.
        y: the final metric, e.g. ``"test_accuracy"``.
        x: the column naming the setups (categories on the x-axis).
        ax: the Axes to draw on; a new figure when ``None``.
        order: the setups to show, in this order; by default all, in the
            order they appear in ``frame``.

    Returns:
        The Axes.

    Raises:
        KeyError: if ``x`` or ``y`` is not a column.

    Example:

    >>> ax = plot_scores(result.runs, "test_accuracy")  # doctest: +SKIP
    """
    _check_columns(frame, [x, y])
    frame = _last_epochs(frame)
    order = list(dict.fromkeys(frame[x])) if order is None else list(order)
    ax = _new_axes(ax)
    sns.stripplot(data=frame, x=x, y=y, order=order, color="0.6", size=4, jitter=0.1, ax=ax)
    sns.pointplot(
        data=frame,
        x=x,
        y=y,
        order=order,
        errorbar="sd",
        linestyle="none",
        marker="D",
        capsize=0.2,
        color="C0",
        ax=ax,
    )
    ax.set(xlabel="", ylabel=axis_label(y))
    ax.tick_params(axis="x", labelrotation=30)
    return ax


# --------------------------------------------------------------------------- range test

# Marker of each suggestion method on the range-test curve (others get "o").
_METHOD_MARKERS = {"steepest": "v", "valley": "s", "minimum": "^", "consensus": "D"}


def _draw_range_curves(ax: Axes, result: RangeTestResult, loss_name: str) -> None:
    """The raw and smoothed losses, the band over repeats, and a y range without the blow-up."""
    if result.repeats > 1:
        curves = np.array([run[: len(result.lrs)] for run in result.repeat_smoothed_losses])
        ax.fill_between(
            result.lrs,
            curves.min(axis=0),
            curves.max(axis=0),
            alpha=0.2,
            label=f"smoothed, range over {result.repeats} repeats",
        )
    ax.plot(result.lrs, result.losses, linewidth=1.0, alpha=0.5, label=loss_name)
    ax.plot(result.lrs, result.smoothed_losses, linewidth=2.0, label=f"smoothed {loss_name}")
    finite = result.smoothed_losses[np.isfinite(result.smoothed_losses)]
    if finite.size:
        low = min(finite.min(), result.losses[np.isfinite(result.losses)].min())
        high = finite.max()
        margin = 0.1 * (high - low) or 0.1 * abs(high) or 0.1
        ax.set_ylim(low - margin, high + margin)


def _mark_suggestions(ax: Axes, result: RangeTestResult, highlight: str) -> None:
    """Mark every method's rate on the smoothed curve; ``highlight``'s with a dashed line too."""
    try:
        rates = result.suggestions().rates
    except ValueError:  # no falling part: nothing to mark (suggest() says why)
        ax.text(0.02, 0.02, "no suggestion: see result.suggest()", transform=ax.transAxes)
        return
    log_lrs = np.log(result.lrs)
    for method, rate in rates.items():
        loss = float(np.interp(np.log(rate), log_lrs, result.smoothed_losses))
        label = f"{method}: {rate:.2g}"
        marker = _METHOD_MARKERS.get(method, "o")
        if method == highlight:
            ax.axvline(rate, linestyle="--", color="black", label=label)
            ax.plot(rate, loss, marker=marker, markersize=11, color="black", label="_highlight")
            continue
        ax.plot(rate, loss, marker=marker, markersize=7, linestyle="none", label=label)


def plot_range_test(
    result: RangeTestResult, *, ax: Axes | None = None, suggest: bool | str = True
) -> Axes:
    """Plot a range test's loss against the rate (log axis), raw and smoothed, rates marked.

    Draws in the book's theme (:func:`set_theme`): the raw losses as a thin line,
    the smoothed losses as a thick one, the range of the smoothed curves over the
    repeats as a band (with several repeats), and, as fastai does, every
    suggestion method's rate as a marker on the smoothed curve, the highlighted
    method's also as a dashed vertical line. The y axis is cut a little above the
    highest smoothed loss, so that the final explosion does not flatten the
    interesting part. A new figure uses constrained layout, so a saved figure
    keeps its labels and legend.

    Args:
        result: a :class:`lrtools.finder.RangeTestResult`.
        ax: the Axes to draw on; a new figure when ``None``.
        suggest: ``True`` marks every method and highlights
            :data:`lrtools.suggestions.DEFAULT_METHOD`; a method name highlights
            that one; ``False`` marks none. Nothing is marked when the curve has
            no falling part (a note on the plot says so).

    Returns:
        The Axes.

    Raises:
        ValueError: for an unknown method name.

    Example:

    >>> from lrtools import RangeTestResult
    >>> lrs = np.geomspace(1e-4, 1.0, 50)
    >>> ax = plot_range_test(RangeTestResult(lrs, [1.0 / (1.0 + 1e3 * lrs)]), suggest="valley")
    >>> ax.get_xscale()
    'log'
    """
    method = DEFAULT_METHOD if suggest is True else suggest
    if method:
        check_method(method)
    set_theme()
    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    loss_name = "validation loss" if result.validation else axis_label("loss")
    _draw_range_curves(ax, result, loss_name)
    if method:
        _mark_suggestions(ax, result, method)
    ax.set_xscale("log")
    ax.set_xlabel(axis_label("learning_rate") + " (log scale)")
    ax.set_ylabel(loss_name)
    ax.set_title("Learning-rate range test")
    ax.legend()
    return ax
