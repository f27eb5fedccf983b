"""Measure what lrtools costs and what it buys, each comparison side by side in one run.

Four measurements on the book's digits CNN (``lrtools.experiments.digits_cnn``,
batch size 32, the bundled 8x8 digits of ``lrtools.data.load_digits``):

1. ``overhead``: the time of a training step with a constant rate, with each
   ``lrtools.schedules`` schedule inside the optimizer, with
   ``lrtools.callbacks.LRScheduler(unit="batch")``, with ``lrtools.callbacks.OneCycle``
   cycling the momentum, and with Keras's ``LearningRateScheduler``. The
   variants run round-robin (interleaved) for several rounds; each run times a
   fixed number of steps after a few untimed warm-up steps (tracing included);
   the figure is the median over rounds of each variant's ratio to the
   constant-rate run of the same round.
2. ``range_vs_search``: the range test's suggestion against keras-tuner grid and
   random search over the rate: training steps spent by each, and the final
   validation accuracy of full training runs at each chosen rate, over seeds.
3. ``range_test_overhead``: wall time of a 100-step range test against 100 plain
   ``model.fit`` steps of the same model, on a fresh model and again on a warm one.
4. ``time_to_accuracy``: epochs to reach a validation accuracy with the best
   fixed rate, step decay, cosine, cyclical rates (CLR), SGDR and one-cycle.

Run it from the repository root::

    python benchmarks/run.py                       # full run, into benchmarks/results/
    python benchmarks/run.py --quick --out /tmp/b  # same code, fewer seeds/rounds/epochs
    python benchmarks/run.py --table               # the README table of the stored results

It writes ``results.json`` (the machine, versions, load average, every raw
number, the headline figures and the targets), tidy CSV tables and PNG figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up notices quiet

import keras  # noqa: E402 (after the environment variable)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lrtools import callbacks, schedules  # noqa: E402
from lrtools.data import Dataset, load_digits  # noqa: E402
from lrtools.experiments import Config, rate_sweep, run_experiment  # noqa: E402
from lrtools.finder import lr_range_test  # noqa: E402
from lrtools.models import digits_cnn  # noqa: E402
from lrtools.runtime import has_accelerator  # noqa: E402
from lrtools.tuning import search_learning_rate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import report  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
LOSS = "sparse_categorical_crossentropy"
BATCH_SIZE = 32

# Targets of issue 8. A ratio target is an upper bound on step time / baseline step time.
SCHEDULE_TARGET = 1.02
BATCH_CALLBACK_TARGET = 1.10
ACCURACY_GAP_TARGET_PP = 1.0
STEP_FRACTION_TARGET = 1 / 20

SCHEDULE_IN_OPTIMIZER = "schedule in the optimizer"
BATCH_CALLBACK = "batch callback"
EPOCH_CALLBACK = "epoch callback"
BASELINE = "baseline"
NOISE_CHECK = "noise check (same as baseline)"
BASELINE_EVERY = 5  # the baseline runs again after this many other variants
RANGE_TEST_METHOD = "minimum"  # the rule chapter 3 recommends; chosen before measuring


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much of each measurement to run; ``--quick`` only makes the numbers smaller.

    Attributes:
        quick: whether this is the quick (CI) run.
        overhead_rounds: round-robin rounds over all step-time variants.
        overhead_steps: timed steps per run.
        overhead_warmup_steps: untimed steps at the start of every run (tracing).
        search_trials: trials of each keras-tuner search (grid and random).
        train_epochs: epochs of every search trial and of every final run.
        range_test_steps: steps of the range test.
        seeds: seeds of the final runs and of the range tests (one test per seed).
        range_test_rounds: repetitions of the range-test-versus-fit timing.
        time_to_accuracy_epochs: epochs of every run of measurement 4.
        time_to_accuracy_seeds: seeds of measurement 4.
        target_accuracy: the validation accuracy that measurement 4 waits for.
    """

    quick: bool
    overhead_rounds: int
    overhead_steps: int
    overhead_warmup_steps: int
    search_trials: int
    train_epochs: int
    range_test_steps: int
    seeds: tuple[int, ...]
    range_test_rounds: int
    time_to_accuracy_epochs: int
    time_to_accuracy_seeds: tuple[int, ...]
    target_accuracy: float


