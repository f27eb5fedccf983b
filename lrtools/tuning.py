"""Search the learning rate (and optionally the schedule) with keras-tuner.

:func:`search_learning_rate` tries rates on a log scale between ``min_lr`` and
``max_lr`` with one of keras-tuner's strategies (a log grid, random search,
Bayesian optimisation, Hyperband), optionally crossed with a choice of
schedules, and returns the best rate with a pandas DataFrame of every trial.

It runs unchanged on keras-tuner's distributed mode: start the same script on
a chief and on workers with keras-tuner's environment variables
(``KERASTUNER_TUNER_ID`` = ``"chief"`` / ``"tuner0"``, ``"tuner1"``, ...,
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``). The chief hands out the
trials, the workers train them, and the chief's call returns all results.

keras-tuner and pandas are imported only when a search runs, so ``lrtools``
itself needs nothing beyond Keras and NumPy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from lrtools._checks import check_choice, check_count, check_flag, check_rate
from lrtools._extras import require

if TYPE_CHECKING:
    import keras_tuner
    import pandas

__all__ = ["LRSearchResult", "search_learning_rate", "STRATEGIES"]

STRATEGIES = ("grid", "random", "bayesian", "hyperband")
"""The search strategies :func:`search_learning_rate` accepts."""

CONSTANT = "constant"
"""The schedule name recorded when no ``schedules`` are given (a constant rate)."""

ScheduleFactory = Callable[[float, int, int], keras.optimizers.schedules.LearningRateSchedule]


@dataclasses.dataclass(frozen=True)
class LRSearchResult:
    """The outcome of :func:`search_learning_rate`.

    Attributes:
        best_learning_rate: the rate of the best trial (for a schedule, the
            rate the schedule factory received: its peak or initial rate).
        best_schedule: the name of the best trial's schedule (a key of
            ``schedules``, or ``"constant"`` when none were given).
        objective: the name of the metric that ranked the trials, e.g.
            ``"val_loss"``.
        trials: a ``pandas.DataFrame``, one row per trial in the order they
            were created, with columns ``trial_id``, ``learning_rate``,
            ``schedule``, the objective, ``steps`` (optimizer steps the
            model had trained when the objective was recorded, counting the
            epochs a Hyperband trial inherited), ``epochs`` (the epoch the
            trial trained up to) and ``status`` (keras-tuner's, e.g.
            ``"COMPLETED"``). A diverged trial is kept, with the worst
            possible objective (``inf`` for a loss). A trial that failed
            (raised) is listed with its status and a NaN objective, and never
            counts as the best.
        tuner: the keras-tuner tuner, for anything more (its files are gone if
            the search ran in a temporary directory).
    """

    best_learning_rate: float
    best_schedule: str
    objective: str
    trials: pandas.DataFrame
    tuner: keras_tuner.Tuner


def search_learning_rate(
    build_model: Callable[[Any], keras.Model],
    x: Any,
    y: Any,
    *,
    validation_data: tuple[Any, Any] | None,
    strategy: str = "random",
    min_lr: float = 1e-5,
    max_lr: float = 1.0,
    max_trials: int = 10,
    epochs: int = 1,
    batch_size: int = 32,
    schedules: Mapping[str, ScheduleFactory | None] | None = None,
    objective: str | keras_tuner.Objective = "val_loss",
    directory: str | os.PathLike | None = None,
    project_name: str = "learning_rate_search",
    overwrite: bool = True,
    seed: int | None = None,
    verbose: int = 0,
    fit_kwargs: Mapping[str, Any] | None = None,
    tuner_kwargs: Mapping[str, Any] | None = None,
) -> LRSearchResult | None:
    """Search the learning rate on a log scale with keras-tuner.

    Every trial builds a fresh model with ``build_model``, trains it with
    ``model.fit(x, y, epochs=epochs, batch_size=batch_size,
    validation_data=validation_data)`` and is ranked by ``objective``. The rate
    is a ``hp.Float("learning_rate", min_lr, max_lr, sampling="log")``
    (``"grid"``: a ``hp.Choice`` of log-spaced rates); with ``schedules``, the
    schedule is a ``hp.Choice("schedule", ...)`` as well.

    Strategies:

    - ``"grid"``: ``keras_tuner.GridSearch`` over ``max_trials //
      len(schedules)`` rates spaced geometrically from ``min_lr`` to
      ``max_lr`` (both included), each with every schedule.
    - ``"random"``: ``keras_tuner.RandomSearch``, ``max_trials`` trials.
    - ``"bayesian"``: ``keras_tuner.BayesianOptimization``, ``max_trials`` trials.
    - ``"hyperband"``: ``keras_tuner.Hyperband`` with ``max_epochs=epochs``;
      keras-tuner derives the number of trials from ``epochs`` and its
      ``factor`` (pass ``tuner_kwargs={"factor": 3}``), so ``max_trials`` is
      not used. A continued trial restarts the optimizer at step
      ``initial_epoch * steps_per_epoch``, so its schedule continues too.

    Distributed search: call this function with the same arguments on the
    chief and on every worker, configured by keras-tuner's environment
    variables. The chief serves the trials and returns the result of all of
    them once every worker has finished; a worker trains the trials it is
    given and returns ``None``. With ``"hyperband"``, all processes must share
    ``directory`` (continued trials load the weights their earlier round
    saved) and pass ``overwrite=False`` on the workers, so that they do not
    delete each other's files.

    Args:
        build_model: ``build_model(learning_rate)`` returns a new *compiled*
            Keras model whose optimizer uses ``learning_rate``, which is a
            float (constant rate) or a ``LearningRateSchedule`` (made by a
            factory of ``schedules``). The model's loss and metrics are
            yours; ``objective`` must be one of the logs of ``fit``.
        x, y: the training data, NumPy arrays (or nested structures of arrays)
            as for ``model.fit``.
        validation_data: ``(x_val, y_val)``, used for the objective; ``None``
            only with an objective that ``fit`` logs without it (``"loss"``, or a
            ``"val_"`` metric with ``fit_kwargs={"validation_split": 0.2}``).
        strategy: one of ``"grid"``, ``"random"``, ``"bayesian"``, ``"hyperband"``.
        min_lr, max_lr: the range of rates, ``0 < min_lr < max_lr``.
        max_trials: the number of trials (see the strategies).
        epochs: training epochs per trial (Hyperband: the most per trial).
        batch_size: the batch size of ``fit``.
        schedules: ``None`` to search a constant rate, or a dict from a name to
            a factory ``factory(learning_rate, steps_per_epoch, epochs)`` that
            returns a ``LearningRateSchedule`` (``None`` instead of a factory
            stands for the constant rate). Example:
            ``{"constant": None, "cosine": lambda lr, steps, epochs:
            lrtools.schedules.CosineDecay(lr, decay_steps=steps * epochs)}``.
        objective: the one metric to optimise, a name from the logs of ``fit``
            (its direction inferred by keras-tuner, e.g. ``"val_loss"``
            minimised, ``"val_accuracy"`` maximised) or a
            ``keras_tuner.Objective``.
        directory: where keras-tuner keeps its files; ``None`` uses a
            temporary directory that is removed when the search ends.
        project_name: the sub-directory of ``directory`` for this search.
        overwrite: start afresh (``True``) or resume a search found in
            ``directory/project_name``.
        seed: the tuner's random seed, for a reproducible search.
        verbose: verbosity of keras-tuner and ``fit``.
        fit_kwargs: more keyword arguments for ``model.fit`` (e.g.
            ``{"callbacks": [...], "shuffle": False}``).
        tuner_kwargs: more keyword arguments for the keras-tuner tuner (e.g.
            ``{"factor": 3}`` for Hyperband, ``{"num_initial_points": 2}``
            for Bayesian optimisation).

    Returns:
        An :class:`LRSearchResult` (best rate, best schedule, DataFrame of all
        trials), or ``None`` on a keras-tuner worker in distributed mode.

    Raises:
        ValueError: for an unknown ``strategy``, ``min_lr >= max_lr``, a
            non-positive or non-finite rate, ``max_trials``, ``epochs`` or
            ``batch_size`` below 1 (or not whole), a negative ``seed``, empty
            ``schedules``, fewer ``max_trials`` than schedules for ``"grid"``,
            or ``fit_kwargs`` / ``tuner_kwargs`` that set what this function
            sets (``epochs``, ``objective``, ...).
        TypeError: if ``strategy`` is not a string, a rate or a count is not a
            number, ``overwrite`` is not a ``bool``, ``schedules`` is not a dict
            of names, ``build_model`` or a schedule factory is not callable, a
            factory returns no ``LearningRateSchedule``, or ``build_model``
            returns a model that is not compiled (the last two as keras-tuner's
            ``FatalTypeError``, a ``TypeError`` that stops the search).
        RuntimeError: if no trial completed: failed trials never count, and
            the message quotes the first trial's error (for example an
            objective such as ``"val_loss"`` that ``fit`` does not log because
            there is no validation data).
        ImportError: if keras-tuner or pandas is not installed (the
            ``[tuning]`` extra).

    Example::

        def build_model(learning_rate):
            model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            return model

        result = search_learning_rate(
            build_model, x_train, y_train, validation_data=(x_val, y_val),
            strategy="grid", min_lr=1e-4, max_lr=1.0, max_trials=5, epochs=2,
        )
        result.best_learning_rate, result.trials
    """
    require("keras_tuner", extra="tuning", feature="search_learning_rate()")
    require("pandas", extra="tuning", feature="search_learning_rate()")
    if not callable(build_model):
        raise TypeError(
            f"build_model must be a function learning_rate -> compiled model; got {build_model!r}."
        )
    strategy = check_choice("strategy", strategy, STRATEGIES)
    min_lr, max_lr = _check_rate_range(min_lr, max_lr)
    max_trials = check_count("max_trials", max_trials)
    epochs = check_count("epochs", epochs)
    batch_size = check_count("batch_size", batch_size)
    schedules = _check_schedules(schedules)
    hypermodel = _learning_rate_hypermodel(
        build_model,
        min_lr=min_lr,
        max_lr=max_lr,
        grid_rates=_grid_rates(strategy, min_lr, max_lr, max_trials, len(schedules)),
        schedules=schedules,
        steps_per_epoch=math.ceil(len(keras.tree.flatten(x)[0]) / batch_size),
        epochs=epochs,
    )
    fit_arguments = {
        "epochs": epochs,
        "batch_size": batch_size,
        "validation_data": validation_data,
        "verbose": verbose,
    }
    _check_no_overlap("fit_kwargs", fit_kwargs, fit_arguments)
    tuner_arguments = {
        "objective": objective,
        "max_trials": max_trials,
        "max_epochs": epochs,
        "seed": None if seed is None else check_count("seed", seed, minimum=0),
        "project_name": project_name,
        "overwrite": check_flag("overwrite", overwrite),
    }
    _check_no_overlap("tuner_kwargs", tuner_kwargs, {**tuner_arguments, "directory": directory})
    with _tuner_directory(directory) as tuner_directory:
        tuner = _make_tuner(
            strategy,
            hypermodel,
            {**tuner_arguments, "directory": tuner_directory},
            tuner_kwargs or {},
        )
        hypermodel.objective = tuner.oracle.objective
        _run_search(tuner, x, y, {**fit_arguments, **(fit_kwargs or {})})
        if _is_distributed_worker():
            return None
        return _collect_results(tuner, schedules, epochs)


def _check_rate_range(min_lr: Any, max_lr: Any) -> tuple[float, float]:
    """Return ``(min_lr, max_lr)`` as floats, two positive finite rates in increasing order."""
    min_lr, max_lr = check_rate("min_lr", min_lr), check_rate("max_lr", max_lr)
    if min_lr >= max_lr:
        raise ValueError(f"`min_lr` ({min_lr}) must be smaller than `max_lr` ({max_lr}).")
    return min_lr, max_lr


def _grid_rates(
    strategy: str, min_lr: float, max_lr: float, max_trials: int, num_schedules: int
) -> list[float] | None:
    """The rates of a ``"grid"`` search (``None`` for the other strategies)."""
    if strategy != "grid":
        return None
    rates_per_schedule = max_trials // num_schedules
    if rates_per_schedule < 1:
        raise ValueError(
            f"A grid over {num_schedules} schedules needs `max_trials` >= {num_schedules}; "
            f"got {max_trials}."
        )
    return [float(rate) for rate in np.geomspace(min_lr, max_lr, rates_per_schedule)]


def _tuner_directory(directory: str | os.PathLike | None) -> Any:
    """A context that gives keras-tuner's directory: ``directory``, or a temporary one."""
    if directory is None:
        return tempfile.TemporaryDirectory(prefix="lrtools_search_")
    return contextlib.nullcontext(os.fspath(directory))


