"""Train one model under several rates, schedules or optimizers, over several seeds.

The book compares training setups again and again: five fixed rates, six decay
schedules, seven optimizers. :func:`run_experiment` does that loop once, the
same way everywhere: for every setup and every seed it seeds Keras, builds a
fresh model (so all setups of one seed start from the same weights), trains it,
optionally evaluates it on the test split, and collects everything in an
:class:`ExperimentResult` whose tables are tidy pandas DataFrames ready for
seaborn (see :mod:`lrtools.plotting`).

The module also holds the small networks the chapters share:
:func:`digits_cnn`, :func:`digits_mlp`, :func:`small_resnet`, :func:`digits_rnn`
and :func:`small_transformer` (with its metric :func:`sequence_accuracy`), and
:func:`has_accelerator`, which tells whether mixed precision is worth turning on.

Example:

>>> import keras
>>> from lrtools.data import load_digits
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

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import pandas as pd

from lrtools._rates import rate_owners

OptimizerFactory = Callable[[], keras.optimizers.Optimizer]
ModelBuilder = Callable[[tuple[int, ...], int], keras.Model]


# --------------------------------------------------------------------------- models


def digits_cnn(input_shape: Sequence[int] = (8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The book's small convolutional network: a classic MNIST CNN, scaled down.

    Two blocks of 3x3 convolution (16 then 32 filters, ReLU, ``"same"``
    padding), 2x2 max-pooling and 25 % dropout, then a 64-unit dense layer and a
    softmax output. It is the design of the MNIST network in the Keras tutorial
    that chapter 2 repeats (32 and 64 filters, 256 dense units) with half the
    filters and a quarter of the dense units, sized for 8x8 digits; it also
    accepts 28x28 or 32x32 images.

    Args:
        input_shape: shape of one image, ``(height, width, channels)``.
        num_classes: number of output classes.

    Returns:
        An uncompiled ``keras.Model`` whose output is class probabilities.

    Raises:
        ValueError: if ``input_shape`` is not 3-dimensional or ``num_classes < 2``.

    Example:

    >>> model = digits_cnn((8, 8, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _image_shape(input_shape, "digits_cnn")
    _check_classes(num_classes)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="digits_cnn",
    )


def digits_mlp(
    input_shape: Sequence[int] = (64,), num_classes: int = 10, hidden_units: int = 64
) -> keras.Model:
    """The book's small dense network: flatten, one ReLU hidden layer, softmax.

    Args:
        input_shape: shape of one input; images are flattened first.
        num_classes: number of output classes.
        hidden_units: width of the hidden layer.

    Returns:
        An uncompiled ``keras.Model`` whose output is class probabilities.

    Raises:
        ValueError: if ``num_classes < 2`` or ``hidden_units < 1``.

    Example:

    >>> digits_mlp((64,), 10).count_params()
    4810
    """
    _check_classes(num_classes)
    if hidden_units < 1:
        raise ValueError(f"hidden_units must be a positive integer, got {hidden_units!r}.")
    return keras.Sequential(
        [
            keras.Input(shape=tuple(int(d) for d in input_shape)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden_units, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="digits_mlp",
    )


def small_resnet(
    input_shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    filters: Sequence[int] = (16, 32),
    blocks_per_stage: int = 1,
) -> keras.Model:
    """A small residual network in the style of He et al.'s CIFAR ResNets.

    A 3x3 convolution with batch normalisation and ReLU, then one stage per
    entry of ``filters``, each of ``blocks_per_stage`` residual blocks, then
    global average pooling and a softmax. A residual block computes

    ``y = relu(x + BN(conv(relu(BN(conv(x))))))``

    with 3x3 convolutions; every stage after the first halves the height and
    width with a stride of 2 in its first block, whose shortcut is then a 1x1
    convolution with batch normalisation (He et al.'s projection shortcut).
    Batch normalisation keeps its running statistics with a momentum of 0.9
    (PyTorch's default; Keras's 0.99 lags behind the weights in runs of a few
    hundred steps). The output layer computes in ``float32`` whatever the dtype
    policy, so the model can be trained under ``mixed_float16``.

    Args:
        input_shape: shape of one image, ``(height, width, channels)``.
        num_classes: number of output classes.
        filters: the number of filters of each stage.
        blocks_per_stage: residual blocks per stage, >= 1.

    Returns:
        An uncompiled ``keras.Model`` whose output is class probabilities.

    Raises:
        ValueError: if ``input_shape`` is not 3-dimensional, ``num_classes < 2``,
            ``filters`` is empty or holds a number below 1, or
            ``blocks_per_stage < 1``.

    Example:

    >>> model = small_resnet((8, 8, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _image_shape(input_shape, "small_resnet")
    _check_classes(num_classes)
    filters = [int(width) for width in filters]
    if not filters or min(filters) < 1:
        raise ValueError(f"filters must be a non-empty list of positive counts, got {filters}.")
    if blocks_per_stage < 1:
        raise ValueError(f"blocks_per_stage must be a positive integer, got {blocks_per_stage!r}.")
    layers = keras.layers
    batch_norm = functools.partial(layers.BatchNormalization, momentum=0.9)
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(batch_norm()(x))
    for stage, width in enumerate(filters):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides > 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=strides, use_bias=False)(shortcut)
                shortcut = batch_norm()(shortcut)
            x = layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False)(x)
            x = layers.Activation("relu")(batch_norm()(x))
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = batch_norm()(x)
            x = layers.Activation("relu")(layers.Add()([shortcut, x]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


def digits_rnn(
    input_shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    units: int = 32,
    cell: str = "gru",
) -> keras.Model:
    """A recurrent network that reads an image one row at a time.

    An image of shape ``(height, width, channels)`` becomes a sequence of
    ``height`` steps of ``width * channels`` features (an 8x8 digit: 8 rows of
    8 pixels); a GRU or LSTM layer reads it and its last state goes to a softmax.

    Args:
        input_shape: ``(height, width, channels)`` for images, or
            ``(steps, features)`` for sequences.
        num_classes: number of output classes.
        units: size of the recurrent state, >= 1.
        cell: ``"gru"`` or ``"lstm"``.

    Returns:
        An uncompiled ``keras.Model`` whose output is class probabilities.

    Raises:
        ValueError: if ``input_shape`` has neither 2 nor 3 dimensions,
            ``num_classes < 2``, ``units < 1`` or ``cell`` is unknown.

    Example:

    >>> model = digits_rnn((8, 8, 1), 10, units=16)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) not in (2, 3):
        raise ValueError(
            "digits_rnn reads images (height, width, channels) or sequences (steps, features), "
            f"got input_shape {input_shape}; load the digits with kind='images'."
        )
    _check_classes(num_classes)
    if units < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}.")
    recurrent = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
    if cell not in recurrent:
        raise ValueError(f'cell must be "gru" or "lstm", got {cell!r}.')
    steps, features = input_shape[0], math.prod(input_shape[1:])
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Reshape((steps, features)),
            recurrent[cell](units),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name=f"digits_{cell}",
    )


@keras.saving.register_keras_serializable(package="lrtools")
class PositionEmbedding(keras.layers.Layer):
    """Add a learned vector for each position to a sequence of embeddings.

    ``output[:, i, :] = inputs[:, i, :] + P[i]``, where ``P`` is a trainable
    ``(sequence_length, embed_dim)`` matrix: the position embedding of BERT.

    Args:
        sequence_length: the largest sequence length the layer accepts.
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).

    Example:

    >>> layer = PositionEmbedding(4)
    >>> tuple(layer(keras.ops.zeros((2, 4, 3))).shape)
    (2, 4, 3)
    """

    def __init__(self, sequence_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {sequence_length!r}.")
        self.sequence_length = int(sequence_length)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create the ``(sequence_length, embed_dim)`` table, ``embed_dim = input_shape[-1]``."""
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.sequence_length, int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs: Any) -> Any:
        """Return ``inputs`` plus the first ``inputs.shape[1]`` rows of the table."""
        length = keras.ops.shape(inputs)[1]
        positions = keras.ops.cast(self.position_embeddings[:length], inputs.dtype)
        return inputs + positions

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration, with ``sequence_length``."""
        return {**super().get_config(), "sequence_length": self.sequence_length}


def small_transformer(
    input_shape: Sequence[int] = (8,),
    num_classes: int = 10,
    embed_dim: int = 32,
    num_heads: int = 2,
    ff_dim: int = 64,
    num_blocks: int = 1,
    dropout: float = 0.0,
) -> keras.Model:
    """A small Transformer encoder that predicts one token per input position.

    Token ids are embedded, a learned :class:`PositionEmbedding` is added, and
    ``num_blocks`` encoder blocks follow, each as in the original Transformer
    and BERT ("post-LN"):

    ``x = LayerNorm(x + MultiHeadAttention(x, x))``,
    ``x = LayerNorm(x + Dense(embed_dim)(relu(Dense(ff_dim)(x))))``.

    A dense softmax over the ``num_classes`` tokens is applied at every
    position. Train it on :func:`lrtools.data.make_sequence_task` with
    ``"sparse_categorical_crossentropy"``.

    Args:
        input_shape: ``(sequence_length,)``.
        num_classes: the vocabulary size (input and output tokens).
        embed_dim: width of the embeddings, divisible by ``num_heads``.
        num_heads: attention heads.
        ff_dim: width of the feed-forward layer.
        num_blocks: encoder blocks, >= 1.
        dropout: dropout rate after attention and feed-forward, in [0, 1).

    Returns:
        An uncompiled ``keras.Model`` mapping ``(batch, sequence_length)`` token
        ids to ``(batch, sequence_length, num_classes)`` probabilities.

    Raises:
        ValueError: if ``input_shape`` is not ``(sequence_length,)``,
            ``num_classes < 2``, a size is below 1, ``embed_dim`` is not
            divisible by ``num_heads`` or ``dropout`` is outside [0, 1).

    Example:

    >>> model = small_transformer((8,), 10)
    >>> model.output_shape
    (None, 8, 10)
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 1:
        raise ValueError(
            f"small_transformer reads token sequences of shape (sequence_length,), got "
            f"{input_shape}."
        )
    _check_classes(num_classes)
    for name, value in (
        ("embed_dim", embed_dim),
        ("num_heads", num_heads),
        ("ff_dim", ff_dim),
        ("num_blocks", num_blocks),
    ):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, dtype="int32")
    x = layers.Embedding(num_classes, embed_dim)(inputs)
    x = PositionEmbedding(input_shape[0])(x)
    for _ in range(num_blocks):
        attended = layers.MultiHeadAttention(num_heads, embed_dim // num_heads)(x, x)
        x = layers.LayerNormalization()(x + layers.Dropout(dropout)(attended))
        hidden = layers.Dense(ff_dim, activation="relu")(x)
        x = layers.LayerNormalization()(
            x + layers.Dropout(dropout)(layers.Dense(embed_dim)(hidden))
        )
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="small_transformer")