FULL = Settings(
    quick=False,
    overhead_rounds=10,
    overhead_steps=100,
    overhead_warmup_steps=5,
    search_trials=8,
    train_epochs=10,
    range_test_steps=100,
    seeds=(0, 1, 2, 3, 4),
    range_test_rounds=3,
    time_to_accuracy_epochs=15,
    time_to_accuracy_seeds=(0, 1, 2, 3, 4),
    target_accuracy=0.95,
)
QUICK = dataclasses.replace(
    FULL,
    quick=True,
    overhead_rounds=2,
    overhead_steps=30,
    search_trials=3,
    train_epochs=2,
    seeds=(0,),
    range_test_rounds=1,
    time_to_accuracy_epochs=3,
    time_to_accuracy_seeds=(0,),
)


def log(message: str) -> None:
    """Print one progress line at once (the run takes minutes; show it working)."""
    print(message, flush=True)


# --------------------------------------------------------------------------- machine


def machine_description() -> dict[str, Any]:
    """Describe the machine the numbers come from.

    Returns:
        ``platform`` (``platform.platform()``), ``processor`` (the CPU model from
        ``/proc/cpuinfo`` where there is one, else ``platform.processor()``),
        ``cpu_count`` (``os.cpu_count()``) and ``memory_gb`` (total memory, or
        ``None`` where it cannot be read).

    Example:

    >>> machine_description()["cpu_count"] >= 1
    True
    """
    processor = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (AttributeError, ValueError, OSError):
        memory_gb = None
    return {
        "platform": platform.platform(),
        "processor": processor,
        "cpu_count": os.cpu_count(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
    }


def software_versions() -> dict[str, str | None]:
    """The versions of Python and of the libraries the measurements depend on.

    Returns:
        Package name -> version (``None`` for a package that is not installed).
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("lrtools", "keras", "tensorflow", "jax", "keras-tuner", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def target(description: str, value: float, threshold: float, unit: str) -> dict[str, Any]:
    """Check a measured figure against an upper-bound target, and say by how much.

    Args:
        description: what the target is, in words.
        value: the measured figure.
        threshold: the largest value that meets the target.
        unit: the unit of ``value`` and ``threshold`` (for the report).

    Returns:
        A dict with the inputs, ``met`` (``value <= threshold``) and ``margin``
        (``threshold - value``: positive by how much it was met, negative by how
        much it was missed).

    Example:

    >>> target("overhead", 1.05, 1.10, "ratio")["met"]
    True
    """
    return {
        "description": description,
        "value": float(value),
        "threshold": float(threshold),
        "unit": unit,
        "met": bool(value <= threshold),
        "margin": float(threshold - value),
    }


# --------------------------------------------------------------------------- 1. overhead


class StepTimer(keras.callbacks.Callback):
    """Record the time at the start of every training batch.

    Put it first in the callback list: the gap between two consecutive
    timestamps then holds one training step and one call of every other
    callback's batch hooks.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.times: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.times.append(time.perf_counter())


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of setting the rate whose step time is measured.

    Attributes:
        name: the label in tables and figures.
        kind: ``"baseline"``, ``"noise check (same as baseline)"``, ``"schedule
            in the optimizer"``, ``"batch callback"`` or ``"epoch callback"``.
        learning_rate: what the SGD optimizer is compiled with (a float or a schedule).
        make_callbacks: returns the callbacks of the run (new ones per model).
    """

    name: str
    kind: str
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
    make_callbacks: Callable[[], list[keras.callbacks.Callback]] = list


def overhead_variants(total_steps: int = 1000, rate: float = 0.01) -> list[Variant]:
    """The constant-rate baseline (twice), every ``lrtools.schedules`` schedule, the callbacks.

    The schedules span ``total_steps`` (longer than any measurement runs, so
    every one is in its changing part); their arguments are ordinary ones, the
    cost of a schedule does not depend on them.

    Args:
        total_steps: the length the schedules are set up for.
        rate: the (peak or initial) rate.

    Returns:
        The variants, the baseline first.
    """
    quarter = total_steps // 4
    scheduled = {
        "Constant": schedules.Constant(rate),
        "StepDecay": schedules.StepDecay(rate, drop=0.5, step_size=quarter),
        "MultiStepDecay": schedules.MultiStepDecay(rate, [2 * quarter, 3 * quarter]),
        "ExponentialDecay": schedules.ExponentialDecay(rate, 0.5, decay_steps=quarter),
        "TimeDecay": schedules.TimeDecay(rate, 1.0, decay_steps=quarter),
        "LinearDecay": schedules.LinearDecay(rate, total_steps),
        "PolynomialDecay": schedules.PolynomialDecay(rate, total_steps, power=2.0),
        "CosineDecay": schedules.CosineDecay(rate, total_steps),
        "CosineRestarts": schedules.CosineRestarts(rate, quarter, t_mul=2.0),
        "CyclicLR": schedules.CyclicLR(rate / 10, rate, step_size=quarter // 2),
        "OneCycle": schedules.OneCycle(rate, total_steps),
        "Warmup": schedules.Warmup(schedules.CosineDecay(rate, total_steps - quarter), quarter),
        "WarmupStableDecay": schedules.WarmupStableDecay(rate, quarter, 2 * quarter, quarter),
        "Sequential": schedules.Sequential(
            [schedules.Constant(rate), schedules.CosineDecay(rate, total_steps - quarter)],
            [quarter],
        ),
        "Scaled": schedules.Scaled(schedules.CosineDecay(rate, total_steps), 0.5),
    }
    missing = set(schedules.__all__) - set(scheduled) - {"as_schedule"}
    if missing:
        raise RuntimeError(f"The overhead benchmark does not cover {sorted(missing)}.")
    variants = [
        Variant("constant rate", BASELINE, rate),
        # A second model with exactly the baseline's setup: its ratio shows the noise.
        Variant("constant rate, second model", NOISE_CHECK, rate),
    ]
    variants += [
        Variant(name, SCHEDULE_IN_OPTIMIZER, schedule) for name, schedule in scheduled.items()
    ]
    variants += [
        Variant(
            "LRScheduler(CosineDecay)",
            BATCH_CALLBACK,
            rate,
            lambda: [callbacks.LRScheduler(schedules.CosineDecay(rate, total_steps))],
        ),
        Variant(
            "LRScheduler(Python function)",
            BATCH_CALLBACK,
            rate,
            lambda: [callbacks.LRScheduler(lambda step: rate * 0.5 ** (step / quarter))],
        ),
        Variant(
            "OneCycle callback (momentum cycled)",
            BATCH_CALLBACK,
            rate,
            lambda: [callbacks.OneCycle(rate, total_steps)],
        ),
        Variant(
            "Keras LearningRateScheduler",
            EPOCH_CALLBACK,
            rate,
            lambda: [keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9)],
        ),
    ]
    return variants


def round_order(variants: Sequence[Variant], rng: np.random.Generator) -> list[Variant]:
    """The run order of one round: the other variants shuffled, the baseline between them.

    The baseline (the first variant) runs first, after every
    :data:`BASELINE_EVERY` other variants and last, so that every variant has a
    baseline run a few seconds before or after it; the shuffle keeps a slow
    drift of the machine from favouring the variants that always run early.

    Args:
        variants: the baseline first, then the others.
        rng: the seeded generator of the shuffle.

    Returns:
        The variants in the order to run, the baseline several times.
    """
    baseline, others = variants[0], list(variants[1:])
    order = [baseline]
    for position, index in enumerate(rng.permutation(len(others)), start=1):
        order.append(others[index])
        if position % BASELINE_EVERY == 0 or position == len(others):
            order.append(baseline)
    return order


def measure_overhead(data: Dataset, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time training steps under every variant, interleaved, and compare to the baseline.

    Every variant gets its own digits CNN (same seed, so the same weights) and
    SGD with momentum 0.9, compiled once. Then, for each round, the variants run
    in the order of :func:`round_order`, each one ``fit`` call of ``warm-up +
    timed + 1`` batches of 32 on the same data in the same order. A run's step
    time is the median of its ``timed`` step-to-step intervals (a step, plus one
    call of every callback's batch hooks); the median keeps a burst of another
    process on the shared machine out of it, while work done at every step
    stays in. A run's ratio divides it by the median of the baseline's runs in
    the same round.

    Args:
        data: the digits data set.
        settings: the rounds and steps.

    Returns:
        ``(runs, summary)``: one row per run with ``step_ms`` (median interval),
        ``mean_step_ms``, ``first_step_s`` (the first step of the call, tracing
        included), ``ratio`` and ``extra_ms`` (``step_ms`` minus the round's
        baseline); and one row per variant with the median ratio over rounds,
        its quartiles, minimum and maximum, and the median ``extra_ms``.
    """
    variants = overhead_variants()
    batches = settings.overhead_warmup_steps + settings.overhead_steps + 1
    x = np.resize(data.x_train, (batches * BATCH_SIZE, *data.x_train.shape[1:]))
    y = np.resize(data.y_train, (batches * BATCH_SIZE,))
    models, variant_callbacks = {}, {}
    for variant in variants:
        keras.utils.set_random_seed(0)
        model = digits_cnn(data.input_shape, data.num_classes)
        model.compile(
            optimizer=keras.optimizers.SGD(variant.learning_rate, momentum=0.9),
            loss=LOSS,
            metrics=["accuracy"],
        )
        models[variant.name] = model
        variant_callbacks[variant.name] = variant.make_callbacks()
    rng = np.random.default_rng(0)
    rounds = []
    for round_number in range(settings.overhead_rounds):
        rows = []
        for variant in round_order(variants, rng):
            timer = StepTimer()
            models[variant.name].fit(
                x,
                y,
                batch_size=BATCH_SIZE,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[timer, *variant_callbacks[variant.name]],
            )
            times = np.asarray(timer.times)
            timed = np.diff(times[settings.overhead_warmup_steps :])
            rows.append(
                {
                    "variant": variant.name,
                    "kind": variant.kind,
                    "round": round_number,
                    "steps": len(timed),
                    "step_ms": 1e3 * float(np.median(timed)),
                    "mean_step_ms": 1e3 * float(np.mean(timed)),
                    "first_step_s": float(times[1] - times[0]),
                }
            )
        frame = pd.DataFrame(rows)
        baseline = frame.loc[frame["kind"] == BASELINE, "step_ms"].median()
        frame["ratio"] = frame["step_ms"] / baseline
        frame["extra_ms"] = frame["step_ms"] - baseline
        rounds.append(frame)
        worst = frame.loc[frame["ratio"].idxmax()]
        log(
            f"[overhead] round {round_number + 1}/{settings.overhead_rounds}: baseline "
            f"{baseline:.2f} ms/step, highest ratio {worst['ratio']:.3f} ({worst['variant']})"
        )
    runs = pd.concat(rounds, ignore_index=True)
    # One figure per round: the baseline's own runs count once, by their median.
    per_round = runs.groupby(["variant", "round"], sort=False).median(numeric_only=True)
    per_round = per_round.reset_index().merge(
        runs[["variant", "kind"]].drop_duplicates(), on="variant"
    )
    grouped = per_round.groupby("variant", sort=False)
    summary = pd.DataFrame(
        {
            "kind": grouped["kind"].first(),
            "median_ratio": grouped["ratio"].median(),
            "ratio_q1": grouped["ratio"].quantile(0.25),
            "ratio_q3": grouped["ratio"].quantile(0.75),
            "ratio_min": grouped["ratio"].min(),
            "ratio_max": grouped["ratio"].max(),
            "median_extra_ms": grouped["extra_ms"].median(),
            "median_step_ms": grouped["step_ms"].median(),
            "median_first_step_s": grouped["first_step_s"].median(),
        }
    )
    summary = summary.loc[[variant.name for variant in variants]].reset_index()
    return runs, summary


def overhead_section(data: Dataset, settings: Settings, out: Path) -> dict[str, Any]:
    """Measurement 1, its CSV tables and its entry of results.json."""
    runs, summary = measure_overhead(data, settings)
    runs.to_csv(out / "overhead_runs.csv", index=False)
    summary.to_csv(out / "overhead.csv", index=False)
    by_kind = {kind: frame for kind, frame in summary.groupby("kind")}
    worst_schedule = by_kind[SCHEDULE_IN_OPTIMIZER].loc[
        by_kind[SCHEDULE_IN_OPTIMIZER]["median_ratio"].idxmax()
    ]
    worst_callback = by_kind[BATCH_CALLBACK].loc[by_kind[BATCH_CALLBACK]["median_ratio"].idxmax()]
    return {
        "setup": {
            "model": "digits_cnn",
            "optimizer": "SGD, momentum 0.9",
            "batch_size": BATCH_SIZE,
            "steps_per_execution": 1,
            "rounds": settings.overhead_rounds,
            "timed_steps_per_run": settings.overhead_steps,
            "warmup_steps_per_run": settings.overhead_warmup_steps,
        },
        "baseline_step_ms": float(
            summary.loc[summary["kind"] == BASELINE, "median_step_ms"].iloc[0]
        ),
        "variants": summary.to_dict(orient="records"),
        "headline": {
            "worst_schedule": str(worst_schedule["variant"]),
            "worst_schedule_ratio": float(worst_schedule["median_ratio"]),
            "median_schedule_ratio": float(by_kind[SCHEDULE_IN_OPTIMIZER]["median_ratio"].median()),
            "noise_check_ratio": float(by_kind[NOISE_CHECK]["median_ratio"].iloc[0]),
            "noise_check_range": [
                float(by_kind[NOISE_CHECK]["ratio_min"].iloc[0]),
                float(by_kind[NOISE_CHECK]["ratio_max"].iloc[0]),
            ],
            "worst_batch_callback": str(worst_callback["variant"]),
            "worst_batch_callback_ratio": float(worst_callback["median_ratio"]),
        },
        "targets": [
            target(
                "every schedule in the optimizer within 2 % of the constant rate (worst median "
                "ratio)",
                worst_schedule["median_ratio"],
                SCHEDULE_TARGET,
                "ratio",
            ),
            target(
                "every batch-level callback within 10 % of the constant rate (worst median ratio)",
                worst_callback["median_ratio"],
                BATCH_CALLBACK_TARGET,
                "ratio",
            ),
        ],
    }


# ------------------------------------------------------------------ 2. range test vs search


def compiled_cnn(data: Dataset, learning_rate: float) -> keras.Model:
    """A new digits CNN compiled with Adam at ``learning_rate`` (8 steps per call).

    Args:
        data: gives the input shape and the number of classes.
        learning_rate: Adam's rate.

    Returns:
        The compiled model.
    """
    model = digits_cnn(data.input_shape, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=LOSS,
        metrics=["accuracy"],
        steps_per_execution=8,
    )
    return model


class TrialPrinter(keras.callbacks.Callback):
    """Print one line when a keras-tuner trial finishes training."""

    def __init__(self, strategy: str):
        super().__init__()
        self.strategy = strategy

    def on_train_end(self, logs: dict | None = None) -> None:
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        accuracy = (logs or {}).get("val_accuracy", float("nan"))
        log(f"[search] {self.strategy} trial: rate {rate:.3g}, val_accuracy {accuracy:.4f}")


def range_vs_search_section(data: Dataset, settings: Settings, out: Path) -> dict[str, Any]:
    """Measurement 2: the range test's pick against grid and random search.

    Adam on the digits CNN, as in chapter 3. Grid and random search
    (``lrtools.tuning.search_learning_rate``, keras-tuner underneath) try
    ``search_trials`` rates between 1e-4 and 0.1, each trained for
    ``train_epochs`` epochs and ranked by validation accuracy. One 100-step range
    test per seed (1e-6 to 10, chapter 3's settings) suggests a rate by each
    rule. Then every chosen rate trains ``train_epochs`` epochs for every seed.
    Steps are counted as trained: trials x epochs x steps per epoch for a
    search, the steps the range test actually ran for a range test.

    Args:
        data: the digits data set.
        settings: trials, epochs, seeds.
        out: folder for the CSV tables.

    Returns:
        The entry of results.json.
    """
    steps_per_epoch = math.ceil(len(data.x_train) / BATCH_SIZE)
    picks, trial_tables, steps_spent = [], [], {}
    for strategy in ("grid", "random"):
        keras.utils.set_random_seed(0)
        search = search_learning_rate(
            lambda rate: compiled_cnn(data, rate),
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            strategy=strategy,
            min_lr=1e-4,
            max_lr=0.1,
            max_trials=settings.search_trials,
            epochs=settings.train_epochs,
            batch_size=BATCH_SIZE,
            objective="val_accuracy",
            seed=0,
            fit_kwargs={"callbacks": [TrialPrinter(strategy)]},
        )
        trials = search.trials.assign(strategy=strategy)
        trial_tables.append(trials)
        name = f"{strategy} search"
        steps_spent[name] = len(trials) * settings.train_epochs * steps_per_epoch
        picks += [
            {"method": name, "seed": seed, "learning_rate": search.best_learning_rate}
            for seed in settings.seeds
        ]
        log(
            f"[search] {name}: best rate {search.best_learning_rate:.3g} after "
            f"{steps_spent[name]} steps"
        )
    range_rows = []
    for seed in settings.seeds:
        keras.utils.set_random_seed(seed)
        model = compiled_cnn(data, 1e-3)
        test = lr_range_test(
            model,
            data.x_train,
            data.y_train,
            batch_size=BATCH_SIZE,
            start_lr=1e-6,
            end_lr=10.0,
            num_steps=settings.range_test_steps,
            verbose=0,
        )
        steps = len(test.repeat_losses[0])
        suggestions = test.suggestions()
        for rule, rate in suggestions.rates.items():
            range_rows.append({"seed": seed, "rule": rule, "learning_rate": rate, "steps": steps})
            picks.append({"method": f"range test ({rule})", "seed": seed, "learning_rate": rate})
        log(
            f"[range test] seed {seed}: {steps} steps, suggestions "
            + ", ".join(f"{rule} {rate:.3g}" for rule, rate in suggestions.rates.items())
        )
    range_tests = pd.DataFrame(range_rows)
    for rule, frame in range_tests.groupby("rule"):
        steps_spent[f"range test ({rule})"] = float(frame["steps"].mean())

    final_rows = []
    for seed in settings.seeds:
        seed_picks = [pick for pick in picks if pick["seed"] == seed]
        configs = {
            pick["method"]: Config(
                keras.optimizers.Adam(pick["learning_rate"]),
                labels={"method": pick["method"], "learning_rate": pick["learning_rate"]},
            )
            for pick in seed_picks
        }
        result = run_experiment(
            digits_cnn,
            configs,
            data,
            epochs=settings.train_epochs,
            seeds=(seed,),
            batch_size=BATCH_SIZE,
            steps_per_execution=8,
        )
        final_rows.append(result.runs[["method", "seed", "learning_rate", "val_accuracy"]])
    finals = pd.concat(final_rows, ignore_index=True)
    finals["steps_spent"] = finals["method"].map(steps_spent)
    trials = pd.concat(trial_tables, ignore_index=True)
    trials[["strategy", "trial_id", "learning_rate", "val_accuracy", "steps", "status"]].to_csv(
        out / "search_trials.csv", index=False
    )
    range_tests.to_csv(out / "range_test_picks.csv", index=False)
    finals.to_csv(out / "final_runs.csv", index=False)

    methods = finals.groupby("method", sort=False).agg(
        mean_val_accuracy=("val_accuracy", "mean"),
        std_val_accuracy=("val_accuracy", "std"),
        min_learning_rate=("learning_rate", "min"),
        max_learning_rate=("learning_rate", "max"),
        steps_spent=("steps_spent", "first"),
    )
    searches = methods.loc[["grid search", "random search"]]
    best_search = str(searches["mean_val_accuracy"].idxmax())
    picked = f"range test ({RANGE_TEST_METHOD})"
    gap_pp = 100 * (
        methods.loc[best_search, "mean_val_accuracy"] - methods.loc[picked, "mean_val_accuracy"]
    )
    step_fraction = methods.loc[picked, "steps_spent"] / methods.loc[best_search, "steps_spent"]
    return {
        "setup": {
            "model": "digits_cnn",
            "optimizer": "Adam",
            "batch_size": BATCH_SIZE,
            "search_range": [1e-4, 0.1],
            "search_trials": settings.search_trials,
            "epochs": settings.train_epochs,
            "steps_per_epoch": steps_per_epoch,
            "range_test": {
                "start_lr": 1e-6,
                "end_lr": 10.0,
                "num_steps": settings.range_test_steps,
            },
            "seeds": list(settings.seeds),
            "headline_rule": RANGE_TEST_METHOD,
        },
        "methods": methods.reset_index().to_dict(orient="records"),
        "headline": {
            "best_search": best_search,
            "best_search_val_accuracy": float(methods.loc[best_search, "mean_val_accuracy"]),
            "range_test_rule": RANGE_TEST_METHOD,
            "range_test_val_accuracy": float(methods.loc[picked, "mean_val_accuracy"]),
            "accuracy_gap_pp": float(gap_pp),
            "range_test_steps": float(methods.loc[picked, "steps_spent"]),
            "search_steps": float(methods.loc[best_search, "steps_spent"]),
            "step_fraction": float(step_fraction),
        },
        "targets": [
            target(
                f"range test ({RANGE_TEST_METHOD}) within 1 percentage point of the best "
                "search's final validation accuracy (gap in points)",
                gap_pp,
                ACCURACY_GAP_TARGET_PP,
                "percentage points",
            ),
            target(
                "range test at no more than 1/20 of the search's training steps",
                step_fraction,
                STEP_FRACTION_TARGET,
                "fraction of steps",
            ),
        ],
    }


# --------------------------------------------------------------------------- 3. range test cost


def range_test_overhead_section(data: Dataset, settings: Settings, out: Path) -> dict[str, Any]:
    """Measurement 3: a range test of ``range_test_steps`` steps against as many fit steps.

    For each round: a fresh digits CNN (Adam) runs the range test (1e-6 to 0.1,
    never stopping early) twice, and another fresh one runs ``model.fit`` over
    the same number of batches of 32 twice. The first call of each includes
    building and tracing ("cold"), the second does not ("warm").

    Args:
        data: the digits data set.
        settings: the steps and rounds.
        out: folder for the CSV table.

    Returns:
        The entry of results.json.
    """
    steps = settings.range_test_steps
    x = np.resize(data.x_train, (steps * BATCH_SIZE, *data.x_train.shape[1:]))
    y = np.resize(data.y_train, (steps * BATCH_SIZE,))
    rows = []
    for round_number in range(settings.range_test_rounds):
        for task in ("range test", "fit"):
            keras.utils.set_random_seed(round_number)
            model = digits_cnn(data.input_shape, data.num_classes)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"])
            for state in ("cold", "warm"):
                start = time.perf_counter()
                if task == "range test":
                    result = lr_range_test(
                        model,
                        x,
                        y,
                        batch_size=BATCH_SIZE,
                        start_lr=1e-6,
                        end_lr=0.1,
                        num_steps=steps,
                        diverge_factor=math.inf,
                        verbose=0,
                    )
                    ran = len(result.repeat_losses[0])
                else:
                    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
                    ran = steps
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "round": round_number,
                        "task": task,
                        "state": state,
                        "steps": ran,
                        "seconds": seconds,
                    }
                )
                log(f"[range test cost] round {round_number + 1}: {task}, {state}: {seconds:.2f} s")
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "range_test_overhead.csv", index=False)
    medians = runs.groupby(["task", "state"])["seconds"].median()
    ratios = {
        state: float(medians["range test", state] / medians["fit", state])
        for state in medians["fit"].index
    }
    return {
        "setup": {
            "model": "digits_cnn",
            "optimizer": "Adam",
            "batch_size": BATCH_SIZE,
            "steps": steps,
            "rounds": settings.range_test_rounds,
        },
        "seconds": {f"{task}, {state}": float(value) for (task, state), value in medians.items()},
        "headline": {"cold_ratio": ratios["cold"], "warm_ratio": ratios["warm"]},
        "targets": [],
        "note": "The issue sets no target for this measurement; it is reported as measured.",
    }


