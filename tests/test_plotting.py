"""Tests for lrtools.plotting: the book's figures."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402

from lrtools import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _line(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def _data_lines(ax):
    """The lines seaborn drew with data, in hue order (legend entries are empty lines)."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 0]


def halve_every_two_epochs(epoch):
    # A plain epoch function in the style of the articles (not vectorised).
    return 0.1 * math.pow(0.5, epoch // 2)


class PythonStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule that only accepts scalar steps."""

    def __call__(self, step):
        return 1.0 / (1.0 + int(step))


def test_set_theme_sets_the_book_look():
    plotting.set_theme()
    assert tuple(plt.rcParams["figure.figsize"]) == (7.0, 4.0)
    assert plt.rcParams["axes.grid"]


def test_axis_label_uses_words():
    assert plotting.axis_label("val_accuracy") == "validation accuracy"
    assert plotting.axis_label("learning_rate") == "learning rate"
    assert plotting.axis_label("steps_to_target") == "steps to target"


def test_plot_schedules_draws_each_schedule_at_every_step():
    exponential = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=5, decay_rate=0.5)
    schedules = {
        "exponential": exponential,
        "epoch function": halve_every_two_epochs,
        "scalar only": PythonStepSchedule(),
    }
    ax = plotting.plot_schedules(schedules, 12)
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "learning rate"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == list(schedules)
    steps = np.arange(12)
    np.testing.assert_allclose(_line(ax, "exponential").get_xdata(), steps)
    np.testing.assert_allclose(
        _line(ax, "exponential").get_ydata(), 0.1 * 0.5 ** (steps / 5), rtol=1e-5
    )
    np.testing.assert_allclose(
        _line(ax, "epoch function").get_ydata(), [halve_every_two_epochs(s) for s in steps]
    )
    np.testing.assert_allclose(_line(ax, "scalar only").get_ydata(), 1.0 / (1.0 + steps))


def test_plot_schedules_takes_given_steps_an_axes_and_a_log_scale():
    _, ax = plt.subplots()
    steps = np.array([0, 10, 20])
    returned = plotting.plot_schedules(
        {"halving": halve_every_two_epochs}, steps, ax=ax, log=True, xlabel="epoch"
    )
    assert returned is ax
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    np.testing.assert_allclose(_line(ax, "halving").get_xdata(), steps)


@pytest.mark.parametrize(
    ("schedules", "steps", "error"),
    [
        ({}, 10, ValueError),
        ({"a": halve_every_two_epochs}, 0, ValueError),
        ({"a": 0.1}, 5, TypeError),
    ],
)
def test_plot_schedules_rejects_bad_input(schedules, steps, error):
    with pytest.raises(error):
        plotting.plot_schedules(schedules, steps)


@pytest.fixture
def epoch_frame() -> pd.DataFrame:
    """Two setups x two seeds x three epochs, shaped like ExperimentResult.frame."""
    rng = np.random.default_rng(0)
    rows = []
    for config, rate in (("SGD 0.1", 0.1), ("SGD 0.01", 0.01)):
        for seed in (0, 1):
            for epoch in (1, 2, 3):
                rows.append(
                    {
                        "config": config,
                        "seed": seed,
                        "epoch": epoch,
                        "val_accuracy": rng.uniform(0.1, 1.0),
                        "val_loss": rng.uniform(0.1, 2.0),
                        "optimizer": "SGD",
                        "learning_rate": rate,
                    }
                )
    return pd.DataFrame(rows)


def test_learning_curves_show_the_mean_over_seeds(epoch_frame):
    ax = plotting.plot_learning_curves(epoch_frame, "val_loss", log_y=True)
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation loss"
    assert ax.get_yscale() == "log"
    configs = list(dict.fromkeys(epoch_frame["config"]))
    assert [text.get_text() for text in ax.get_legend().get_texts()] == configs
    for config, line in zip(configs, _data_lines(ax), strict=True):
        means = epoch_frame[epoch_frame["config"] == config].groupby("epoch")["val_loss"].mean()
        np.testing.assert_allclose(line.get_xdata(), means.index)
        np.testing.assert_allclose(line.get_ydata(), means.to_numpy())
    # One band (filled area) per setup for the spread over seeds.
    assert len(ax.collections) == 2
    # Epochs are whole numbers on the axis.
    ax.figure.canvas.draw()
    ticks = [tick for tick in ax.get_xticks() if ax.get_xlim()[0] <= tick <= ax.get_xlim()[1]]
    assert ticks and all(float(tick).is_integer() for tick in ticks), ticks


def test_learning_curves_take_a_palette(epoch_frame):
    ax = plotting.plot_learning_curves(epoch_frame, band=None, palette="rocket")
    colours = [matplotlib.colors.to_rgb(line.get_color()) for line in _data_lines(ax)]
    expected = [matplotlib.colors.to_rgb(c) for c in sns.color_palette("rocket", 2)]
    np.testing.assert_allclose(colours, expected)
    assert len(ax.collections) == 0  # band=None: no spread drawn


def test_learning_curves_reject_missing_columns(epoch_frame):
    with pytest.raises(KeyError, match="accuracy"):
        plotting.plot_learning_curves(epoch_frame, "accuracy")


def test_sweep_uses_the_last_epoch_and_a_log_rate_axis(epoch_frame):
    ax = plotting.plot_sweep(epoch_frame, y="val_accuracy")
    assert ax.get_xscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("learning rate", "validation accuracy")
    last = epoch_frame[epoch_frame["epoch"] == 3]
    means = last.groupby("learning_rate")["val_accuracy"].mean()
    (line,) = _data_lines(ax)
    np.testing.assert_allclose(line.get_xdata(), means.index)
    np.testing.assert_allclose(line.get_ydata(), means.to_numpy())


def test_sweep_accepts_one_row_per_run_and_no_hue(epoch_frame):
    runs = epoch_frame[epoch_frame["epoch"] == 2].drop(columns="epoch")
    ax = plotting.plot_sweep(runs, y="val_loss", hue=None, log_x=False)
    assert ax.get_xscale() == "linear"
    (line,) = _data_lines(ax)
    np.testing.assert_allclose(
        line.get_ydata(), runs.groupby("learning_rate")["val_loss"].mean().to_numpy()
    )
    with pytest.raises(KeyError, match="momentum"):
        plotting.plot_sweep(runs, x="momentum")


def test_scores_show_each_seed_and_the_mean_per_setup(epoch_frame):
    ax = plotting.plot_scores(epoch_frame, "val_accuracy", order=["SGD 0.01", "SGD 0.1"])
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["SGD 0.01", "SGD 0.1"]
    assert ax.get_ylabel() == "validation accuracy"
    last = epoch_frame[epoch_frame["epoch"] == 3]
    # One dot per run, grouped by setup in the requested order.
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
    expected_dots = np.concatenate(
        [last.loc[last["config"] == c, "val_accuracy"] for c in ["SGD 0.01", "SGD 0.1"]]
    )
    np.testing.assert_allclose(np.sort(dots), np.sort(expected_dots))
    means = [last.loc[last["config"] == c, "val_accuracy"].mean() for c in ["SGD 0.01", "SGD 0.1"]]
    mean_markers = [line for line in ax.get_lines() if len(line.get_ydata()) == 2]
    assert any(np.allclose(line.get_ydata(), means) for line in mean_markers)


def test_scores_reject_missing_columns(epoch_frame):
    with pytest.raises(KeyError, match="test_accuracy"):
        plotting.plot_scores(epoch_frame)


# --------------------------------------------------------------------------- range test


def _range_result():
    from lrtools.finder import RangeTestResult

    lrs = np.geomspace(1e-5, 10.0, 200)
    losses = 1.0 - np.tanh(np.log(lrs / 1e-2)) + (lrs / 1.0) ** 4
    return RangeTestResult(lrs, [losses], smoothing=0.0)


def test_plot_range_test_marks_every_method_and_highlights_the_default():
    from lrtools.suggestions import DEFAULT_METHOD, METHODS

    result = _range_result()
    ax = plotting.plot_range_test(result)
    rates = result.suggestions().rates
    labelled = {line.get_label().split(":")[0]: line for line in ax.get_lines()}
    assert set(METHODS) <= set(labelled)
    highlighted = labelled[DEFAULT_METHOD]
    np.testing.assert_allclose(highlighted.get_xdata(), [rates[DEFAULT_METHOD]] * 2)
    assert highlighted.get_linestyle() == "--"  # a vertical line across the plot
    for method in set(METHODS) - {DEFAULT_METHOD}:
        (rate,), (loss,) = labelled[method].get_xdata(), labelled[method].get_ydata()
        assert math.isclose(rate, rates[method])
        index = np.argmin(np.abs(np.log(result.lrs / rate)))
        assert abs(loss - result.smoothed_losses[index]) < 0.1  # on the smoothed curve
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert all(any(entry.startswith(method) for entry in legend) for method in METHODS)


def test_plot_range_test_highlights_the_named_method_or_none():
    result = _range_result()
    ax = plotting.plot_range_test(result, suggest="valley")
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_label().startswith("valley")
    plain = plotting.plot_range_test(result, suggest=False)
    assert len(plain.get_lines()) == 2  # the raw and the smoothed loss only
    with pytest.raises(ValueError, match="Unknown method"):
        plotting.plot_range_test(result, suggest="median")


def test_plot_range_test_uses_constrained_layout_so_a_saved_figure_is_not_clipped(tmp_path):
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    ax = _range_result().plot()
    figure = ax.figure
    assert isinstance(figure.get_layout_engine(), ConstrainedLayoutEngine)
    figure.savefig(tmp_path / "range_test.png")
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    for artist in (ax.xaxis.label, ax.yaxis.label, ax.title, ax.get_legend()):
        extent = artist.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0
        assert extent.y1 <= box.y1


def test_plot_range_test_of_a_flat_curve_marks_nothing_and_says_why():
    from lrtools.finder import RangeTestResult

    lrs = np.geomspace(1e-5, 10.0, 100)
    ax = plotting.plot_range_test(RangeTestResult(lrs, [np.full(100, 2.3)]))
    assert len(ax.get_lines()) == 2
    assert any("no suggestion" in text.get_text() for text in ax.texts)
