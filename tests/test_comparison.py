"""Paired differences over seeds, and when they name a winner."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrtools.comparison import PairedDifference, paired_difference
from lrtools.experiments import ExperimentResult


def test_mean_and_standard_error_are_those_of_the_per_seed_differences():
    difference = paired_difference([0.9, 0.8, 0.7, 0.95], [0.85, 0.8, 0.6, 0.9])
    values = np.array([0.05, 0.0, 0.1, 0.05])
    assert difference.differences == pytest.approx(tuple(values))
    assert difference.mean == pytest.approx(values.mean())
    assert difference.standard_error == pytest.approx(values.std(ddof=1) / math.sqrt(4))
    assert difference.n == 4


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ([1.0, 2.0, 3.0], [0.5, 1.4, 2.6], "higher"),  # +0.5 +- 0.06
        ([0.5, 1.4, 2.6], [1.0, 2.0, 3.0], "lower"),
        ([1.0, 2.0, 3.0], [1.1, 1.8, 3.1], "no measurable difference"),  # 0 +- 0.1
        ([1.0, 2.0], [1.0, 2.0], "no measurable difference"),  # identical: no winner
    ],
)
def test_a_winner_is_named_only_two_standard_errors_from_zero(a, b, verdict):
    assert paired_difference(a, b).verdict() == verdict


def test_a_larger_z_asks_for_more_before_naming_a_winner():
    difference = PairedDifference((0.03, 0.01, 0.02))  # 0.02 +- 0.0058: 3.5 standard errors
    assert difference.verdict(z=2) == "higher"
    assert difference.verdict(z=4) == "no measurable difference"
    with pytest.raises(ValueError, match="positive"):
        difference.verdict(z=0)
    with pytest.raises(TypeError):
        difference.verdict(z="2")


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0, 2.0], [1.0], "pair them"),
        ([1.0], [2.0], "at least two"),
        ([], [], "at least two"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
        ([1.0, 2.0], [float("inf"), 2.0], "finite"),
    ],
)
def test_what_cannot_be_paired_is_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)


def test_str_gives_the_mean_its_uncertainty_and_the_seeds():
    assert str(paired_difference([0.3, 0.5], [0.1, 0.2])) == "+0.2500 ± 0.0500 over 2 seeds"


def _result(rows):
    runs = pd.DataFrame(rows, columns=["config", "seed", "test_loss"])
    return ExperimentResult(frame=runs.assign(epoch=1), runs=runs, histories={})


def test_experiment_result_pairs_the_setups_by_seed_whatever_the_row_order():
    result = _result(
        [("A", 1, 0.30), ("B", 0, 0.50), ("A", 0, 0.40), ("B", 1, 0.45), ("A", 2, 0.2)]
    )
    difference = result.paired("test_loss", "A", "B")  # seed 2 has no B: left out
    assert difference.differences == pytest.approx((-0.10, -0.15))
    with pytest.raises(KeyError, match="no setup named 'C'"):
        result.paired("test_loss", "A", "C")
    with pytest.raises(KeyError):
        result.paired("val_loss", "A", "B")