# --------------------------------------------------------------------------- 4. time to accuracy


def momentum_sgd(learning_rate: Any) -> Callable[[], keras.optimizers.Optimizer]:
    """A factory of SGD optimizers with momentum 0.9 at ``learning_rate`` (a rate or schedule)."""
    return lambda: keras.optimizers.SGD(learning_rate, momentum=0.9)


def time_to_accuracy_section(data: Dataset, settings: Settings, out: Path) -> dict[str, Any]:
    """Measurement 4: epochs to a validation accuracy under fixed rates and schedules.

    SGD with momentum 0.9 on the digits CNN. First three fixed rates (0.01,
    0.03, 0.1); the one with the best mean final validation accuracy is the
    best fixed rate ``r``. Then, over the same epochs: step decay (``r``, /10
    at half and three quarters of the run), cosine decay from ``r``, CLR
    (triangular2, ``r / 10`` to ``3 r``, a half-cycle of 2/15 of the run: two
    epochs of 15), SGDR (cosine restarts from ``r``, cycles of 1, 2, 4 and 8
    fifteenths of the run: they end with it) and one-cycle (``OneCycle``
    callback, peak ``3 r``, momentum cycled 0.95-0.85, run with one step per
    call so that the callback sets every step's rate). Schedules in the
    optimizer run 8 steps per call (the same updates).

    Args:
        data: the digits data set.
        settings: epochs, seeds, target accuracy.
        out: folder for the CSV tables.

    Returns:
        The entry of results.json.
    """
    epochs = settings.time_to_accuracy_epochs
    seeds = settings.time_to_accuracy_seeds
    steps_per_epoch = math.ceil(len(data.x_train) / BATCH_SIZE)
    total = epochs * steps_per_epoch
    fixed = run_experiment(
        digits_cnn,
        rate_sweep(keras.optimizers.SGD, [0.01, 0.03, 0.1], momentum=0.9),
        data,
        epochs=epochs,
        seeds=seeds,
        batch_size=BATCH_SIZE,
        steps_per_execution=8,
    )
    best_fixed = fixed.best_config("val_accuracy")
    rate = float(fixed.runs.loc[fixed.runs["config"] == best_fixed, "learning_rate"].iloc[0])
    log(f"[time to accuracy] best fixed rate: {rate:g}")
    unit = max(total // 15, 1)
    scheduled = run_experiment(
        digits_cnn,
        {
            "step decay": momentum_sgd(
                schedules.MultiStepDecay(rate, [total // 2, 3 * total // 4], gamma=0.1)
            ),
            "cosine": momentum_sgd(schedules.CosineDecay(rate, total)),
            "CLR": momentum_sgd(
                schedules.CyclicLR(rate / 10, 3 * rate, step_size=2 * unit, mode="triangular2")
            ),
            "SGDR": momentum_sgd(schedules.CosineRestarts(rate, unit, t_mul=2.0)),
        },
        data,
        epochs=epochs,
        seeds=seeds,
        batch_size=BATCH_SIZE,
        steps_per_execution=8,
    )
    one_cycle = run_experiment(
        digits_cnn,
        {
            "one-cycle": Config(
                momentum_sgd(rate),
                callbacks=lambda: [callbacks.OneCycle(3 * rate, total)],
            )
        },
        data,
        epochs=epochs,
        seeds=seeds,
        batch_size=BATCH_SIZE,
    )
    parts = (fixed, scheduled, one_cycle)
    renamed = {best_fixed: f"best fixed ({rate:g})"}
    curves = pd.concat([part.frame for part in parts], ignore_index=True)
    curves = curves.replace({"config": renamed})[
        ["config", "seed", "epoch", "loss", "val_loss", "val_accuracy", "lr"]
    ]
    curves.to_csv(out / "time_to_accuracy_curves.csv", index=False)
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
    reach.to_csv(out / "time_to_accuracy.csv", index=False)
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
    others = [config for config in fixed.configs if config != best_fixed]
    shown = summary[~summary["config"].isin(others)]
    log(
        "[time to accuracy] mean epochs to target: "
        + ", ".join(f"{row.config} {row.mean_epochs:.1f}" for row in shown.itertuples())
    )
    return {
        "setup": {
            "model": "digits_cnn",
            "optimizer": "SGD, momentum 0.9",
            "batch_size": BATCH_SIZE,
            "epochs": epochs,
            "seeds": list(seeds),
            "target_accuracy": settings.target_accuracy,
            "fixed_rates": [0.01, 0.03, 0.1],
            "best_fixed_rate": rate,
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


# --------------------------------------------------------------------------- main


def json_ready(value: Any) -> Any:
    """Replace every NaN or infinite float in nested dicts and lists by ``None``.

    JSON has no NaN: a run that never reached its target is ``null`` in results.json.

    Example:

    >>> json_ready({"epochs": [6.0, float("nan")]})
    {'epochs': [6.0, None]}
    """
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_benchmarks(settings: Settings, out: Path) -> dict[str, Any]:
    """Run the four measurements, write results.json, the CSV tables and the figures.

    Args:
        settings: :data:`FULL` or :data:`QUICK`.
        out: the output folder (created if needed).

    Returns:
        The results (as written to ``out / "results.json"``).
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "versions": software_versions(),
        "keras_backend": keras.backend.backend(),
        "gpu_visible": has_accelerator(),
        "quick": settings.quick,
        "settings": dataclasses.asdict(settings),
        "load_average": {"start": load_average()},
    }
    log(
        f"Benchmark ({'quick' if settings.quick else 'full'} run) on "
        f"{results['machine']['processor']}, {results['machine']['cpu_count']} CPUs, "
        f"Keras {keras.__version__} on {results['keras_backend']}, load {load_average()}"
    )
    data = load_digits(kind="images", seed=0)
    sections = {
        "overhead": overhead_section,
        "range_vs_search": range_vs_search_section,
        "range_test_overhead": range_test_overhead_section,
        "time_to_accuracy": time_to_accuracy_section,
    }
    for name, measure in sections.items():
        section_start = time.perf_counter()
        results[name] = measure(data, settings, out)
        results[name]["wall_time_s"] = time.perf_counter() - section_start
        log(f"[{name}] done in {results[name]['wall_time_s']:.0f} s")
    results["load_average"]["end"] = load_average()
    results["wall_time_s"] = time.perf_counter() - started
    text = json.dumps(json_ready(results), indent=2, allow_nan=False)
    (out / "results.json").write_text(text + "\n", encoding="utf-8")
    report.save_figures(out)
    log(f"Wrote {out}; total wall time {results['wall_time_s']:.0f} s")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: run the benchmark, or print the README table of stored results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, rounds and epochs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the README table of OUT/results.json and exit (runs nothing)",
    )
    args = parser.parse_args(argv)
    if args.table:
        print(report.readme_table(report.load_results(args.out)))
        return
    run_benchmarks(QUICK if args.quick else FULL, args.out)


if __name__ == "__main__":
    main()
