"""Train one model under several rates, schedules or optimizers, over several seeds.

The book compares training setups again and again: five fixed rates, six decay
schedules, seven optimizers. :func:`run_experiment` does that loop once, the
same way everywhere: for every setup and every seed it seeds Keras, builds a
fresh model (so all setups of one seed start from the same weights), trains it,
optionally evaluates it on the test split, and collects everything in an
:class:`ExperimentResult` whose tables are tidy pandas DataFrames ready for
seaborn (see :mod:`lrtools.plotting`). A setup is an optimizer, a function that
makes one, or a :class:`Config`; :func:`rate_sweep` makes one setup per rate.

The networks the book trains live in :mod:`lrtools.models`, and
:func:`lrtools.runtime.has_accelerator` in :mod:`lrtools.runtime`; their old names
here (``lrtools.experiments.digits_cnn``, ...) still work for one release, with a
``DeprecationWarning``. The tables need pandas (the ``[plot]`` extra).

Example:

>>> import keras
>>> from lrtools.data import load_digits
>>> from lrtools.models import digits_mlp
>>> result = run_experiment(
...     digits_mlp,
...     {"SGD 0.1": keras.optimizers.SGD(0.1), "SGD 0.01": keras.optimizers.SGD(0.01)},
...     load_digits(kind="flat"),
...     epochs=2,
...     seeds=[0, 1],
...     verbose=0,
... )  # doctest: +SKIP
>>> result.summary("val_accuracy")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

# Imported for its side effect too: it registers PositionEmbedding with Keras under the
# name it had here ("lrtools>PositionEmbedding"), so that a script that imports only
# lrtools.experiments still loads .keras files saved when the layer lived in this module.
from lrtools import models as _models
from lrtools._checks import check_count, check_flag, check_rate
from lrtools._extras import require
from lrtools._rates import current_rate, rate_object, rate_owners, replace_rate
from lrtools._scheduler import _is_pure_schedule
from lrtools._step_rate import RateTable
from lrtools.comparison import PairedDifference, paired_difference

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Config", "ExperimentResult", "rate_sweep", "run_experiment"]

OptimizerFactory = Callable[[], keras.optimizers.Optimizer]
ModelBuilder = Callable[[tuple[int, ...], int], keras.Model]

_MOVED = {**dict.fromkeys(_models.__all__, "lrtools.models"), "has_accelerator": "lrtools.runtime"}
"""The names that moved out of this module, and where they went (deprecated here)."""


def __getattr__(name: str) -> Any:
    """Give the old names of moved objects, with a ``DeprecationWarning`` naming the new place."""
    if name in _MOVED:
        warnings.warn(
            f"lrtools.experiments.{name} moved to {_MOVED[name]}.{name}; import it from "
            f"{_MOVED[name]} (the old name will be removed in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'lrtools.experiments' has no attribute {name!r}")


# --------------------------------------------------------------------------- setups


@dataclass(frozen=True)
class Config:
    """One training setup: how to make its optimizer, its callbacks, and its labels.

    Use a ``Config`` when a setup needs more than an optimizer, for example an
    epoch function driven by a callback, or extra columns for plots.

    Attributes:
        optimizer: a Keras optimizer (copied for every run, so runs never share
            state) or a function with no arguments that returns a new one.
        callbacks: a function with no arguments that returns the list of
            callbacks for one run (called once per run, so stateful callbacks
            start fresh), or ``None``.
        labels: extra columns for the result tables, e.g.
            ``{"optimizer": "Adam", "learning_rate": 1e-3}``.

    Example:

    >>> import keras
    >>> setup = Config(keras.optimizers.Adam(1e-3), labels={"learning_rate": 1e-3})
    >>> setup.make_optimizer() is not setup.make_optimizer()
    True
    """

    optimizer: keras.optimizers.Optimizer | OptimizerFactory
    callbacks: Callable[[], list[keras.callbacks.Callback]] | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """Return a new optimizer for one run.

        Returns:
            A fresh copy of ``optimizer`` (rebuilt from its config), or what the
            factory returns.

        Raises:
            TypeError: if the factory does not return a Keras optimizer.
        """
        if isinstance(self.optimizer, keras.optimizers.Optimizer):
            return type(self.optimizer).from_config(self.optimizer.get_config())
        optimizer = self.optimizer()
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "A Config's optimizer factory must return a keras.optimizers.Optimizer, "
                f"got {type(optimizer).__name__}."
            )
        return optimizer

    def make_callbacks(self) -> list[keras.callbacks.Callback]:
        """Return the callbacks for one run (an empty list when there are none)."""
        return list(self.callbacks()) if self.callbacks is not None else []


def _as_config(name: str, setup: Any) -> Config:
    if isinstance(setup, Config):
        return setup
    if isinstance(setup, keras.optimizers.schedules.LearningRateSchedule):
        raise TypeError(
            f"Setup {name!r} is a schedule; pass an optimizer that uses it instead, e.g. "
            "keras.optimizers.SGD(learning_rate=schedule)."
        )
    if isinstance(setup, keras.optimizers.Optimizer) or callable(setup):
        return Config(setup)
    raise TypeError(
        f"Setup {name!r} must be a keras optimizer, a function returning one, or an "
        f"lrtools.experiments.Config; got {type(setup).__name__}."
    )


def rate_sweep(
    optimizer_class: type[keras.optimizers.Optimizer],
    learning_rates: Iterable[float],
    **optimizer_kwargs: Any,
) -> dict[str, Config]:
    """Make one setup per learning rate for an optimizer class.

    Each setup is named ``"<Optimizer> <rate>"`` (rate in ``g`` format) and
    labelled with ``optimizer`` and ``learning_rate`` columns, which
    :func:`lrtools.plotting.plot_sweep` uses by default. Merge sweeps of
    several optimizers with ``{**rate_sweep(...), **rate_sweep(...)}``.

    Args:
        optimizer_class: e.g. ``keras.optimizers.SGD``.
        learning_rates: the rates to try.
        **optimizer_kwargs: further arguments for every optimizer, e.g.
            ``momentum=0.9``.

    Returns:
        A dict from setup name to :class:`Config`, in the order of the rates.

    Raises:
        TypeError: if a rate is not a real number.
        ValueError: if no rate is given or a rate is not a positive finite number.

    Example:

    >>> import keras
    >>> list(rate_sweep(keras.optimizers.SGD, [0.1, 1e-3]))
    ['SGD 0.1', 'SGD 0.001']
    """
    rates = [
        check_rate(f"learning_rates[{index}]", rate) for index, rate in enumerate(learning_rates)
    ]
    if not rates:
        raise ValueError("`learning_rates` is empty: rate_sweep needs at least one rate.")
    name = optimizer_class.__name__
    return {
        f"{name} {rate:g}": Config(
            optimizer_class(learning_rate=rate, **optimizer_kwargs),
            labels={"optimizer": name, "learning_rate": rate},
        )
        for rate in rates
    }


# --------------------------------------------------------------------------- results


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` measured.

    Attributes:
        frame: one row per (config, seed, epoch) with the columns ``config``,
            ``seed``, ``epoch`` (from 1), every metric Keras logged (``loss``,
            ``accuracy``, ``val_loss``, ``val_accuracy``, ...), ``lr`` (the
            learning rate of the epoch's last update, whatever set it),
            ``wall_time`` (seconds since the run started) and the setup's label
            columns. A ``learning_rate`` that callbacks log is left out here (it
            is ``lr``) but kept in :attr:`histories`.
        runs: one row per (config, seed): the last epoch's metrics, ``epochs``,
            ``wall_time`` (of the whole run), ``test_loss`` / ``test_accuracy``
            when the test split was evaluated, and the label columns.
        histories: ``History.history`` of every run, keyed by ``(config, seed)``.
        models: the trained models, keyed by ``(config, seed)``, when
            :func:`run_experiment` was called with ``keep_models=True``; empty
            otherwise.

    Example:

    >>> result = run_experiment(digits_mlp, setups, data, epochs=5)  # doctest: +SKIP
    >>> result.summary("test_accuracy")  # doctest: +SKIP
    """

    frame: pd.DataFrame
    runs: pd.DataFrame
    histories: dict[tuple[str, int], dict[str, list[float]]]
    models: dict[tuple[str, int], keras.Model] = field(default_factory=dict)

    @property
    def configs(self) -> list[str]:
        """The setup names, in the order they were run."""
        return list(dict.fromkeys(self.runs["config"]))

    def summary(self, metric: str = "val_accuracy") -> pd.DataFrame:
        """Summarise one final metric per setup over the seeds.

        Args:
            metric: a column of :attr:`runs`, e.g. ``"val_accuracy"``,
                ``"test_accuracy"``, ``"loss"`` or ``"wall_time"``.

        Returns:
            A DataFrame indexed by ``config`` (in run order) with the columns
            ``mean``, ``std`` (sample standard deviation, NaN for one seed),
            ``min``, ``max`` and ``seeds`` (how many runs).

        Raises:
            KeyError: if ``metric`` is not a column of :attr:`runs`.
        """
        _check_column(self.runs, metric, "runs")
        grouped = self.runs.groupby("config", sort=False)[metric]
        table = grouped.agg(["mean", "std", "min", "max", "count"])
        return table.rename(columns={"count": "seeds"}).reindex(self.configs)

    def best_config(self, metric: str = "val_accuracy") -> str:
        """Return the setup with the best mean final ``metric`` over the seeds.

        Higher is better, except for metrics whose name contains ``"loss"``.

        Args:
            metric: a column of :attr:`runs`.

        Returns:
            The name of the best setup.

        Raises:
            KeyError: if ``metric`` is not a column of :attr:`runs`.
        """
        means = self.summary(metric)["mean"]
        return str(means.idxmin() if _lower_is_better(metric) else means.idxmax())

    def paired(self, metric: str, a: str, b: str) -> PairedDifference:
        """The difference ``a - b`` in a final ``metric``, paired by seed.

        Args:
            metric: a column of :attr:`runs`, e.g. ``"test_loss"``.
            a: one setup's name.
            b: the other's; both must have run with the same seeds.

        Returns:
            A :class:`lrtools.comparison.PairedDifference` (mean, standard error, verdict).

        Raises:
            KeyError: if ``metric`` or a setup is unknown.
            ValueError: if the two setups do not share at least two seeds.

        Example:

        >>> result.paired("test_loss", "SGDR", "step decay").verdict()  # doctest: +SKIP
        'lower'
        """
        _check_column(self.runs, metric, "runs")
        table = self.runs.pivot(index="seed", columns="config", values=metric)
        for name in (a, b):
            if name not in table.columns:
                raise KeyError(f"no setup named {name!r}; the setups are {self.configs}")
        shared = table[[a, b]].dropna()
        return paired_difference(shared[a].to_numpy(), shared[b].to_numpy())

    def epochs_to_reach(self, target: float, metric: str = "val_accuracy") -> pd.DataFrame:
        """Find the first epoch at which each run reaches a target.

        A run reaches the target when ``metric >= target``, or ``metric <=
        target`` for metrics whose name contains ``"loss"``.

        Args:
            target: the value to reach, e.g. ``0.95`` for 95 % accuracy.
            metric: a column of :attr:`frame`.

        Returns:
            A DataFrame with one row per run, with columns ``config``, ``seed`` and
            ``epochs_to_target`` (NaN for runs that never reached it).

        Raises:
            KeyError: if ``metric`` is not a column of :attr:`frame`.
        """
        _check_column(self.frame, metric, "frame")
        values = self.frame[metric]
        reached = values <= target if _lower_is_better(metric) else values >= target
        first = self.frame[reached].groupby(["config", "seed"], sort=False)["epoch"].min()
        table = self.runs[["config", "seed"]].copy()
        index = _pandas().MultiIndex.from_frame(table)
        table["epochs_to_target"] = first.reindex(index).to_numpy(dtype="float64")
        return table.reset_index(drop=True)


