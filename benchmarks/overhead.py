"""Measurement 1: what a schedule or a callback adds to a training step, against its floor.

The time of a training step with a constant rate, with each ``lrtools.schedules``
schedule inside the optimizer, with Keras's nearest built-in schedule for each
(:data:`KERAS_MATCH`), with a per-batch callback whose ``on_train_batch_begin``
does nothing (what Keras charges any per-batch callback), with
``lrtools.callbacks.LRScheduler(unit="batch")`` and ``OneCycle``, and with Keras's
``LearningRateScheduler``. The variants run round-robin (interleaved) for several
rounds; each run times a fixed number of steps after a few untimed warm-up steps
(tracing included). Each variant's figure is the median over rounds of its ratio
to a run of the same round: the constant rate for every variant, and its floor
(:func:`floor_pairs`) for the schedules and the callbacks the targets are about.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmarks.common import BATCH_SIZE, DATA_SEED, LOSS, log, target
from lrtools import callbacks, schedules
from lrtools.data import Dataset, load_digits
from lrtools.models import digits_cnn

NAME = "overhead"
TABLES = ("overhead_runs.csv", "overhead.csv", "overhead_floors.csv")
FIGURE = "overhead.png"

MODEL = digits_cnn
MOMENTUM = 0.9
RATE = 0.01  # the (peak or initial) rate of every variant
TOTAL_STEPS = 1000  # the length the schedules are set up for, longer than any run
STEPS_PER_EXECUTION = 1  # Keras's default: batch callbacks run at every step
BASELINE_EVERY = 5  # the baseline runs again after this many other variants
# Issue 14's targets: upper bounds on a step-time ratio to a floor measured in the same round.
KERAS_MATCH_TARGET = 1.02  # every lrtools schedule / Keras's nearest built-in
CONSTANT_TARGET = 1.02  # the median over lrtools schedules of schedule / constant rate
BATCH_CALLBACK_TARGET = 1.03  # every targeted batch callback / the do-nothing batch callback

SCHEDULE_IN_OPTIMIZER = "schedule in the optimizer"
KERAS_SCHEDULE = "Keras schedule in the optimizer"
BATCH_CALLBACK = "batch callback"
IMPURE_CALLBACK = "batch callback, impure function"
EMPTY_CALLBACK = "do-nothing batch callback"
EPOCH_CALLBACK = "epoch callback"
BASELINE = "baseline"
NOISE_CHECK = "noise check (same as baseline)"

EMPTY_CALLBACK_NAME = "do-nothing batch callback"
KERAS_MATCH = {
    "Constant": "constant rate",  # Keras has no constant schedule: a float rate is its own
    "StepDecay": "Keras ExponentialDecay(staircase=True)",  # the same formula
    "MultiStepDecay": "Keras PiecewiseConstantDecay",  # the same formula
    "ExponentialDecay": "Keras ExponentialDecay",
    "TimeDecay": "Keras InverseTimeDecay",
    "LinearDecay": "Keras PolynomialDecay(power=1)",
    "PolynomialDecay": "Keras PolynomialDecay(power=2)",
    "CosineDecay": "Keras CosineDecay",
    "CosineRestarts": "Keras CosineDecayRestarts",
    "CyclicLR": "Keras CosineDecayRestarts(t_mul=1)",  # the nearest periodic built-in
    "OneCycle": "Keras CosineDecay(warm-up)",  # a rise then a cosine fall
    "Warmup": "Keras CosineDecay(warm-up)",
    "WarmupStableDecay": "Keras CosineDecay(warm-up)",  # warm-up, then a fall
    "Sequential": "Keras CosineDecay",  # a constant phase then CosineDecay: no built-in chains
    "Scaled": "Keras CosineDecay",  # the schedule it scales
}
"""lrtools schedule -> the variant of Keras's nearest built-in schedule (its floor)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        rounds: round-robin rounds over all variants.
        steps: timed steps per run.
        warmup_steps: untimed steps at the start of every run (tracing).
    """

    rounds: int
    steps: int
    warmup_steps: int


FULL = Settings(rounds=10, steps=100, warmup_steps=5)
QUICK = dataclasses.replace(FULL, rounds=2, steps=30)


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
        kind: :data:`BASELINE`, :data:`NOISE_CHECK`, :data:`SCHEDULE_IN_OPTIMIZER`,
            :data:`BATCH_CALLBACK` or :data:`EPOCH_CALLBACK`.
        learning_rate: what the SGD optimizer is compiled with (a float or a schedule).
        make_callbacks: returns the callbacks of the run (new ones per model).
    """

    name: str
    kind: str
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
    make_callbacks: Callable[[], list[keras.callbacks.Callback]] = list