def _run_search(tuner: keras_tuner.Tuner, x: Any, y: Any, fit_arguments: Mapping[str, Any]) -> None:
    """Run the search; if keras-tuner gives up before any trial completed, say why trials failed.

    keras-tuner stops a search after a few consecutive failed trials (its
    ``max_consecutive_failed_trials``) with the last failure's traceback; when no
    trial completed at all, the error raised instead names the first failure.
    """
    try:
        tuner.search(x, y, **fit_arguments)
    except RuntimeError as error:
        if _completed_trials(tuner) or not tuner.oracle.trials:
            raise
        raise _no_trial_completed(tuner) from error


def _trials_in_order(tuner: keras_tuner.Tuner) -> list[Any]:
    """The trials in the order they were created: ids "0", "1", ..., "10", not "10", "2"."""
    items = sorted(tuner.oracle.trials.items(), key=lambda item: (len(item[0]), item[0]))
    return [trial for _, trial in items]


def _completed_trials(tuner: keras_tuner.Tuner) -> list[Any]:
    """The trials that completed (a diverged trial completes, with the worst objective)."""
    return [trial for trial in tuner.oracle.trials.values() if str(trial.status) == "COMPLETED"]


def _no_trial_completed(tuner: keras_tuner.Tuner) -> RuntimeError:
    """The error for a search without a completed trial: it quotes the first trial's error."""
    trials = _trials_in_order(tuner)
    failed = [trial for trial in trials if trial.message]
    if not failed:
        return RuntimeError(
            f"None of the {len(trials)} trials completed, so there is no best learning rate. "
            "Run with verbose=1 to see why the trials failed."
        )
    first = failed[0]
    rate = first.hyperparameters.values.get("learning_rate")
    return RuntimeError(
        f"Every one of the {len(trials)} trials failed, so there is no best learning rate. "
        f"The first failure (trial {first.trial_id}, learning_rate={rate}) was:\n"
        f"{first.message.strip()}"
    )