def _lower_is_better(metric: str) -> bool:
    return "loss" in metric


def _check_column(frame: pd.DataFrame, column: str, table: str) -> None:
    if column not in frame.columns:
        raise KeyError(
            f"{column!r} is not a column of the {table} table; choose one of "
            f"{', '.join(map(str, frame.columns))}."
        )


class _EpochRecorder(keras.callbacks.Callback):
    """Record the learning rate and the elapsed time at the end of every epoch.

    The rate is the one the epoch's last update used: a schedule inside the
    optimizer is evaluated at the last step taken, any other rate (a variable)
    is read as it is. With several groups of variables (a ``MultiOptimizer``) it
    is the largest group's rate, the one lrtools's callbacks set (see
    ``lrtools._rates.group_ratios``). It runs before the setup's own callbacks, so
    a callback that changes the rate at the end of an epoch (``ReduceLROnPlateau``)
    shows up in the next epoch, when it takes effect.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []
        self.times: list[float] = []
        self._start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        owners = rate_owners(self.model.optimizer)
        self.rates.append(max(current_rate(owner, last_step=True) for owner in owners))
        self.times.append(time.perf_counter() - self._start)


# --------------------------------------------------------------------------- runner


def run_experiment(
    build_model: ModelBuilder,
    configs: Mapping[str, Any],
    data: Any,
    *,
    epochs: int,
    seeds: Iterable[int] = (0,),
    batch_size: int = 32,
    loss: Any = "sparse_categorical_crossentropy",
    metrics: Sequence[Any] = ("accuracy",),
    evaluate_test: bool = False,
    steps_per_execution: int = 1,
    keep_models: bool = False,
    reuse_network: bool = False,
    verbose: int = 1,
) -> ExperimentResult:
    """Train one model design under several setups and seeds, and tabulate the runs.

    For every seed and every setup: ``keras.utils.set_random_seed(seed)``, build
    a fresh model with ``build_model(data.input_shape, data.num_classes)``,
    compile it with the setup's optimizer, train it for ``epochs`` epochs on the
    training split with the validation split for ``val_*`` metrics, and (with
    ``evaluate_test``) evaluate it on the test split. Because the seed is set
    before the model is built, every setup of one seed starts from the same
    weights and sees the same batches: only the setup differs.

    Args:
        build_model: a function ``(input_shape, num_classes) -> keras.Model``
            returning a new, uncompiled model, e.g.
            :func:`lrtools.models.digits_cnn`.
        configs: setup name -> a Keras optimizer (copied for every run), a
            function returning a new optimizer, or a :class:`Config`.
        data: a :class:`lrtools.data.Dataset` (anything with its attributes).
        epochs: training epochs per run.
        seeds: the seeds; every setup is run once per seed.
        batch_size: mini-batch size.
        loss: the loss passed to ``compile``.
        metrics: the metrics passed to ``compile``.
        evaluate_test: also evaluate every trained model on the test split
            (``test_loss`` and ``test_<metric>`` columns in ``runs``).
        steps_per_execution: training steps per compiled call, passed to
            ``compile``. Values above 1 make small models train about twice as
            fast on a CPU with the same updates, but batch-level callbacks then
            run once per call (epoch callbacks and schedules inside the
            optimizer are unaffected).
        keep_models: keep every trained model in ``ExperimentResult.models``
            (for measurements on the trained weights; memory grows with the
            number of runs).
        reuse_network: build and compile one network per seed and train every setup
            on it, put back to its starting state in between (weights, optimizer state,
            random states), instead of a new network per run. On a CPU a sweep of small
            networks runs about twice as fast, since building and tracing cost about as
            much as a few epochs. For setups that differ in nothing but the rate, without
            callbacks and without ``keep_models``: fixed rates (what :func:`rate_sweep`
            makes) give exactly the runs of fresh networks; schedules of the step alone
            (lrtools's pure schedules, Keras's own) are shared on TensorFlow through a
            table of their rates, equal to fresh runs up to float32 rounding of the rate
            (what training then makes of it), and train fresh networks on other back-ends.
        verbose: ``1`` prints one line per run, ``0`` prints nothing.

    Returns:
        An :class:`ExperimentResult`.

    Raises:
        ValueError: if ``configs`` or ``seeds`` is empty, ``epochs``,
            ``batch_size`` or ``steps_per_execution`` is below 1 (or not whole),
            or a seed is negative; with ``reuse_network``, if the setups differ in
            more than a fixed rate, have callbacks, or ``keep_models`` is set.
        TypeError: if a setup is neither an optimizer, a factory nor a ``Config``,
            a count is not a number, or ``evaluate_test`` or ``keep_models`` is
            not a ``bool``.
        ImportError: if pandas is not installed (the ``[plot]`` extra).

    Example:

    >>> import keras
    >>> from lrtools.data import load_digits
    >>> from lrtools.models import digits_cnn
    >>> result = run_experiment(
    ...     digits_cnn, {"Adam 1e-3": keras.optimizers.Adam(1e-3)}, load_digits(),
    ...     epochs=3, seeds=[0, 1], evaluate_test=True, verbose=0,
    ... )  # doctest: +SKIP
    >>> result.summary("test_accuracy")  # doctest: +SKIP
    """
    pandas = _pandas()
    setups = _check_setups(configs)
    seeds = [check_count(f"seeds[{index}]", seed, minimum=0) for index, seed in enumerate(seeds)]
    if not seeds:
        raise ValueError("`seeds` is empty: run_experiment needs at least one seed.")
    training = _Training(
        epochs=check_count("epochs", epochs),
        batch_size=check_count("batch_size", batch_size),
        loss=loss,
        metrics=tuple(metrics),
        steps_per_execution=check_count("steps_per_execution", steps_per_execution),
    )
    evaluate_test = check_flag("evaluate_test", evaluate_test)
    keep_models = check_flag("keep_models", keep_models)
    rates = _shared_rates(setups, keep_models) if check_flag("reuse_network", reuse_network) else {}
    tabulate = any(not isinstance(rate, float) for rate in rates.values())
    if tabulate and keras.backend.backend() != "tensorflow":
        rates = {}  # a table would be baked into JAX's trace: fresh networks, the same runs
    steps = training.epochs * math.ceil(len(data.y_train) / training.batch_size)

    epoch_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    histories: dict[tuple[str, int], dict[str, list[float]]] = {}
    models: dict[tuple[str, int], keras.Model] = {}
    for seed in seeds:
        shared = None
        for name, setup in setups.items():
            if rates:
                shared = shared or _SharedNetwork(
                    training, build_model, setup, data, seed, steps if tabulate else None
                )
                model = shared.reset(rates[name])
                history, recorder = training.train(model, setup, data, [shared.same_batches])
            else:
                model, history, recorder = training.fit(build_model, setup, data, seed)
            histories[(name, seed)] = history
            if keep_models:
                models[(name, seed)] = model
            scores = training.evaluate(model, data) if evaluate_test else {}
            labels = dict(setup.labels)
            epoch_rows.extend(_epoch_rows(name, seed, history, recorder, labels))
            run_rows.append(_run_row(name, seed, history, recorder, scores, labels))
            if verbose:
                print(_progress_line(len(run_rows), len(setups) * len(seeds), run_rows[-1]))
    return ExperimentResult(
        frame=pandas.DataFrame(epoch_rows),
        runs=pandas.DataFrame(run_rows),
        histories=histories,
        models=models,
    )


def _pandas() -> Any:
    """Import pandas, or say which extra brings it (the tables are pandas DataFrames)."""
    return require("pandas", extra="plot", feature="lrtools.experiments.run_experiment()")


def _check_setups(configs: Mapping[str, Any]) -> dict[str, Config]:
    """Return ``configs`` as a non-empty dict from setup name to :class:`Config`."""
    if not isinstance(configs, Mapping):
        raise TypeError(
            f"`configs` must be a dict from setup name to optimizer or Config, got {configs!r}."
        )
    setups = {str(name): _as_config(str(name), setup) for name, setup in configs.items()}
    if not setups:
        raise ValueError("`configs` is empty: run_experiment needs at least one setup.")
    return setups


@dataclass(frozen=True)
class _Training:
    """How every run of one experiment trains and is evaluated: compile and fit arguments."""

    epochs: int
    batch_size: int
    loss: Any
    metrics: tuple[Any, ...]
    steps_per_execution: int

    def fit(
        self, build_model: ModelBuilder, setup: Config, data: Any, seed: int
    ) -> tuple[keras.Model, dict[str, list[float]], _EpochRecorder]:
        """Seed Keras, build and compile a fresh model, train it; return it, its logs, its rates."""
        keras.utils.set_random_seed(seed)
        model = build_model(data.input_shape, data.num_classes)
        self.compile(model, setup.make_optimizer())
        return (model, *self.train(model, setup, data))

    def compile(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        """Compile ``model`` with ``optimizer`` and this experiment's loss, metrics and steps."""
        model.compile(
            optimizer=optimizer,
            loss=self.loss,
            metrics=list(self.metrics),
            steps_per_execution=self.steps_per_execution,
        )

    def train(
        self,
        model: keras.Model,
        setup: Config,
        data: Any,
        first: Sequence[keras.callbacks.Callback] = (),
    ) -> tuple[dict[str, list[float]], _EpochRecorder]:
        """Train a compiled ``model`` with the setup's callbacks, after ``first``; return its
        logs and rates."""
        recorder = _EpochRecorder()
        history = model.fit(
            data.x_train,
            data.y_train,
            batch_size=self.batch_size,
            epochs=self.epochs,
            validation_data=(data.x_val, data.y_val),
            callbacks=[*first, recorder, *setup.make_callbacks()],
            verbose=0,
        )
        logs = {key: [float(v) for v in values] for key, values in history.history.items()}
        return logs, recorder

    def evaluate(self, model: keras.Model, data: Any) -> dict[str, float]:
        """Score ``model`` on the test split: ``{"test_loss": ..., "test_<metric>": ...}``."""
        scores = model.evaluate(
            data.x_test, data.y_test, batch_size=self.batch_size, verbose=0, return_dict=True
        )
        return {f"test_{key}": float(value) for key, value in scores.items()}


