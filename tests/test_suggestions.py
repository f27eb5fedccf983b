"""Tests for lrtools.suggestions: the smoother and the suggestion methods of the range test."""

from __future__ import annotations

import inspect
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lrtools import finder, suggestions
from lrtools.finder import RangeTestResult
from lrtools.suggestions import DEFAULT_METHOD, METHODS, MIN_RELATIVE_DROP


def curve(lrs, centre=1e-2):
    """A loss that falls fastest at ``centre`` (in log rate) and explodes at 100x ``centre``."""
    return 1.0 - np.tanh(np.log(lrs / centre)) + (lrs / (100 * centre)) ** 4


def flat_with_rounding_noise(length=100, seed=0):
    """A dead network's loss: constant, up to float32 rounding of a log-softmax (ln 10)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-3, 4, size=length) * np.spacing(np.float32(2.3025851))
    return (np.float32(2.3025851) + noise).astype("float32").astype(float)


# --------------------------------------------------------------------------- the registry


def test_every_method_has_the_one_signature():
    assert list(METHODS) == ["steepest", "valley", "minimum", "consensus"]
    for name, method in METHODS.items():
        parameters = inspect.signature(method).parameters
        assert list(parameters) == ["lrs", "smoothed_losses", "skip"], name
        assert parameters["skip"].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters["skip"].default == 0


def test_methods_work_on_their_own_and_through_the_result():
    lrs = np.geomspace(1e-5, 10.0, 301)
    result = RangeTestResult(lrs, [curve(lrs)], smoothing=0.0)
    skip = len(lrs) // 10
    for name, method in METHODS.items():
        assert result.suggest(name) == method(lrs, curve(lrs), skip=skip)
    rates = [
        METHODS[name](lrs, curve(lrs), skip=skip) for name in ("steepest", "valley", "minimum")
    ]
    assert math.isclose(result.suggest("consensus"), np.exp(np.mean(np.log(rates))))


def test_finder_names_keep_working():
    assert finder.METHODS is METHODS
    assert finder.DISAGREEMENT_FACTOR == suggestions.DISAGREEMENT_FACTOR == 10.0
    assert finder.Suggestions is suggestions.Suggestions
    for method in ("steepest", "valley", "minimum"):
        assert method in finder.METHODS


def test_the_default_method_is_the_measured_winner_and_one_constant():
    # The default is the rule the benchmark's suggestion study found best (appendix "Measured").
    stored = json.loads((Path(__file__).parents[1] / "benchmarks/results/results.json").read_text())
    assert DEFAULT_METHOD == stored["suggestions"]["headline"]["winner"] == "valley"
    for function in (RangeTestResult.suggest, RangeTestResult.repeat_suggestions):
        assert inspect.signature(function).parameters["method"].default == DEFAULT_METHOD
    lrs = np.geomspace(1e-5, 10.0, 301)
    result = RangeTestResult(lrs, [curve(lrs)], smoothing=0.0)
    assert result.suggest() == result.suggest(DEFAULT_METHOD)


def test_smoothing_matches_the_step_by_step_smoother():
    losses = np.array([4.0, 2.0, 1.0, 3.0])
    smoother = suggestions.LossSmoother(0.5)
    np.testing.assert_array_equal(
        suggestions.smooth(losses, 0.5), [smoother.update(loss) for loss in losses]
    )


# --------------------------------------------------------------------------- no false answers


def test_a_flat_curve_gets_no_suggestion():
    lrs = np.geomspace(1e-7, 10.0, 100)
    losses = flat_with_rounding_noise()
    result = RangeTestResult(lrs, [losses], smoothing=0.98)
    assert np.argmin(result.smoothed_losses) > 0  # rounding noise makes a tiny "fall"
    for method in METHODS:
        with pytest.raises(ValueError, match="flat"):
            result.suggest(method)
    with pytest.raises(ValueError, match="flat"):
        result.suggest_range()
    with pytest.raises(ValueError, match="flat"):
        result.suggestions()
    assert "no suggestion: The curve is flat" in repr(result)


def test_a_dead_network_with_a_constant_loss_is_called_flat():
    lrs = np.geomspace(1e-7, 10.0, 100)
    result = RangeTestResult(lrs, [np.full(100, 2.3)])
    with pytest.raises(ValueError, match="flat"):
        result.suggest()
    with pytest.raises(ValueError, match="flat"):
        result.suggest_range()


def test_the_flat_threshold_is_relative_and_documented():
    lrs = np.geomspace(1e-5, 10.0, 200)
    for scale in (1e-6, 1.0, 1e6):  # a relative drop: the scale of the loss does not matter
        slight = scale * (1.0 - 0.5 * MIN_RELATIVE_DROP * (1 + np.tanh(np.log(lrs / 1e-2))))
        with pytest.raises(ValueError, match="flat"):
            RangeTestResult(lrs, [slight], smoothing=0.0).suggest()
        clear = scale * (1.0 - 2.0 * MIN_RELATIVE_DROP * (1 + np.tanh(np.log(lrs / 1e-2))))
        assert lrs[0] < RangeTestResult(lrs, [clear], smoothing=0.0).suggest() < lrs[-1]


def test_no_method_suggests_a_rate_outside_the_swept_range():
    # The loss falls at once and bottoms out within the first decade of the sweep:
    # "minimum" (lowest / 10) would lie below start_lr.
    lrs = np.geomspace(1e-3, 1.0, 30)
    losses = np.concatenate([np.linspace(1.0, 0.2, 6), np.linspace(0.25, 3.0, 24)])
    result = RangeTestResult(lrs, [losses], smoothing=0.0)
    assert lrs[np.argmin(losses)] / 10 < lrs[0]
    for method in METHODS:
        assert lrs[0] <= result.suggest(method) <= lrs[-1], method
    base_lr, max_lr = result.suggest_range()
    assert lrs[0] <= base_lr < max_lr <= lrs[-1]


@pytest.mark.parametrize("seed", range(5))
def test_suggestions_stay_in_range_on_noisy_curves(seed):
    rng = np.random.default_rng(seed)
    lrs = np.geomspace(1e-6, 10.0, 80)
    losses = curve(lrs, centre=10 ** rng.uniform(-5, -1)) * rng.lognormal(0, 0.2, size=80)
    result = RangeTestResult(lrs, [losses], smoothing=0.9)
    for method in METHODS:
        try:
            rate = result.suggest(method)
        except ValueError:
            continue
        assert lrs[0] <= rate <= lrs[-1], method


def test_suggest_range_refuses_clearly_never_with_an_index_error():
    lrs = np.geomspace(1e-5, 10.0, 50)
    for losses in (np.linspace(1.0, 5.0, 50), np.full(50, 1.0), flat_with_rounding_noise(50)):
        with pytest.raises(ValueError, match="flat|never fell"):
            RangeTestResult(lrs, [losses]).suggest_range()


# --------------------------------------------------------------------------- optional extras


def test_to_frame_without_pandas_names_the_extra(monkeypatch):
    lrs = np.geomspace(1e-5, 10.0, 50)
    result = RangeTestResult(lrs, [curve(lrs)])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"to_frame\(\).*\[plot\].*pip install"):
        result.to_frame()


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    lrs = np.geomspace(1e-5, 10.0, 50)
    result = RangeTestResult(lrs, [curve(lrs)])
    for module in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "lrtools.plotting", raising=False)
    with pytest.raises(ImportError, match=r"plot\(\).*\[plot\].*pip install"):
        result.plot()
