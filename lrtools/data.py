"""The data sets the book trains on, split the same way every time.

Three entry points, all returning a :class:`Dataset` with fixed
train / validation / test splits:

- :func:`load_digits`: the 8x8 handwritten digits that ship with scikit-learn
  (1,797 real images, no download), as images or as flat vectors. Every chapter
  uses it by default, so notebooks run anywhere in about a minute.
- :func:`load_keras_dataset`: MNIST, Fashion-MNIST or CIFAR-10 through Keras's
  own loaders, for readers with a network connection (or the files in Keras's
  cache) and the time to train on them. Without either it raises
  :class:`DatasetUnavailableError`, whose message says what to do.
- :func:`make_sequence_task`: a sequence-to-sequence task generated with NumPy
  (sorting or reversing strings of digits), for the small Transformer of the
  case-studies chapter.

Pixel values are scaled to ``[0, 1]`` as ``float32``; labels are integer class
indices (use ``"sparse_categorical_crossentropy"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lrtools._checks import check_choice, check_count, check_fraction
from lrtools._extras import require

KERAS_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")

# The files each Keras loader reads, relative to Keras's cache folder
# (``$KERAS_HOME`` or ``~/.keras``); see keras/src/datasets/<name>.py.
_KERAS_CACHE_FILES: dict[str, tuple[str, ...]] = {
    "mnist": ("datasets/mnist.npz",),
    "fashion_mnist": tuple(
        f"datasets/fashion-mnist/{name}"
        for name in (
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        )
    ),
    "cifar10": ("datasets/cifar-10-batches-py-target_archive",),
}


# Where the cached name differs from the file Keras downloads.
_CACHE_NOTES: dict[str, str] = {
    "cifar10": "  (that is the downloaded cifar-10-python.tar.gz, renamed)\n",
}


class DatasetUnavailableError(RuntimeError):
    """Raised when a Keras data set is neither cached nor downloadable.

    The message names the file(s) Keras looks for and the alternatives: connect
    to the internet, copy the files into Keras's cache, or use
    :func:`load_digits`, which needs no download.
    """


@dataclass(frozen=True, repr=False)
class Dataset:
    """A classification data set with fixed train / validation / test splits.

    Attributes:
        x_train: training inputs: ``float32`` in ``[0, 1]`` for images, integer
            token ids for :func:`make_sequence_task`.
        y_train: training labels, integer class indices (one per position for
            sequence tasks).
        x_val: validation inputs (for learning curves and choosing rates).
        y_val: validation labels.
        x_test: test inputs (for the final numbers only).
        y_test: test labels.
        num_classes: number of classes (the vocabulary size for sequence tasks).
        input_shape: shape of one input, without the batch axis, e.g. ``(8, 8, 1)``.
        name: a short name for tables and figures, e.g. ``"digits"``.

    Example:

    >>> data = load_digits(kind="flat")
    >>> data.input_shape, data.num_classes
    ((64,), 10)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    name: str = "data"

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _check_fraction(name: str, value: float) -> float:
    """Return ``value`` if it is a share strictly between 0 and 1."""
    return check_fraction(name, value, low_open=True, high_open=True)