class _SameRandomStart(keras.callbacks.Callback):
    """Give every run the random state the first run had when its training began.

    Python's and NumPy's generators order the batches on some back-ends (JAX shuffles with
    NumPy). A network's first ``fit`` draws from them before training begins (Keras builds
    the model's metrics on a first batch), later fits do not; so the state is recorded
    where training begins, not where the network was built.
    """

    def __init__(self) -> None:
        super().__init__()
        self._states: tuple[Any, Any] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._states is None:
            self._states = (random.getstate(), np.random.get_state())  # noqa: NPY002 (Keras seeds it)
        else:
            random.setstate(self._states[0])
            np.random.set_state(self._states[1])  # noqa: NPY002 (Keras seeds it)


class _SharedNetwork:
    """One seed's network, built and compiled once, put back to its starting state for each setup.

    Building a small network, compiling it and tracing its train and test steps costs about
    as much on a CPU as several epochs of training. A sweep over rates pays it once per seed
    this way. Every run starts where a fresh one would: the model's variables (weights,
    normalisation statistics, dropout seed states) and the optimizer's variables go back to
    their values after building, and the random states that order the batches go back to
    those of the first run (pass :attr:`same_batches` to ``fit``). Fixed rates are assigned
    to the optimizer's rate variable. Schedules (``steps`` given) are evaluated for every
    step of the run into a table the compiled step reads, on TensorFlow only: JAX would bake
    the table into its trace. ``tests/test_experiments.py`` checks the runs match fresh ones:
    exactly with fixed rates; with schedules to float32 rounding, since TensorFlow's graph
    rewrites round a rate computed inside the step differently in the last bits.
    """

    def __init__(
        self,
        training: _Training,
        build_model: ModelBuilder,
        first: Config,
        data: Any,
        seed: int,
        steps: int | None,
    ) -> None:
        keras.utils.set_random_seed(seed)
        self.model = build_model(data.input_shape, data.num_classes)
        optimizer = first.make_optimizer()
        self._table = RateTable(steps + 1) if steps is not None else None
        if self._table is not None:
            replace_rate(optimizer, self._table)
        training.compile(self.model, optimizer)
        self.model.optimizer.build(self.model.trainable_variables)
        self._seed = seed
        self.same_batches = _SameRandomStart()
        self._start = [variable.numpy() for variable in self._variables()]

    def _variables(self) -> list[keras.Variable]:
        return [*self.model.variables, *self.model.optimizer.variables]

    def reset(self, rate: float | keras.optimizers.schedules.LearningRateSchedule) -> keras.Model:
        """Put the network back to its starting state with ``rate``; return it."""
        for variable, value in zip(self._variables(), self._start, strict=True):
            variable.assign(value)
        if self._table is None:
            self.model.optimizer.learning_rate = rate
        else:
            self._table.fill(0, _tabulated(rate, len(self._table.host)))
        keras.utils.set_random_seed(self._seed)
        return self.model


