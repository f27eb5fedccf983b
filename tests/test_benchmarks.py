"""The benchmark (benchmarks/run.py) runs, and its stored results are the ones shown.

The quick mode runs the same code as the full benchmark with fewer seeds, rounds
and epochs, so it cannot rot; the committed results must come from a full run;
the README's table must be the rendering of those results.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lrtools.data import load_digits

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results"
SECTIONS = ("overhead", "range_vs_search", "range_test_overhead", "time_to_accuracy")
CSV_TABLES = (
    "overhead.csv",
    "overhead_runs.csv",
    "search_trials.csv",
    "range_test_picks.csv",
    "final_runs.csv",
    "range_test_overhead.csv",
    "time_to_accuracy.csv",
    "time_to_accuracy_curves.csv",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def benchmarks():
    """The modules benchmarks.run and benchmarks.report, imported from the repository."""
    sys.path.insert(0, str(ROOT))
    try:
        yield (
            importlib.import_module("benchmarks.run"),
            importlib.import_module("benchmarks.report"),
        )
    finally:
        sys.path.remove(str(ROOT))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run ``benchmarks/run.py --quick`` once; return its output folder and its printout."""
    out = tmp_path_factory.mktemp("benchmark")
    completed = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(out)],
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
    for section in SECTIONS:
        entry = results[section]
        numbers = finite_numbers(entry["headline"])
        assert numbers, section
        assert all(math.isfinite(number) for number in numbers), (section, entry["headline"])
        for target in entry["targets"]:
            assert math.isfinite(target["value"]) and math.isfinite(target["threshold"])
            assert target["met"] == (target["value"] <= target["threshold"]), target
            assert math.isclose(target["margin"], target["threshold"] - target["value"])


@pytest.mark.slow
def test_quick_run_writes_every_section_table_and_figure(quick_run, benchmarks):
    out, _ = quick_run
    _, report = benchmarks
    results = report.load_results(out)
    assert results["quick"] is True
    check_headlines(results)
    assert len(results["overhead"]["targets"]) == 2
    assert len(results["range_vs_search"]["targets"]) == 2
    assert results["wall_time_s"] > 0
    assert all(len(values) == 3 for values in results["load_average"].values())
    for table in CSV_TABLES:
        assert len(pd.read_csv(out / table)) > 0, table
    for filename in report.FIGURES.values():
        assert (out / filename).read_bytes()[:8] == PNG_SIGNATURE, filename


@pytest.mark.slow
def test_quick_run_covers_every_schedule_and_callback(quick_run, benchmarks):
    out, _ = quick_run
    run, _ = benchmarks
    summary = pd.read_csv(out / "overhead.csv")
    expected = [variant.name for variant in run.overhead_variants()]
    assert summary["variant"].tolist() == expected
    runs = pd.read_csv(out / "overhead_runs.csv")
    assert (runs["steps"] == run.QUICK.overhead_steps).all()
    # The range test ran its steps, and the searches counted trials x epochs x steps per epoch.
    finals = pd.read_csv(out / "final_runs.csv")
    steps = finals.groupby("method")["steps_spent"].first()
    training_images = len(load_digits(kind="images", seed=0).x_train)
    epoch_steps = math.ceil(training_images / run.BATCH_SIZE) * run.QUICK.train_epochs
    assert steps["grid search"] == run.QUICK.search_trials * epoch_steps
    assert 0 < steps["range test (minimum)"] <= run.QUICK.range_test_steps


@pytest.mark.slow
def test_quick_run_prints_its_progress(quick_run):
    _, printout = quick_run
    for marker in ("[overhead] round", "[search]", "[range test]", "[range test cost]"):
        assert marker in printout, marker
    assert re.search(r"total wall time \d+ s", printout)


def test_committed_results_are_a_full_run_with_date_and_machine(benchmarks):
    run, report = benchmarks
    results = report.load_results(COMMITTED)
    assert results["quick"] is False
    assert results["settings"] == json.loads(json.dumps(dataclasses.asdict(run.FULL)))
    date = datetime.datetime.fromisoformat(results["date"])
    assert date.tzinfo is not None
    machine = results["machine"]
    assert machine["processor"] and machine["platform"] and machine["cpu_count"] >= 1
    assert results["versions"]["keras"] and results["keras_backend"]
    check_headlines(results)
    for filename in report.FIGURES.values():
        assert (COMMITTED / filename).read_bytes()[:8] == PNG_SIGNATURE, filename


def test_readme_table_is_the_rendering_of_the_committed_results(benchmarks):
    _, report = benchmarks
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- benchmark-table -->\n(.*?)\n<!-- /benchmark-table -->", readme, re.DOTALL
    )
    assert match, "README.md has no table between the benchmark-table markers"
    assert match.group(1).strip() == report.readme_table(report.load_results(COMMITTED))


def test_round_order_puts_a_baseline_run_next_to_every_variant(benchmarks):
    run, _ = benchmarks
    variants = run.overhead_variants()
    order = run.round_order(variants, run.np.random.default_rng(1))
    names = [variant.name for variant in order]
    others = [variant.name for variant in variants[1:]]
    assert sorted(name for name in names if name != variants[0].name) == sorted(others)
    assert names[0] == names[-1] == variants[0].name
    baseline_positions = [i for i, name in enumerate(names) if name == variants[0].name]
    assert max(b - a for a, b in zip(baseline_positions, baseline_positions[1:])) <= (
        run.BASELINE_EVERY + 1
    )


def test_target_says_whether_and_by_how_much(benchmarks):
    run, _ = benchmarks
    met = run.target("overhead", 1.05, 1.10, "ratio")
    missed = run.target("overhead", 1.25, 1.10, "ratio")
    assert met["met"] and math.isclose(met["margin"], 0.05)
    assert not missed["met"] and math.isclose(missed["margin"], -0.15)


def test_load_results_explains_a_missing_run(benchmarks, tmp_path):
    _, report = benchmarks
    with pytest.raises(FileNotFoundError, match="benchmarks/run.py"):
        report.load_results(tmp_path)