def _check_no_overlap(
    name: str, extra: Mapping[str, Any] | None, arguments: Mapping[str, Any]
) -> None:
    """Refuse extra keyword arguments that search_learning_rate sets itself."""
    overlap = sorted(set(extra or {}) & set(arguments))
    if overlap:
        raise ValueError(
            f"{name} must not set {overlap}: pass them as arguments of search_learning_rate."
        )


def _check_schedules(
    schedules: Mapping[str, ScheduleFactory | None] | None,
) -> dict[str, ScheduleFactory | None]:
    """Validate `schedules` and return it as a dict (a constant rate when None)."""
    if schedules is None:
        return {CONSTANT: None}
    expected = (
        "`schedules` must be None or a non-empty dict name -> factory(lr, steps_per_epoch, "
        f"epochs) (or None for a constant rate); got {schedules!r}."
    )
    if not isinstance(schedules, Mapping):
        raise TypeError(expected)
    if not schedules:
        raise ValueError(expected)
    for name, factory in schedules.items():
        if not isinstance(name, str):
            raise TypeError(f"Schedule names must be strings; got {name!r} in `schedules`.")
        if factory is not None and not callable(factory):
            raise TypeError(
                f"schedules[{name!r}] must be a function (lr, steps_per_epoch, epochs) -> "
                f"LearningRateSchedule, or None for a constant rate; got {factory!r}."
            )
    return dict(schedules)