def scheduled_variants(total_steps: int = TOTAL_STEPS, rate: float = RATE) -> list[Variant]:
    """Every ``lrtools.schedules`` schedule, inside the optimizer, with ordinary arguments.

    Raises:
        RuntimeError: if ``lrtools.schedules`` has a schedule this list misses.
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
    return [Variant(name, SCHEDULE_IN_OPTIMIZER, value) for name, value in scheduled.items()]


def keras_variants(total_steps: int = TOTAL_STEPS, rate: float = RATE) -> list[Variant]:
    """Keras's built-in schedules that :data:`KERAS_MATCH` names, set up like the lrtools ones."""
    quarter, built_in = total_steps // 4, keras.optimizers.schedules
    scheduled = {
        "Keras ExponentialDecay(staircase=True)": built_in.ExponentialDecay(
            rate, quarter, 0.5, staircase=True
        ),
        "Keras PiecewiseConstantDecay": built_in.PiecewiseConstantDecay(
            [2 * quarter, 3 * quarter], [rate, rate / 10, rate / 100]
        ),
        "Keras ExponentialDecay": built_in.ExponentialDecay(rate, quarter, 0.5),
        "Keras InverseTimeDecay": built_in.InverseTimeDecay(rate, quarter, 1.0),
        "Keras PolynomialDecay(power=1)": built_in.PolynomialDecay(rate, total_steps, 0.0),
        "Keras PolynomialDecay(power=2)": built_in.PolynomialDecay(
            rate, total_steps, 0.0, power=2.0
        ),
        "Keras CosineDecay": built_in.CosineDecay(rate, total_steps),
        "Keras CosineDecayRestarts": built_in.CosineDecayRestarts(rate, quarter, t_mul=2.0),
        "Keras CosineDecayRestarts(t_mul=1)": built_in.CosineDecayRestarts(
            rate, quarter // 2, t_mul=1.0
        ),
        "Keras CosineDecay(warm-up)": built_in.CosineDecay(
            rate / 25, total_steps - quarter, warmup_target=rate, warmup_steps=quarter
        ),
    }
    return [Variant(name, KERAS_SCHEDULE, value) for name, value in scheduled.items()]


