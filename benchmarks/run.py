"""Measure what lrtools costs and what it buys, each comparison side by side in one run.

The measurements are the modules listed in :mod:`benchmarks.registry`, each on
the book's small networks and the bundled data of :mod:`lrtools.data`. Run it
from the repository root::

    python -m benchmarks.run                        # every measurement, into benchmarks/results/
    python -m benchmarks.run --quick --out /tmp/b   # same code, fewer seeds/rounds/epochs
    python -m benchmarks.run --only overhead        # one measurement, merged into results.json
    python -m benchmarks.run --table                # the README table of the stored results

Each measurement writes its CSV tables and PNG figure, and its entry of
``results.json``: the set-up and settings, the run (date, machine, versions,
load average, wall time), every raw figure, the headline figures and the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up notices quiet

import keras  # noqa: E402 (after the environment variable)

from benchmarks import report  # noqa: E402
from benchmarks.common import (  # noqa: E402
    DEFAULT_OUT,
    RESULTS_FILE,
    json_ready,
    load_average,
    log,
    machine_description,
    software_versions,
)
from benchmarks.registry import MEASUREMENTS  # noqa: E402
from lrtools.runtime import has_accelerator  # noqa: E402


def run_description(quick: bool) -> dict[str, Any]:
    """The start of a run's record: date, machine, versions, back-end, load average."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "versions": software_versions(),
        "keras_backend": keras.backend.backend(),
        "gpu_visible": has_accelerator(),
        "quick": quick,
        "load_average": {"start": load_average()},
    }


def run_measurement(name: str, quick: bool, out: Path) -> dict[str, Any]:
    """Measure one registered measurement, write its CSV tables; return its entry.

    Args:
        name: the measurement (a key of :data:`benchmarks.registry.MEASUREMENTS`).
        quick: use its ``QUICK`` settings instead of ``FULL``.
        out: the output folder.

    Returns:
        Its ``summarize`` entry, with ``settings`` and the section's ``wall_time_s``.
    """
    module = MEASUREMENTS[name]
    settings = module.QUICK if quick else module.FULL
    started = time.perf_counter()
    tables = module.measure(settings)
    for table in module.TABLES:
        tables[table].to_csv(out / table, index=False)
    entry = module.summarize(tables, settings)
    entry["settings"] = dataclasses.asdict(settings)
    entry["wall_time_s"] = time.perf_counter() - started
    log(f"[{name}] done in {entry['wall_time_s']:.0f} s")
    return entry


def run_benchmarks(names: Sequence[str], quick: bool, out: Path) -> dict[str, Any]:
    """Run measurements, then write their entries into ``results.json`` and draw their figures.

    Entries of other measurements already in ``out / "results.json"`` are kept,
    so one measurement can be run again alone.

    Args:
        names: the measurements to run, in order.
        quick: use every measurement's ``QUICK`` settings.
        out: the output folder (created if needed).

    Returns:
        The whole of ``results.json`` after the run.
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run = run_description(quick)
    machine = run["machine"]
    log(
        f"Benchmark ({'quick' if quick else 'full'} run) on {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, Keras {keras.__version__} on {run['keras_backend']}, "
        f"load {load_average()}: {', '.join(names)}"
    )
    entries = {name: run_measurement(name, quick, out) for name in names}
    run["load_average"]["end"] = load_average()
    run["wall_time_s"] = time.perf_counter() - started
    path = out / RESULTS_FILE
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    results.update({name: {**entry, "run": run} for name, entry in entries.items()})
    ordered = {name: results[name] for name in MEASUREMENTS if name in results}
    text = json.dumps(json_ready(ordered), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    report.save_figures(out, list(names))
    log(f"Wrote {out}; total wall time {run['wall_time_s']:.0f} s")
    return ordered


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: run the benchmark, or print the README table of stored results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, rounds and epochs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(MEASUREMENTS),
        help="run only these measurements (default: all), keeping the others' stored entries",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the README table of OUT/results.json and exit (runs nothing)",
    )
    args = parser.parse_args(argv)
    if args.table:
        print(report.readme_table(report.load_results(args.out)))
        return
    run_benchmarks(args.only or list(MEASUREMENTS), args.quick, args.out)


if __name__ == "__main__":
    main()