def _tabulated(rate: Any, steps: int) -> np.ndarray:
    """``rate`` (a float, or a schedule called at each step) for steps ``0 .. steps - 1``."""
    if not callable(rate):
        return np.full(steps, rate, "float32")
    return np.array([ops.convert_to_numpy(rate(step)) for step in range(steps)], "float32")


def _shared_rates(setups: Mapping[str, Config], keep_models: bool) -> dict[str, Any]:
    """Each setup's rate (a float or a schedule), if the setups may share one network.

    They may when their optimizers differ in nothing but the learning rate, a fixed rate or
    a schedule that depends on the step alone (an lrtools schedule whose ``is_pure`` is true,
    or one of Keras's own), and no setup has callbacks, which could change what the traced
    step does.

    Raises:
        ValueError: if they may not, or ``keep_models`` is set.
    """
    if keep_models:
        raise ValueError("`reuse_network=True` trains one network per seed; drop `keep_models`.")
    rates, configs = {}, []
    for name, setup in setups.items():
        optimizer = setup.make_optimizer()
        rate = rate_object(optimizer)
        if setup.callbacks is not None or not (
            isinstance(rate, keras.Variable) or _is_pure_schedule(rate) or _is_keras_own(rate)
        ):
            raise ValueError(
                "`reuse_network=True` needs setups without callbacks whose rate is a number or "
                f"a schedule of the step alone; setup {name!r} has callbacks or another rate."
            )
        rates[name] = float(rate.numpy()) if isinstance(rate, keras.Variable) else rate
        config = {**optimizer.get_config(), "name": None, "learning_rate": None}
        configs.append((type(optimizer), config))
    if any(other != configs[0] for other in configs[1:]):
        raise ValueError(
            "`reuse_network=True` needs setups that differ only in the learning rate (as "
            "rate_sweep makes them); these differ in the optimizer or its other arguments."
        )
    return rates


