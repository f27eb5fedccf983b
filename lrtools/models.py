"""The small networks the book trains, sized for a 2-core CPU and the 8x8 digits.

Every builder returns a new, uncompiled ``keras.Model`` and takes the input shape and
the number of classes first, so any of them can be handed to
:func:`lrtools.experiments.run_experiment` as its ``build_model``:

- :func:`digits_cnn`: a classic MNIST CNN, scaled down;
- :func:`digits_mlp`: one hidden dense layer;
- :func:`small_resnet`: He et al.'s CIFAR ResNet design, small;
- :func:`digits_rnn`: a GRU or LSTM that reads an image one row at a time;
- :func:`small_transformer`: a post-LN Transformer encoder, one token out per token in,
  with its layer :class:`PositionEmbedding` and its metric :func:`sequence_accuracy`.

This module needs only Keras (no pandas, no scikit-learn).

Example:

>>> digits_cnn((8, 8, 1), 10).output_shape
(None, 10)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import keras

from lrtools._checks import check_choice, check_count, check_flag, check_fraction

__all__ = [
    "PositionEmbedding",
    "digits_cnn",
    "digits_mlp",
    "digits_rnn",
    "sequence_accuracy",
    "small_resnet",
    "small_transformer",
]


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
        TypeError: if a size is not a whole number (a string, a flag, ``None``).

    Example:

    >>> model = digits_cnn((8, 8, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _image_shape(input_shape, "digits_cnn")
    num_classes = _check_classes(num_classes)
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
    input_shape: Sequence[int] = (64,),
    num_classes: int = 10,
    hidden_units: int = 64,
    batch_norm: bool = False,
) -> keras.Model:
    """The book's small dense network: flatten, one ReLU hidden layer, softmax.

    With ``batch_norm=True`` the hidden layer is ``relu(BN(x W))``: batch
    normalisation (Ioffe & Szegedy, 2015) between the dense layer, which then
    has no bias (BN's shift replaces it), and the ReLU. BN keeps its running
    statistics with a momentum of 0.9, as in :func:`small_resnet`.

    Args:
        input_shape: shape of one input; images are flattened first.
        num_classes: number of output classes.
        hidden_units: width of the hidden layer.
        batch_norm: normalise the hidden layer's pre-activations over each batch.

    Returns:
        An uncompiled ``keras.Model`` whose output is class probabilities.

    Raises:
        ValueError: if ``num_classes < 2`` or ``hidden_units < 1``.
        TypeError: if a size is not a whole number (a string, a flag, ``None``) or
            ``batch_norm`` is not a ``bool``.

    Example:

    >>> digits_mlp((64,), 10).count_params()
    4810
    >>> digits_mlp((64,), 10, batch_norm=True).count_params()  # 4 BN values per unit, no bias
    5002
    """
    input_shape = _shape(input_shape)
    num_classes = _check_classes(num_classes)
    hidden_units = check_count("hidden_units", hidden_units)
    batch_norm = check_flag("batch_norm", batch_norm)
    layers = keras.layers
    if batch_norm:
        hidden = [
            layers.Dense(hidden_units, use_bias=False),
            _batch_norm(),
            layers.Activation("relu"),
        ]
    else:
        hidden = [layers.Dense(hidden_units, activation="relu")]
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Flatten(),
            *hidden,
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="digits_mlp_bn" if batch_norm else "digits_mlp",
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
        TypeError: if a size is not a whole number (a string, a flag, ``None``).

    Example:

    >>> model = small_resnet((8, 8, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _image_shape(input_shape, "small_resnet")
    num_classes = _check_classes(num_classes)
    filters = [check_count(f"filters[{index}]", width) for index, width in enumerate(filters)]
    if not filters:
        raise ValueError("`filters` must name at least one stage, got an empty list.")
    blocks_per_stage = check_count("blocks_per_stage", blocks_per_stage)
    layers = keras.layers
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(_batch_norm()(x))
    for stage, width in enumerate(filters):
        for block in range(blocks_per_stage):
            x = _residual_block(x, width, strides=2 if stage > 0 and block == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


# Batch normalisation with PyTorch's running-statistics momentum (see small_resnet).
_batch_norm = functools.partial(keras.layers.BatchNormalization, momentum=0.9)


def _residual_block(x: Any, width: int, strides: int) -> Any:
    """One residual block of :func:`small_resnet`.

    ``y = relu(shortcut(x) + BN(conv(relu(BN(conv(x))))))``, with 3x3 convolutions.

    The shortcut is ``x`` itself, or a strided 1x1 convolution with batch
    normalisation where the block changes the shape (the projection shortcut).
    """
    layers = keras.layers
    shortcut = x
    if strides > 1 or shortcut.shape[-1] != width:
        shortcut = layers.Conv2D(width, 1, strides=strides, use_bias=False)(shortcut)
        shortcut = _batch_norm()(shortcut)
    x = layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.Activation("relu")(_batch_norm()(x))
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = _batch_norm()(x)
    return layers.Activation("relu")(layers.Add()([shortcut, x]))


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
        TypeError: if a size is not a whole number (a string, a flag, ``None``).

    Example:

    >>> model = digits_rnn((8, 8, 1), 10, units=16)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _shape(input_shape)
    if len(input_shape) not in (2, 3):
        raise ValueError(
            "digits_rnn reads images (height, width, channels) or sequences (steps, features), "
            f"got input_shape {input_shape}; load the digits with kind='images'."
        )
    num_classes = _check_classes(num_classes)
    units = check_count("units", units)
    recurrent = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
    cell = check_choice("cell", cell, recurrent)
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

    Keras knows the layer as ``"lrtools>PositionEmbedding"``, the name it had when
    it lived in ``lrtools.experiments``, so ``.keras`` files saved then still load.

    Args:
        sequence_length: the largest sequence length the layer accepts.
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).

    Raises:
        TypeError: if ``sequence_length`` is not a whole number.
        ValueError: if ``sequence_length < 1``.

    Example:

    >>> layer = PositionEmbedding(4)
    >>> tuple(layer(keras.ops.zeros((2, 4, 3))).shape)
    (2, 4, 3)
    """

    def __init__(self, sequence_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.sequence_length = check_count("sequence_length", sequence_length)

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
        TypeError: if a size is not a whole number or ``dropout`` not a number.

    Example:

    >>> model = small_transformer((8,), 10)
    >>> model.output_shape
    (None, 8, 10)
    """
    input_shape = _shape(input_shape)
    if len(input_shape) != 1:
        raise ValueError(
            f"small_transformer reads token sequences of shape (sequence_length,), got "
            f"{input_shape}."
        )
    num_classes = _check_classes(num_classes)
    embed_dim = check_count("embed_dim", embed_dim)
    num_heads = check_count("num_heads", num_heads)
    ff_dim = check_count("ff_dim", ff_dim)
    num_blocks = check_count("num_blocks", num_blocks)
    if embed_dim % num_heads:
        raise ValueError(
            f"`embed_dim` ({embed_dim}) must be divisible by `num_heads` ({num_heads})."
        )
    dropout = check_fraction("dropout", dropout, low_open=False, high_open=True)
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, dtype="int32")
    x = layers.Embedding(num_classes, embed_dim)(inputs)
    x = PositionEmbedding(input_shape[0])(x)
    for _ in range(num_blocks):
        x = _encoder_block(x, embed_dim, num_heads, ff_dim, dropout)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="small_transformer")


def _encoder_block(x: Any, embed_dim: int, num_heads: int, ff_dim: int, dropout: float) -> Any:
    """One post-LN encoder block of :func:`small_transformer` (attention, then feed-forward)."""
    layers = keras.layers
    attended = layers.MultiHeadAttention(num_heads, embed_dim // num_heads)(x, x)
    x = layers.LayerNormalization()(x + layers.Dropout(dropout)(attended))
    hidden = layers.Dense(ff_dim, activation="relu")(x)
    return layers.LayerNormalization()(x + layers.Dropout(dropout)(layers.Dense(embed_dim)(hidden)))


def sequence_accuracy(y_true: Any, y_pred: Any) -> Any:
    """The share of sequences whose every position is predicted right.

    A metric for models with one softmax per position (e.g.
    :func:`small_transformer`): 1 for a sequence whose arg-max tokens all equal
    the labels, 0 otherwise. ``"accuracy"`` counts correct tokens; this counts
    correct sequences. Pass it to ``compile`` (or to :func:`lrtools.experiments.run_experiment`'s
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


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of ``int``, every dimension a whole count >= 1."""
    if isinstance(input_shape, str) or not isinstance(input_shape, Iterable):
        raise TypeError(f"`input_shape` must be a tuple of sizes, got {input_shape!r}.")
    return tuple(check_count(f"input_shape[{i}]", size) for i, size in enumerate(input_shape))


def _image_shape(input_shape: Sequence[int], builder: str) -> tuple[int, ...]:
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{builder} needs image inputs of shape (height, width, channels), got "
            f"{shape}; load the digits with kind='images' or use digits_mlp."
        )
    return shape


def _check_classes(num_classes: int) -> int:
    return check_count("num_classes", num_classes, minimum=2)
