"""The benchmark (``python -m benchmarks.run``) runs, and its stored results are the ones shown.

The quick mode runs the same code as the full benchmark with fewer seeds, rounds
and epochs, so it cannot rot; the committed results must come from a full run and
be what each measurement's ``summarize`` makes of the committed tables; the README's
table must be the rendering of those results.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import common, overhead, range_test_overhead, range_vs_search, report, suggestions
from benchmarks.registry import MEASUREMENTS, PARTS
from lrtools.data import load_digits

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run ``python -m benchmarks.run --quick`` once; return its output folder and printout."""
    out = tmp_path_factory.mktemp("benchmark")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out, completed.stdout


def finite_numbers(value):
    """Every int or float inside a nested structure of dicts and lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    return [number for item in items for number in finite_numbers(item)]


def check_headlines(results):
    """Finite headline figures (null only for a target never reached), well-formed targets."""
    for name, entry in results["time_to_accuracy"]["headline"].items():
        assert (entry["mean_epochs"] is None) == (entry["reached"] == 0), name
    for name in MEASUREMENTS:
        entry = results[name]
        numbers = finite_numbers(entry["headline"])
        assert numbers, name
        assert all(math.isfinite(number) for number in numbers), (name, entry["headline"])
        for target in entry["targets"]:
            assert math.isfinite(target["value"]) and math.isfinite(target["threshold"])
            assert target["met"] == (target["value"] <= target["threshold"]), target
            assert math.isclose(target["margin"], target["threshold"] - target["value"])


def check_run(run, quick):
    """A run record says when, where and on what it measured."""
    assert run["quick"] is quick
    assert datetime.datetime.fromisoformat(run["date"]).tzinfo is not None
    machine = run["machine"]
    assert machine["processor"] and machine["platform"] and machine["cpu_count"] >= 1
    assert run["versions"]["keras"] and run["keras_backend"]
    assert run["wall_time_s"] > 0
    assert all(len(values) == 3 for values in run["load_average"].values())


def same_numbers(stored, computed, path=""):
    """``computed`` equals ``stored`` key for key, floats to 12 significant digits."""
    if isinstance(computed, dict):
        assert sorted(stored) == sorted(computed), path
        for key in computed:
            same_numbers(stored[key], computed[key], f"{path}/{key}")
    elif isinstance(computed, list):
        assert len(stored) == len(computed), path
        for number, (left, right) in enumerate(zip(stored, computed)):
            same_numbers(left, right, f"{path}[{number}]")
    elif isinstance(computed, float) and not isinstance(stored, str):
        assert stored is not None and math.isclose(stored, computed, rel_tol=1e-12), path
    else:
        assert stored == computed, path


def test_every_measurement_has_the_same_parts():
    for name, module in MEASUREMENTS.items():
        missing = [part for part in PARTS if not hasattr(module, part)]
        assert not missing, (name, missing)
        assert module.NAME == name
        assert module.TABLES and all(table.endswith(".csv") for table in module.TABLES)
        assert module.FIGURE.endswith(".png")
        assert isinstance(module.FULL, module.Settings)
        assert isinstance(module.QUICK, module.Settings)
        assert module.QUICK != module.FULL, name
    figures = [module.FIGURE for module in MEASUREMENTS.values()]
    tables = [table for module in MEASUREMENTS.values() for table in module.TABLES]
    assert len(set(figures)) == len(figures) and len(set(tables)) == len(tables)


@pytest.mark.slow
def test_quick_run_writes_every_measurement_table_and_figure(quick_run):
    out, _ = quick_run
    results = report.load_results(out)
    check_headlines(results)
    for name, module in MEASUREMENTS.items():
        check_run(results[name]["run"], quick=True)
        assert results[name]["settings"] == json.loads(json.dumps(dataclasses.asdict(module.QUICK)))
        assert results[name]["wall_time_s"] > 0
        for table in module.TABLES:
            assert len(pd.read_csv(out / table)) > 0, table
        assert (out / module.FIGURE).read_bytes()[:8] == PNG_SIGNATURE, name
    assert len(results["overhead"]["targets"]) == 3
    assert len(results["range_test_overhead"]["targets"]) == 2
    assert len(results["range_vs_search"]["targets"]) == 2


@pytest.mark.slow
def test_quick_run_covers_every_schedule_and_callback(quick_run):
    out, _ = quick_run
    summary = pd.read_csv(out / "overhead.csv")
    assert summary["variant"].tolist() == [v.name for v in overhead.overhead_variants()]
    runs = pd.read_csv(out / "overhead_runs.csv")
    assert (runs["steps"] == overhead.QUICK.steps).all()
    floors = pd.read_csv(out / "overhead_floors.csv")
    assert list(zip(floors["variant"], floors["floor"], floors["floor_kind"])) == (
        overhead.floor_pairs()
    )
    costs = pd.read_csv(out / "range_test_overhead.csv")
    assert sorted(set(zip(costs["task"], costs["state"]))) == [
        ("fit", "cold"),
        ("fit", "warm"),
        ("range test", "after fit"),
        ("range test", "cold"),
        ("range test", "warm"),
    ]
    # The range test ran its steps, and the searches counted trials x epochs x steps per epoch.
    finals = pd.read_csv(out / "final_runs.csv")
    steps = finals.groupby("method")["steps_spent"].first()
    training_images = len(load_digits(kind="images", seed=0).x_train)
    settings = range_vs_search.QUICK
    epoch_steps = math.ceil(training_images / common.BATCH_SIZE) * settings.epochs
    assert steps["grid search"] == settings.search_trials * epoch_steps
    assert 0 < steps["range test (minimum)"] <= common.RANGE_TEST_STEPS


@pytest.mark.slow
def test_quick_run_prints_its_progress(quick_run):
    _, printout = quick_run
    for marker in ("[overhead] round", "[search]", "[range test]", "[range test cost]"):
        assert marker in printout, marker
    for name in MEASUREMENTS:
        assert f"[{name}] done in" in printout, name
    assert re.search(r"total wall time \d+ s", printout)


def test_committed_results_are_a_full_run_with_date_and_machine():
    results = report.load_results(COMMITTED)
    check_headlines(results)
    for name, module in MEASUREMENTS.items():
        entry = results[name]
        check_run(entry["run"], quick=False)
        assert entry["settings"] == json.loads(json.dumps(dataclasses.asdict(module.FULL)))
        assert (COMMITTED / module.FIGURE).read_bytes()[:8] == PNG_SIGNATURE, name


@pytest.mark.parametrize("name", list(MEASUREMENTS))
def test_committed_entry_is_the_summary_of_the_committed_tables(name):
    module = MEASUREMENTS[name]
    stored = report.load_results(COMMITTED)[name]
    computed = module.summarize(report.load_tables(COMMITTED, name), module.FULL)
    computed = json.loads(json.dumps(common.json_ready(computed)))
    same_numbers({key: stored[key] for key in computed}, computed)


def test_committed_overhead_table_is_the_median_of_its_runs():
    tables = report.load_tables(COMMITTED, "overhead")
    computed = overhead.per_variant(tables["overhead_runs.csv"])
    pd.testing.assert_frame_equal(tables["overhead.csv"], computed, check_exact=False, rtol=1e-12)


def test_committed_floor_table_is_the_same_round_ratios_of_its_runs():
    tables = report.load_tables(COMMITTED, "overhead")
    computed = overhead.floors(tables["overhead_runs.csv"])
    stored = tables["overhead_floors.csv"]
    pd.testing.assert_frame_equal(stored, computed, check_exact=False, rtol=1e-12)


def test_every_schedule_has_a_keras_floor_and_every_batch_callback_the_empty_one():
    variants = {variant.name: variant for variant in overhead.overhead_variants()}
    pairs = overhead.floor_pairs()
    scheduled = [v.name for v in overhead.scheduled_variants()]
    keras_floors = {name: floor for name, floor, kind in pairs if kind == "Keras built-in"}
    assert sorted(keras_floors) == sorted(scheduled)
    for name, floor in keras_floors.items():
        assert variants[floor].kind in (overhead.KERAS_SCHEDULE, overhead.BASELINE), name
    on_empty = [name for name, floor, _ in pairs if floor == overhead.EMPTY_CALLBACK_NAME]
    targeted = [v.name for v in variants.values() if v.kind == overhead.BATCH_CALLBACK]
    assert on_empty == targeted and len(targeted) == 3
    empty = type(variants[overhead.EMPTY_CALLBACK_NAME].make_callbacks()[0])
    assert [name for name in vars(empty) if name.startswith("on_")] == ["on_train_batch_begin"]


def test_keras_floor_of_an_exact_match_gives_the_same_rates():
    # StepDecay and MultiStepDecay are compared with the Keras schedule of the same formula.
    by_name = {v.name: v.learning_rate for v in overhead.overhead_variants()}
    steps = np.arange(0, overhead.TOTAL_STEPS, 7)
    for name in ("StepDecay", "MultiStepDecay", "ExponentialDecay", "CosineDecay"):
        ours = np.asarray(by_name[name](steps))
        theirs = np.array([float(by_name[overhead.KERAS_MATCH[name]](int(s))) for s in steps])
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9, err_msg=name)


def test_floors_divide_within_each_round(monkeypatch):
    runs = pd.DataFrame(
        [
            # Round 1 is slow for everyone: the same-round ratio is unaffected.
            {"variant": variant, "round": number, "step_ms": ms * (3 if number else 1)}
            for number in (0, 1)
            for variant, ms in (("constant rate", 1.0), ("Keras CosineDecay", 2.0))
        ]
        + [
            {"variant": "CosineDecay", "round": 0, "step_ms": 2.2},
            {"variant": "CosineDecay", "round": 1, "step_ms": 6.6},
        ]
    )
    pairs = [("CosineDecay", "Keras CosineDecay", "Keras built-in")]
    monkeypatch.setattr(overhead, "floor_pairs", lambda: pairs)
    row = overhead.floors(runs).iloc[0]
    assert row["median_ratio"] == pytest.approx(1.1)
    assert row["ratio_q1"] == pytest.approx(1.1) and row["ratio_q3"] == pytest.approx(1.1)


def test_range_test_ratios_pair_each_round_and_compare_after_fit_with_warm_fit():
    rows = []
    for number, slow in ((0, 1.0), (1, 2.0)):
        for task, state, seconds in (
            ("fit", "cold", 2.0),
            ("fit", "warm", 0.5),
            ("range test", "cold", 1.0),
            ("range test", "warm", 0.55),
            ("range test", "after fit", 1.5),
        ):
            rows.append({"round": number, "task": task, "state": state, "seconds": seconds * slow})
    per_round = range_test_overhead.ratios(pd.DataFrame(rows))
    assert per_round["cold"].tolist() == pytest.approx([0.5, 0.5])
    assert per_round["warm"].tolist() == pytest.approx([1.1, 1.1])
    assert per_round["after fit"].tolist() == pytest.approx([3.0, 3.0])


def test_readme_table_is_the_rendering_of_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- benchmark-table -->\n(.*?)\n<!-- /benchmark-table -->", readme, re.DOTALL
    )
    assert match, "README.md has no table between the benchmark-table markers"
    assert match.group(1).strip() == report.readme_table(report.load_results(COMMITTED))


def test_table_option_prints_the_readme_table_without_measuring():
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--table", "--out", str(COMMITTED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == report.readme_table(report.load_results(COMMITTED))


def test_round_order_puts_a_baseline_run_next_to_every_variant():
    variants = overhead.overhead_variants()
    order = overhead.round_order(variants, np.random.default_rng(1))
    names = [variant.name for variant in order]
    others = [variant.name for variant in variants[1:]]
    assert sorted(name for name in names if name != variants[0].name) == sorted(others)
    assert names[0] == names[-1] == variants[0].name
    baseline_positions = [i for i, name in enumerate(names) if name == variants[0].name]
    assert max(b - a for a, b in zip(baseline_positions, baseline_positions[1:])) <= (
        overhead.BASELINE_EVERY + 1
    )


def test_target_says_whether_and_by_how_much():
    met = common.target("overhead", 1.05, 1.10, "ratio")
    missed = common.target("overhead", 1.25, 1.10, "ratio")
    assert met["met"] and math.isclose(met["margin"], 0.05)
    assert not missed["met"] and math.isclose(missed["margin"], -0.15)


def test_load_results_explains_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.run"):
        report.load_results(tmp_path)
    (tmp_path / common.RESULTS_FILE).write_text('{"overhead": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match="range_vs_search"):
        report.load_results(tmp_path)
    assert list(report.load_results(tmp_path, ["overhead"])) == ["overhead"]


def test_consensus_is_the_median_of_the_rules_that_gave_a_rate():
    assert suggestions.consensus({"steepest": 0.5, "valley": 0.01, "minimum": 0.03}) == 0.03
    assert suggestions.consensus({"steepest": 0.4, "valley": float("nan"), "minimum": 0.1}) == (
        pytest.approx(0.25)
    )
    assert math.isnan(suggestions.consensus({"steepest": float("nan")}))


def test_suggestion_gap_is_to_the_grid_rate_with_the_best_mean_over_seeds():
    rows = [
        # On seed 1 the rate 0.1 is luckier, but 0.01 has the better mean: 0.01 is the best rate.
        ("grid", 0, 0.01, 0.90),
        ("grid", 1, 0.01, 0.80),
        ("grid", 0, 0.1, 0.50),
        ("grid", 1, 0.1, 0.95),
        ("minimum", 0, 0.02, 0.85),
        ("minimum", 1, 0.03, 0.82),
        ("steepest", 0, float("nan"), float("nan")),
        ("steepest", 1, 0.5, 0.10),
    ]
    runs = pd.DataFrame(
        [
            {"problem": "p", "seed": seed, "rule": rule, "learning_rate": rate, "val_accuracy": acc}
            for rule, seed, rate, acc in rows
        ]
    )
    scored = suggestions.scores(runs).set_index(["rule", "seed"])
    assert (scored["grid_best_rate"] == 0.01).all()
    assert scored.loc[("minimum", 0), "gap_pp"] == pytest.approx(5.0)
    assert scored.loc[("minimum", 1), "gap_pp"] == pytest.approx(-2.0)
    assert math.isnan(scored.loc[("steepest", 0), "gap_pp"])
    table = suggestions.table(runs).set_index("rule")
    assert table.loc["minimum", "mean_gap_pp"] == pytest.approx(1.5)
    assert table.loc["steepest", "suggested"] == 1