def _stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that ``fraction`` of each class goes to the second part.

    Returns ``(keep, held_out)``, two sorted index arrays. Every class keeps at
    least one example on each side when it has two or more.
    """
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        count = min(max(count, 1), len(members) - 1) if len(members) > 1 else 0
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out))
    keep = np.setdiff1d(np.arange(len(labels)), held)
    return keep, held


def _make_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    name: str,
) -> Dataset:
    """Hold out a stratified validation split of the training data."""
    y_train = np.asarray(y_train).reshape(-1).astype("int64")
    y_test = np.asarray(y_test).reshape(-1).astype("int64")
    keep, val = _stratified_split(y_train, val_fraction, np.random.default_rng(seed))
    return Dataset(
        x_train=x_train[keep],
        y_train=y_train[keep],
        x_val=x_train[val],
        y_val=y_train[val],
        x_test=x_test,
        y_test=y_test,
        num_classes=int(max(y_train.max(), y_test.max()) + 1),
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        name=name,
    )


def load_digits(
    kind: Literal["images", "flat"] = "images",
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Dataset:
    """Load scikit-learn's 8x8 handwritten digits with fixed stratified splits.

    The 1,797 images (10 classes, pixel values 0-16) ship with scikit-learn, so
    nothing is downloaded. Pixels are divided by 16 to lie in ``[0, 1]``. The
    test split is drawn first (``test_fraction`` of each class), then the
    validation split (``val_fraction`` of all examples, taken from what is
    left); the same ``seed`` always gives the same splits.

    Args:
        kind: ``"images"`` for arrays of shape ``(n, 8, 8, 1)`` (for CNNs) or
            ``"flat"`` for ``(n, 64)`` (for dense networks).
        seed: seed of the split; the data itself never changes.
        val_fraction: share of all examples used for validation.
        test_fraction: share of all examples used for the test set.

    Returns:
        A :class:`Dataset` named ``"digits"``. With the defaults: 1,169
        training, 269 validation and 359 test examples.

    Raises:
        TypeError: if ``kind`` is not a string, or ``seed`` or a fraction not a number.
        ValueError: if ``kind`` is unknown, ``seed`` is negative, or the fractions
            are not in (0, 1) or leave no training data.
        ImportError: if scikit-learn is not installed (the ``[data]`` extra).

    Example:

    >>> data = load_digits()
    >>> data.x_train.shape[1:], float(data.x_train.max()) <= 1.0
    ((8, 8, 1), True)
    """
    kind = check_choice("kind", kind, ("images", "flat"))
    seed = check_count("seed", seed, minimum=0)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 to leave training data, "
            f"got {val_fraction} + {test_fraction}."
        )
    datasets = require("sklearn.datasets", extra="data", feature="lrtools.data.load_digits()")
    bunch = datasets.load_digits()
    pixels = (bunch.images / 16.0).astype("float32")
    inputs = pixels[..., np.newaxis] if kind == "images" else pixels.reshape(len(pixels), -1)
    labels = bunch.target.astype("int64")

    rng = np.random.default_rng(seed)
    rest, test = _stratified_split(labels, test_fraction, rng)
    # The validation share is of all examples, so rescale it to what is left.
    val_share_of_rest = val_fraction / (1.0 - test_fraction)
    return _make_dataset(
        inputs[rest],
        labels[rest],
        inputs[test],
        labels[test],
        val_fraction=val_share_of_rest,
        seed=seed,
        name="digits",
    )


def keras_cache_paths(name: str) -> list[str]:
    """Return the paths where Keras looks for a data set's cached file(s).

    Keras keeps downloads under ``$KERAS_HOME/datasets`` (default
    ``~/.keras/datasets``); a file found there is used instead of downloading.

    Args:
        name: one of ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``.

    Returns:
        Absolute paths, one per file the loader reads.

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if ``name`` is not a supported data set.

    Example:

    >>> keras_cache_paths("mnist")[0].endswith(os.path.join("datasets", "mnist.npz"))
    True
    """
    _check_name(name)
    try:
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # pragma: no cover - a future Keras may move it
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return [
        os.path.abspath(os.path.join(os.path.expanduser(home), *relative.split("/")))
        for relative in _KERAS_CACHE_FILES[name]
    ]


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"`name` must be one of {', '.join(KERAS_DATASETS)}, got {name!r}.")
    if name not in KERAS_DATASETS:
        raise ValueError(
            f"Unknown data set {name!r}; choose one of {', '.join(KERAS_DATASETS)}, "
            "or use lrtools.data.load_digits() for the bundled digits."
        )


def _keras_loader(name: str) -> Callable[[], Any]:
    import keras

    return getattr(keras.datasets, name).load_data


def _scale_images(images: np.ndarray) -> np.ndarray:
    """Scale 8-bit images to ``[0, 1]`` and give grey-scale images a channel axis."""
    scaled = np.asarray(images, dtype="float32") / 255.0
    return scaled[..., np.newaxis] if scaled.ndim == 3 else scaled


def load_keras_dataset(
    name: Literal["mnist", "fashion_mnist", "cifar10"],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> Dataset:
    """Load MNIST, Fashion-MNIST or CIFAR-10 through Keras, with a validation split.

    Keras's loader reads the data from its cache (see :func:`keras_cache_paths`)
    or downloads it there on first use. Images are scaled to ``[0, 1]`` and
    given a channel axis (``(28, 28, 1)`` or ``(32, 32, 3)``); a stratified
    ``val_fraction`` of the training set becomes the validation split, and
    Keras's test set is the test split.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        seed: seed of the validation split.
        val_fraction: share of Keras's training set held out for validation.

    Returns:
        A :class:`Dataset` named after the data set.

    Raises:
        TypeError: if ``name`` is not a string, or ``seed`` or ``val_fraction`` not a number.
        ValueError: if ``name`` is unknown, ``seed`` is negative or ``val_fraction``
            is not in (0, 1).
        DatasetUnavailableError: if the data is not cached and cannot be
            downloaded (no network); the message says where to put the files.

    Example:

    >>> data = load_keras_dataset("mnist")  # doctest: +SKIP
    >>> data.input_shape  # doctest: +SKIP
    (28, 28, 1)
    """
    _check_name(name)
    seed = check_count("seed", seed, minimum=0)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    try:
        (x_train, y_train), (x_test, y_test) = _keras_loader(name)()
    except Exception as err:
        paths = "\n  ".join(keras_cache_paths(name))
        raise DatasetUnavailableError(
            f"Could not load {name!r} with keras.datasets.{name}.load_data() "
            f"({type(err).__name__}: {err}).\n"
            "Keras downloads the data on first use, so either:\n"
            "- connect to the internet and call load_keras_dataset again, or\n"
            f"- copy the original file(s) from another machine to:\n  {paths}\n"
            f"{_CACHE_NOTES.get(name, '')}"
            "- or use lrtools.data.load_digits(), which ships with scikit-learn "
            "and needs no download."
        ) from err

    return _make_dataset(
        _scale_images(x_train),
        y_train,
        _scale_images(x_test),
        y_test,
        val_fraction=val_fraction,
        seed=seed,
        name=name,
    )


SEQUENCE_TASKS: tuple[str, ...] = ("sort", "reverse")


def make_sequence_task(
    task: Literal["sort", "reverse"] = "sort",
    *,
    length: int = 8,
    vocab_size: int = 10,
    train_size: int = 2000,
    val_size: int = 500,
    test_size: int = 500,
    seed: int = 0,
) -> Dataset:
    """Generate a sequence-to-sequence task on strings of random tokens.

    Every example is a sequence of ``length`` tokens drawn uniformly from
    ``0 .. vocab_size - 1``; its label is another sequence of the same length:

    - ``"sort"``: the tokens in ascending order, so label position ``i`` holds
      the ``i``-th smallest token (a model must compare every token with every
      other one: a natural task for attention);
    - ``"reverse"``: the tokens in reverse order (label ``i`` is token
      ``length - 1 - i``: a task of positions only).

    Everything is generated with NumPy from ``seed``; nothing is downloaded.
    Train, validation and test examples are drawn independently from the same
    distribution.

    Args:
        task: ``"sort"`` or ``"reverse"``.
        length: tokens per sequence, >= 2.
        vocab_size: number of distinct tokens, >= 2.
        train_size: training examples, >= 1.
        val_size: validation examples, >= 1.
        test_size: test examples, >= 1.
        seed: the seed of the generator; the same seed gives the same data.

    Returns:
        A :class:`Dataset` named ``"<task> <length>x<vocab_size>"`` whose
        inputs and labels are ``int64`` arrays of shape ``(n, length)``,
        ``input_shape == (length,)`` and ``num_classes == vocab_size``. Train
        it with a model that outputs one softmax over the tokens per position
        and ``"sparse_categorical_crossentropy"``; ``"accuracy"`` then counts
        correct tokens.

    Raises:
        TypeError: if ``task`` is not a string, or a size or ``seed`` not a number
            (``True`` included).
        ValueError: for an unknown ``task``, ``length`` or ``vocab_size`` below
            2, a split size below 1, a size that is not whole, or a negative ``seed``.

    Example:

    >>> data = make_sequence_task("sort", length=5, vocab_size=10, seed=1)
    >>> data.input_shape, data.num_classes
    ((5,), 10)
    >>> bool((np.sort(data.x_train, axis=1) == data.y_train).all())
    True
    """
    task = check_choice("task", task, SEQUENCE_TASKS)
    length = check_count("length", length, minimum=2)
    vocab_size = check_count("vocab_size", vocab_size, minimum=2)
    train_size = check_count("train_size", train_size)
    val_size = check_count("val_size", val_size)
    test_size = check_count("test_size", test_size)
    seed = check_count("seed", seed, minimum=0)

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size, size=(train_size + val_size + test_size, length))
    tokens = tokens.astype("int64")
    targets = np.sort(tokens, axis=1) if task == "sort" else tokens[:, ::-1].copy()
    val_end = train_size + val_size
    return Dataset(
        x_train=tokens[:train_size],
        y_train=targets[:train_size],
        x_val=tokens[train_size:val_end],
        y_val=targets[train_size:val_end],
        x_test=tokens[val_end:],
        y_test=targets[val_end:],
        num_classes=int(vocab_size),
        input_shape=(int(length),),
        name=f"{task} {length}x{vocab_size}",
    )