def _is_keras_own(rate: Any) -> bool:
    """Whether ``rate`` is one of Keras's built-in schedules (each a function of the step)."""
    return type(rate) in vars(keras.optimizers.schedules).values()


def _logged(history: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """The metrics of ``history`` that go into the tables.

    Callbacks that change the rate log it as ``learning_rate``; the tables record every
    setup's rate as ``lr`` instead, and keep ``learning_rate`` free for labels such as
    :func:`rate_sweep`'s.
    """
    return {key: values for key, values in history.items() if key != "learning_rate"}


def _epoch_rows(
    name: str,
    seed: int,
    history: Mapping[str, list[float]],
    recorder: _EpochRecorder,
    labels: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One row per epoch of one run: its metrics, its rate, its time, the setup's labels."""
    logged = _logged(history)
    rows = []
    for index, (rate, elapsed) in enumerate(zip(recorder.rates, recorder.times, strict=True)):
        row = {"config": name, "seed": seed, "epoch": index + 1}
        row.update({key: values[index] for key, values in logged.items()})
        row.update(lr=rate, wall_time=elapsed, **labels)
        rows.append(row)
    return rows


def _run_row(
    name: str,
    seed: int,
    history: Mapping[str, list[float]],
    recorder: _EpochRecorder,
    scores: Mapping[str, float],
    labels: Mapping[str, Any],
) -> dict[str, Any]:
    """The row of one run: its last epoch's metrics, epochs, time, test scores, labels."""
    done = len(recorder.times)
    row: dict[str, Any] = {"config": name, "seed": seed, "epochs": done}
    row.update({key: values[-1] for key, values in _logged(history).items() if values})
    row["wall_time"] = recorder.times[-1] if done else 0.0
    row.update(scores)
    row.update(labels)
    return row


def _progress_line(count: int, total: int, run: Mapping[str, Any]) -> str:
    """One line per finished run: which run, its main scores, its time."""
    shown = [
        f"{key} {run[key]:.4f}"
        for key in ("loss", "val_loss", "val_accuracy", "test_accuracy")
        if key in run
    ]
    return (
        f"[{count}/{total}] {run['config']} (seed {run['seed']}): "
        f"{', '.join(shown)} in {run['wall_time']:.1f} s"
    )