def _learning_rate_hypermodel(
    build_model: Callable[[Any], keras.Model],
    *,
    min_lr: float,
    max_lr: float,
    grid_rates: list[float] | None,
    schedules: dict[str, ScheduleFactory | None],
    steps_per_epoch: int,
    epochs: int,
) -> keras_tuner.HyperModel:
    """The keras-tuner HyperModel that declares the rate (and schedule) and trains."""
    import keras_tuner

    class LearningRateHyperModel(keras_tuner.HyperModel):
        # Set once the tuner has resolved the objective (its name and direction).
        objective: keras_tuner.Objective | None = None

        def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
            if grid_rates is None:
                rate = hp.Float("learning_rate", min_lr, max_lr, sampling="log")
            else:
                rate = hp.Choice("learning_rate", grid_rates, ordered=True)
            name = (
                hp.Choice("schedule", list(schedules))
                if len(schedules) > 1
                else next(iter(schedules))
            )
            factory = schedules.get(name)
            learning_rate = rate
            if factory is not None:
                learning_rate = factory(rate, steps_per_epoch, epochs)
                if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
                    raise keras_tuner.errors.FatalTypeError(
                        f"schedules[{name!r}] returned {learning_rate!r}; a schedule factory "
                        "must return a keras.optimizers.schedules.LearningRateSchedule."
                    )
            model = build_model(learning_rate)
            if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
                raise keras_tuner.errors.FatalTypeError(
                    "build_model(learning_rate) must return a compiled keras.Model whose "
                    f"optimizer uses learning_rate; got {model!r}."
                )
            return model

        def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, **kwargs):
            initial_epoch = kwargs.get("initial_epoch", 0)
            model.optimizer.iterations.assign(initial_epoch * steps_per_epoch)
            kwargs["callbacks"] = [
                _LogSteps(),
                keras.callbacks.TerminateOnNaN(),
                *kwargs.get("callbacks", []),
            ]
            history = model.fit(*args, **kwargs)
            name = self.objective.name
            if name not in history.history:
                logged = [key for key in history.history if key != "steps"]  # "steps" is ours
                raise ValueError(
                    f"The objective {name!r} is not among the logs of fit "
                    f"({', '.join(logged)}). Pass validation_data for a 'val_' "
                    "objective, or choose another objective."
                )
            worst = math.inf if self.objective.direction == "min" else -math.inf
            history.history[name] = [
                value if math.isfinite(value) else worst for value in history.history[name]
            ]
            return history

    return LearningRateHyperModel()