def sequence_accuracy(y_true: Any, y_pred: Any) -> Any:
    """The share of sequences whose every position is predicted right.

    A metric for models with one softmax per position (e.g.
    :func:`small_transformer`): 1 for a sequence whose arg-max tokens all equal
    the labels, 0 otherwise. ``"accuracy"`` counts correct tokens; this counts
    correct sequences. Pass it to ``compile`` (or to :func:`run_experiment`'s
    ``metrics``); Keras logs it as ``sequence_accuracy`` and
    ``val_sequence_accuracy``.

    Args:
        y_true: integer labels of shape ``(batch, length)``.
        y_pred: probabilities of shape ``(batch, length, classes)``.

    Returns:
        A ``float32`` tensor of shape ``(batch,)`` with 1.0 or 0.0 per sequence.

    Example:

    >>> import numpy as np
    >>> probabilities = np.eye(3, dtype="float32")[[[0, 1], [2, 2]]]
    >>> [float(v) for v in sequence_accuracy(np.array([[0, 1], [2, 0]]), probabilities)]
    [1.0, 0.0]
    """
    predicted = keras.ops.argmax(y_pred, axis=-1)
    labels = keras.ops.reshape(keras.ops.cast(y_true, predicted.dtype), keras.ops.shape(predicted))
    return keras.ops.cast(keras.ops.all(keras.ops.equal(predicted, labels), axis=-1), "float32")