class EmptyBatchCallback(keras.callbacks.Callback):
    """A callback whose ``on_train_batch_begin`` does nothing: the floor of any batch callback."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass


def floor_pairs() -> list[tuple[str, str, str]]:
    """The comparisons the targets are about: (variant, its floor, what kind of floor).

    Every lrtools schedule against Keras's nearest built-in (:data:`KERAS_MATCH`)
    and against the constant rate; every batch callback against the do-nothing one.
    """
    pairs = [(name, match, "Keras built-in") for name, match in KERAS_MATCH.items()]
    pairs += [(name, "constant rate", "constant rate") for name in KERAS_MATCH]
    callbacks_ = [v.name for v in overhead_variants() if v.kind == BATCH_CALLBACK]
    pairs += [(name, EMPTY_CALLBACK_NAME, "do-nothing callback") for name in callbacks_]
    return pairs


def overhead_variants(total_steps: int = TOTAL_STEPS, rate: float = RATE) -> list[Variant]:
    """The constant-rate baseline (twice), every schedule, the callbacks; the baseline first.

    Args:
        total_steps: the length the schedules are set up for (every one is in its
            changing part during the measurement; their cost does not depend on it).
        rate: the (peak or initial) rate.

    Returns:
        The variants, the baseline first.
    """
    quarter = total_steps // 4
    return [
        Variant("constant rate", BASELINE, rate),
        # A second model with exactly the baseline's setup: its ratio shows the noise.
        Variant("constant rate, second model", NOISE_CHECK, rate),
        *scheduled_variants(total_steps, rate),
        *keras_variants(total_steps, rate),
        Variant(EMPTY_CALLBACK_NAME, EMPTY_CALLBACK, rate, lambda: [EmptyBatchCallback()]),
        Variant(
            "LRScheduler(CosineDecay)",
            BATCH_CALLBACK,
            rate,
            lambda: [callbacks.LRScheduler(schedules.CosineDecay(rate, total_steps))],
        ),
        Variant(
            "LRScheduler(Python function, pure=True)",
            BATCH_CALLBACK,
            rate,
            lambda: [callbacks.LRScheduler(lambda step: rate * 0.5 ** (step / quarter), pure=True)],
        ),
        Variant(
            "LRScheduler(Python function)",
            IMPURE_CALLBACK,
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


def _compiled_models(variants: Sequence[Variant], data: Dataset) -> dict[str, keras.Model]:
    """One digits CNN per variant (same seed, so the same weights), SGD with momentum."""
    models = {}
    for variant in variants:
        keras.utils.set_random_seed(0)
        model = MODEL(data.input_shape, data.num_classes)
        model.compile(
            optimizer=keras.optimizers.SGD(variant.learning_rate, momentum=MOMENTUM),
            loss=LOSS,
            metrics=["accuracy"],
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        models[variant.name] = model
    return models


def _time_round(variants, models, made_callbacks, x, y, settings, rng) -> pd.DataFrame:
    """One round: every variant once (the baseline several times), ratios to the baseline."""
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
            callbacks=[timer, *made_callbacks[variant.name]],
        )
        times = np.asarray(timer.times)
        timed = np.diff(times[settings.warmup_steps :])
        rows.append(
            {
                "variant": variant.name,
                "kind": variant.kind,
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
    return frame


def measure(settings: Settings) -> dict[str, pd.DataFrame]:
    """Time training steps under every variant, interleaved, and compare to the baseline.

    Every variant gets its own compiled model. For each round, the variants
    run in the order of :func:`round_order`, each one ``fit`` call of
    ``warm-up + timed + 1`` batches on the same data in the same order. A run's
    step time is the median of its timed step-to-step intervals (a step, plus
    one call of every callback's batch hooks); the median keeps a burst of
    another process on the shared machine out of it, while work done at every
    step stays in. A run's ratio divides it by the median of the baseline's
    runs in the same round.

    Args:
        data: the digits data set.
        settings: the rounds and steps.

    Returns:
        ``overhead_runs.csv`` (one row per run: ``step_ms``, ``mean_step_ms``,
        ``first_step_s`` with tracing, ``ratio``, ``extra_ms``) and
        ``overhead.csv`` (:func:`per_variant`) and ``overhead_floors.csv``
        (:func:`floors`).
    """
    data = load_digits(kind="images", seed=DATA_SEED)
    variants = overhead_variants()
    batches = settings.warmup_steps + settings.steps + 1
    x = np.resize(data.x_train, (batches * BATCH_SIZE, *data.x_train.shape[1:]))
    y = np.resize(data.y_train, (batches * BATCH_SIZE,))
    models = _compiled_models(variants, data)
    made_callbacks = {variant.name: variant.make_callbacks() for variant in variants}
    rng = np.random.default_rng(0)
    rounds = []
    for number in range(settings.rounds):
        frame = _time_round(variants, models, made_callbacks, x, y, settings, rng)
        frame.insert(2, "round", number)
        rounds.append(frame)
        worst = frame.loc[frame["ratio"].idxmax()]
        log(
            f"[overhead] round {number + 1}/{settings.rounds}: baseline "
            f"{frame.loc[frame['kind'] == BASELINE, 'step_ms'].median():.2f} ms/step, "
            f"highest ratio {worst['ratio']:.3f} ({worst['variant']})"
        )
    runs = pd.concat(rounds, ignore_index=True)
    return {
        "overhead_runs.csv": runs,
        "overhead.csv": per_variant(runs),
        "overhead_floors.csv": floors(runs),
    }


def per_variant(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: its median ratio over rounds, quartiles, extremes, median times.

    Within a round, the baseline's own runs count once, by their median.
    """
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
    return summary.loc[[variant.name for variant in overhead_variants()]].reset_index()


def floors(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of :func:`floor_pairs`: the median over rounds of variant / floor.

    Both step times come from the same round (a variant's runs of a round count
    once, by their median), so a slow spell of the shared machine hits both.
    """
    step = runs.groupby(["variant", "round"])["step_ms"].median().unstack("variant")
    rows = []
    for variant, floor, kind in floor_pairs():
        ratios = step[variant] / step[floor]
        rows.append(
            {
                "variant": variant,
                "floor": floor,
                "floor_kind": kind,
                "median_ratio": ratios.median(),
                "ratio_q1": ratios.quantile(0.25),
                "ratio_q3": ratios.quantile(0.75),
                "ratio_min": ratios.min(),
                "ratio_max": ratios.max(),
                "median_extra_ms": (step[variant] - step[floor]).median(),
            }
        )
    return pd.DataFrame(rows)


def _percent(ratio: float) -> str:
    """A ratio target as a percentage, e.g. 1.02 -> '2 %'."""
    return f"{100 * (ratio - 1):.0f} %"


def _worst(frame: pd.DataFrame) -> pd.Series:
    return frame.loc[frame["median_ratio"].idxmax()]


def summarize(tables: dict[str, pd.DataFrame], settings: Settings) -> dict[str, Any]:
    """The entry of results.json: set-up, every variant, the floors, the headline, the targets."""
    summary, pairs = tables["overhead.csv"], tables["overhead_floors.csv"]
    by_kind = dict(tuple(summary.groupby("kind")))
    by_floor = dict(tuple(pairs.groupby("floor_kind")))
    schedules_only, batch_callbacks = by_kind[SCHEDULE_IN_OPTIMIZER], by_kind[BATCH_CALLBACK]
    worst_schedule, worst_callback = _worst(schedules_only), _worst(batch_callbacks)
    worst_match = _worst(by_floor["Keras built-in"])
    worst_on_floor = _worst(by_floor["do-nothing callback"])
    median_on_constant = by_floor["constant rate"]["median_ratio"].median()
    noise = by_kind[NOISE_CHECK].iloc[0]
    empty = by_kind[EMPTY_CALLBACK].iloc[0]
    return {
        "setup": {
            "model": MODEL.__name__,
            "optimizer": f"SGD, momentum {MOMENTUM:g}",
            "batch_size": BATCH_SIZE,
            "steps_per_execution": STEPS_PER_EXECUTION,
            "rate": RATE,
            "schedule_steps": TOTAL_STEPS,
            "baseline_every": BASELINE_EVERY,
            "keras_match": KERAS_MATCH,
        },
        "baseline_step_ms": float(by_kind[BASELINE]["median_step_ms"].iloc[0]),
        "variants": summary.to_dict(orient="records"),
        "floors": pairs.to_dict(orient="records"),
        "headline": {
            "worst_schedule": str(worst_schedule["variant"]),
            "worst_schedule_ratio": float(worst_schedule["median_ratio"]),
            "median_schedule_ratio": float(median_on_constant),
            "worst_schedule_vs_keras": str(worst_match["variant"]),
            "worst_schedule_vs_keras_floor": str(worst_match["floor"]),
            "worst_schedule_vs_keras_ratio": float(worst_match["median_ratio"]),
            "noise_check_ratio": float(noise["median_ratio"]),
            "noise_check_range": [float(noise["ratio_min"]), float(noise["ratio_max"])],
            "empty_callback_ratio": float(empty["median_ratio"]),
            "worst_batch_callback": str(worst_callback["variant"]),
            "worst_batch_callback_ratio": float(worst_callback["median_ratio"]),
            "worst_batch_callback_vs_empty": str(worst_on_floor["variant"]),
            "worst_batch_callback_vs_empty_ratio": float(worst_on_floor["median_ratio"]),
        },
        "targets": [
            target(
                f"every schedule in the optimizer within {_percent(KERAS_MATCH_TARGET)} of "
                "Keras's nearest built-in (worst median ratio)",
                worst_match["median_ratio"],
                KERAS_MATCH_TARGET,
                "ratio",
            ),
            target(
                f"schedules in the optimizer within {_percent(CONSTANT_TARGET)} of a constant "
                "rate (median over schedules of their median ratios)",
                median_on_constant,
                CONSTANT_TARGET,
                "ratio",
            ),
            target(
                f"LRScheduler (batch unit) and OneCycle within {_percent(BATCH_CALLBACK_TARGET)} "
                "of a do-nothing batch callback (worst median ratio)",
                worst_on_floor["median_ratio"],
                BATCH_CALLBACK_TARGET,
                "ratio",
            ),
        ],
    }


def draw(tables: dict[str, pd.DataFrame], entry: dict[str, Any]) -> Figure:
    """Left: step time / constant rate per variant. Right: / its floor, with the targets."""
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 8), gridspec_kw={"width_ratios": [1, 1]}, sharex=False
    )
    rows = tables["overhead.csv"].reset_index(drop=True)
    _ratio_bars(left, rows, "kind")
    left.set(xlabel="step time ÷ constant-rate step time", ylabel="")
    left.set_title("Against a constant rate")
    left.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.04))
    pairs = tables["overhead_floors.csv"]
    pairs = pairs[pairs["floor_kind"] != "constant rate"].reset_index(drop=True)
    pairs["variant"] = pairs["variant"] + " ÷ " + pairs["floor"]
    _ratio_bars(right, pairs, "floor_kind")
    for goal, style in zip([entry["targets"][0], entry["targets"][2]], (":", "--")):
        threshold = goal["threshold"]
        right.axvline(threshold, color="0.4", linestyle=style, label=f"target ≤ {threshold:g}")
    right.set(xlabel="step time ÷ its floor's step time (same round)", ylabel="")
    right.set_title("Against its floor")
    right.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.04))
    fig.suptitle("Cost of a training step (median over rounds; bars: quartiles)")
    fig.tight_layout()
    return fig


def _ratio_bars(ax: Any, rows: pd.DataFrame, hue: str) -> None:
    """One point per row at its median ratio, bars from the lower to the upper quartile."""
    for kind, frame in rows.groupby(hue, sort=False):
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
    ax.axvline(1.0, color="0.7", linewidth=0.8)
    ax.set_yticks(list(range(len(rows))), rows["variant"], fontsize="small")
    ax.invert_yaxis()