class _LogSteps(keras.callbacks.Callback):
    """Add the optimizer's step count to the epoch logs as ``steps``."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["steps"] = int(self.model.optimizer.iterations)


def _make_tuner(
    strategy: str,
    hypermodel: keras_tuner.HyperModel,
    tuner_arguments: Mapping[str, Any],
    tuner_kwargs: Mapping[str, Any],
) -> keras_tuner.Tuner:
    """Create the keras-tuner tuner for `strategy`.

    `tuner_arguments` holds both ``max_trials`` and ``max_epochs``; each tuner
    gets the one it takes (Hyperband: ``max_epochs``, the others: ``max_trials``).
    """
    import keras_tuner

    tuner_class = {
        "grid": keras_tuner.GridSearch,
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
        "hyperband": keras_tuner.Hyperband,
    }[strategy]
    unused = "max_trials" if strategy == "hyperband" else "max_epochs"
    arguments = {key: value for key, value in tuner_arguments.items() if key != unused}
    return tuner_class(hypermodel=hypermodel, **arguments, **tuner_kwargs)


def _is_distributed_worker() -> bool:
    """Whether keras-tuner's environment variables make this process a worker."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def _collect_results(
    tuner: keras_tuner.Tuner, schedules: dict[str, ScheduleFactory | None], epochs: int
) -> LRSearchResult:
    """Gather the oracle's trials into an :class:`LRSearchResult`."""
    import pandas

    objective = tuner.oracle.objective.name
    rows = []
    for trial in _trials_in_order(tuner):
        trial_id = trial.trial_id
        values = trial.hyperparameters.values

        def last(metric: str, trial=trial) -> float:
            if trial.metrics.exists(metric):
                return trial.metrics.get_last_value(metric)
            return math.nan

        rows.append(
            {
                "trial_id": trial_id,
                "learning_rate": float(values["learning_rate"]),
                "schedule": values.get("schedule", next(iter(schedules))),
                objective: last(objective),
                "steps": last("steps"),
                "epochs": values.get("tuner/epochs", epochs),
                "status": str(trial.status),
            }
        )
    # keras-tuner ranks failed trials after the completed ones, and returns one when no
    # trial completed: a failed trial never counts here.
    if not _completed_trials(tuner):
        raise _no_trial_completed(tuner)
    best = tuner.oracle.get_best_trials(1)[0].hyperparameters.values
    return LRSearchResult(
        best_learning_rate=float(best["learning_rate"]),
        best_schedule=best.get("schedule", next(iter(schedules))),
        objective=objective,
        trials=pandas.DataFrame(rows),
        tuner=tuner,
    )