def has_accelerator() -> bool:
    """Tell whether the current Keras backend computes on a GPU or TPU.

    Asks the backend Keras uses (``keras.backend.backend()``), so it imports
    nothing else: JAX (``jax.default_backend()``), TensorFlow
    (``tf.config.list_physical_devices("GPU")``), PyTorch
    (``torch.cuda.is_available()``); NumPy and OpenVINO count as CPU here.
    Use it to switch on mixed precision only where it pays off:
    ``keras.mixed_precision.set_dtype_policy("mixed_float16")``.

    Returns:
        ``True`` when the backend has a GPU or TPU to compute on.

    Example:

    >>> isinstance(has_accelerator(), bool)
    True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def _image_shape(input_shape: Sequence[int], builder: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{builder} needs image inputs of shape (height, width, channels), got "
            f"{shape}; load the digits with kind='images' or use digits_mlp."
        )
    return shape


def _check_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes!r}.")


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
        ValueError: if no rate is given or a rate is not a positive number.

    Example:

    >>> import keras
    >>> list(rate_sweep(keras.optimizers.SGD, [0.1, 1e-3]))
    ['SGD 0.1', 'SGD 0.001']
    """
    rates = [float(rate) for rate in learning_rates]
    if not rates:
        raise ValueError("rate_sweep needs at least one learning rate.")
    for rate in rates:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"Learning rates must be positive numbers, got {rate!r}.")
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
        index = pd.MultiIndex.from_frame(table)
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
    is read as it is. It runs before the setup's own callbacks, so a callback that
    changes the rate at the end of an epoch (``ReduceLROnPlateau``) shows up in
    the next epoch, when it takes effect.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []
        self.times: list[float] = []
        self._start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        owner = rate_owners(self.model.optimizer)[0]
        schedule = owner._learning_rate  # the variable or schedule itself, not its value
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            last_step = max(int(keras.ops.convert_to_numpy(owner.iterations)) - 1, 0)
            rate = schedule(last_step)
        else:
            rate = owner.learning_rate
        self.rates.append(float(keras.ops.convert_to_numpy(rate)))
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
            returning a new, uncompiled model, e.g. :func:`digits_cnn`.
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
        verbose: ``1`` prints one line per run, ``0`` prints nothing.

    Returns:
        An :class:`ExperimentResult`.

    Raises:
        ValueError: if ``configs`` or ``seeds`` is empty, or ``epochs`` or
            ``steps_per_execution`` is below 1.
        TypeError: if a setup is neither an optimizer, a factory nor a ``Config``.

    Example:

    >>> import keras
    >>> from lrtools.data import load_digits
    >>> result = run_experiment(
    ...     digits_cnn, {"Adam 1e-3": keras.optimizers.Adam(1e-3)}, load_digits(),
    ...     epochs=3, seeds=[0, 1], evaluate_test=True, verbose=0,
    ... )  # doctest: +SKIP
    >>> result.summary("test_accuracy")  # doctest: +SKIP
    """
    setups = {str(name): _as_config(str(name), setup) for name, setup in configs.items()}
    seeds = [int(seed) for seed in seeds]
    if not setups:
        raise ValueError("run_experiment needs at least one setup in configs.")
    if not seeds:
        raise ValueError("run_experiment needs at least one seed.")
    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if steps_per_execution < 1:
        raise ValueError(
            f"steps_per_execution must be a positive integer, got {steps_per_execution!r}."
        )

    epoch_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    histories: dict[tuple[str, int], dict[str, list[float]]] = {}
    models: dict[tuple[str, int], keras.Model] = {}
    total = len(setups) * len(seeds)
    for seed in seeds:
        for name, setup in setups.items():
            keras.utils.set_random_seed(seed)
            model = build_model(data.input_shape, data.num_classes)
            model.compile(
                optimizer=setup.make_optimizer(),
                loss=loss,
                metrics=list(metrics),
                steps_per_execution=steps_per_execution,
            )
            recorder = _EpochRecorder()
            history = model.fit(
                data.x_train,
                data.y_train,
                batch_size=batch_size,
                epochs=epochs,
                validation_data=(data.x_val, data.y_val),
                callbacks=[recorder, *setup.make_callbacks()],
                verbose=0,
            )
            histories[(name, seed)] = {
                key: [float(v) for v in values] for key, values in history.history.items()
            }
            if keep_models:
                models[(name, seed)] = model
            # Callbacks that change the rate log it as "learning_rate"; the tables
            # record every setup's rate as "lr" instead, and keep "learning_rate"
            # free for labels such as rate_sweep's.
            logged = {
                key: values
                for key, values in histories[(name, seed)].items()
                if key != "learning_rate"
            }
            labels = dict(setup.labels)
            done = len(recorder.times)
            for index in range(done):
                row = {"config": name, "seed": seed, "epoch": index + 1}
                row.update({key: values[index] for key, values in logged.items()})
                row.update(lr=recorder.rates[index], wall_time=recorder.times[index], **labels)
                epoch_rows.append(row)
            run_row = {"config": name, "seed": seed, "epochs": done}
            run_row.update({key: values[-1] for key, values in logged.items() if values})
            run_row["wall_time"] = recorder.times[-1] if done else 0.0
            if evaluate_test:
                scores = model.evaluate(
                    data.x_test, data.y_test, batch_size=batch_size, verbose=0, return_dict=True
                )
                run_row.update({f"test_{key}": float(value) for key, value in scores.items()})
            run_row.update(labels)
            run_rows.append(run_row)
            if verbose:
                print(_progress_line(len(run_rows), total, run_row))
    return ExperimentResult(
        frame=pd.DataFrame(epoch_rows),
        runs=pd.DataFrame(run_rows),
        histories=histories,
        models=models,
    )


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
