"""Tests for lrtools.data: the bundled digits and the Keras data-set loader."""

from __future__ import annotations

import gzip
import os
import urllib.error

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_load_digits

from lrtools import data as lrdata


def _all_examples(dataset: lrdata.Dataset) -> tuple[np.ndarray, np.ndarray]:
    inputs = np.concatenate([dataset.x_train, dataset.x_val, dataset.x_test])
    labels = np.concatenate([dataset.y_train, dataset.y_val, dataset.y_test])
    return inputs, labels


# --------------------------------------------------------------------------- digits


def test_digits_images_are_scaled_float_images():
    dataset = lrdata.load_digits()
    assert dataset.input_shape == (8, 8, 1)
    assert dataset.num_classes == 10
    assert dataset.name == "digits"
    for array in (dataset.x_train, dataset.x_val, dataset.x_test):
        assert array.dtype == np.float32
        assert array.shape[1:] == (8, 8, 1)
        assert array.min() >= 0.0 and array.max() <= 1.0
    # The largest pixel value (16) maps to exactly 1.
    assert dataset.x_train.max() == 1.0


def test_digits_splits_partition_the_whole_data_set():
    dataset = lrdata.load_digits(kind="flat")
    inputs, labels = _all_examples(dataset)
    reference = sklearn_load_digits()
    assert len(labels) == len(reference.target)
    # Every original example appears exactly once across the three splits.
    expected = np.sort(
        np.concatenate([reference.data / 16.0, reference.target[:, None]], axis=1), axis=0
    )
    found = np.sort(np.concatenate([inputs, labels[:, None]], axis=1), axis=0)
    np.testing.assert_allclose(found, expected, atol=1e-6)


@pytest.mark.parametrize(("val_fraction", "test_fraction"), [(0.15, 0.2), (0.1, 0.3)])
def test_digits_splits_are_stratified_with_the_requested_sizes(val_fraction, test_fraction):
    dataset = lrdata.load_digits(val_fraction=val_fraction, test_fraction=test_fraction)
    total = len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test)
    assert len(dataset.y_test) / total == pytest.approx(test_fraction, abs=0.01)
    assert len(dataset.y_val) / total == pytest.approx(val_fraction, abs=0.01)
    class_counts = np.bincount(np.concatenate(_all_examples(dataset)[1:]))
    for split in (dataset.y_val, dataset.y_test):
        shares = np.bincount(split, minlength=10) / class_counts
        # Each class is represented in proportion (within one example of rounding).
        assert np.all(np.abs(shares - len(split) / total) <= 1.5 / class_counts)


def test_digits_flat_and_images_hold_the_same_pixels():
    images = lrdata.load_digits(kind="images", seed=3)
    flat = lrdata.load_digits(kind="flat", seed=3)
    assert flat.input_shape == (64,)
    np.testing.assert_array_equal(images.x_test.reshape(len(images.x_test), -1), flat.x_test)
    np.testing.assert_array_equal(images.y_train, flat.y_train)


def test_digits_seed_fixes_the_split():
    first, again, other = (lrdata.load_digits(seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_val, again.y_val)
    assert not np.array_equal(first.y_train, other.y_train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "pixels"}, "kind"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave training data"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lrdata.load_digits(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kind": 1}, TypeError, "kind"),
        ({"val_fraction": "0.1"}, TypeError, "val_fraction"),
        ({"seed": 1.5}, ValueError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_digits_follows_the_argument_policy(kwargs, error, message):
    with pytest.raises(error, match=message):
        lrdata.load_digits(**kwargs)


def test_dataset_repr_names_the_split_sizes():
    dataset = lrdata.load_digits()
    text = repr(dataset)
    assert f"train={len(dataset.y_train)}" in text and "digits" in text


# --------------------------------------------------------------------------- Keras data sets


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """Point Keras's cache folder (``$KERAS_HOME``, read at import) to a temporary one."""
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    return tmp_path


def _fake_images(rng: np.random.Generator, count: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


def _fake_labels(rng: np.random.Generator, count: int) -> np.ndarray:
    # Every class present, so stratification has something to do.
    return rng.permutation(np.arange(count) % 10).astype(np.uint8)


def test_keras_cache_paths_follow_keras_home(keras_home):
    assert lrdata.keras_cache_paths("mnist") == [str(keras_home / "datasets" / "mnist.npz")]
    assert len(lrdata.keras_cache_paths("fashion_mnist")) == 4


def test_fashion_mnist_is_read_from_keras_cache_files(keras_home):
    # Keras's loader reads four gzipped IDX files (8-byte label, 16-byte image headers).
    rng = np.random.default_rng(0)
    y_train, y_test = _fake_labels(rng, 60), _fake_labels(rng, 20)
    x_train, x_test = _fake_images(rng, 60, (28, 28)), _fake_images(rng, 20, (28, 28))
    contents = {
        "train-labels-idx1-ubyte.gz": b"\0" * 8 + y_train.tobytes(),
        "train-images-idx3-ubyte.gz": b"\0" * 16 + x_train.tobytes(),
        "t10k-labels-idx1-ubyte.gz": b"\0" * 8 + y_test.tobytes(),
        "t10k-images-idx3-ubyte.gz": b"\0" * 16 + x_test.tobytes(),
    }
    for path in lrdata.keras_cache_paths("fashion_mnist"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with gzip.open(path, "wb") as file:
            file.write(contents[os.path.basename(path)])

    dataset = lrdata.load_keras_dataset("fashion_mnist", val_fraction=0.2)

    assert dataset.name == "fashion_mnist"
    assert dataset.input_shape == (28, 28, 1)
    assert dataset.num_classes == 10
    # A stratified 20 % of six examples per class is one per class.
    assert np.bincount(dataset.y_val).tolist() == [1] * 10
    np.testing.assert_allclose(dataset.x_test[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.y_test, y_test)
    # Train and validation together are Keras's training set, nothing lost or repeated.
    merged = np.concatenate([dataset.y_train, dataset.y_val])
    np.testing.assert_array_equal(np.bincount(merged), np.bincount(y_train))


def test_mnist_is_read_from_keras_cache_file(keras_home, monkeypatch):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": _fake_images(rng, 50, (28, 28)),
        "y_train": _fake_labels(rng, 50),
        "x_test": _fake_images(rng, 10, (28, 28)),
        "y_test": _fake_labels(rng, 10),
    }
    (path,) = lrdata.keras_cache_paths("mnist")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)
    # Keras checks the cached file against the real MNIST's SHA-256, which a
    # generated file cannot match; accept it, as the real file would be.
    monkeypatch.setattr(keras.src.utils.file_utils, "validate_file", lambda *a, **k: True)
    monkeypatch.setattr(keras.src.utils.file_utils, "urlretrieve", _no_network)

    dataset = lrdata.load_keras_dataset("mnist", val_fraction=0.2, seed=4)

    assert dataset.input_shape == (28, 28, 1)
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (40, 10, 10)
    assert dataset.x_train.dtype == np.float32 and dataset.x_train.max() <= 1.0
    np.testing.assert_allclose(dataset.x_test[..., 0], arrays["x_test"] / 255.0, rtol=1e-6)
    # The validation split holds one example of each digit (a stratified 20 %).
    assert sorted(dataset.y_val.tolist()) == list(range(10))


def test_colour_images_keep_their_channels_and_labels_are_flattened(monkeypatch):
    rng = np.random.default_rng(2)
    # CIFAR-10's loader returns labels of shape (n, 1).
    loaded = (
        (_fake_images(rng, 40, (32, 32, 3)), _fake_labels(rng, 40)[:, None]),
        (_fake_images(rng, 10, (32, 32, 3)), _fake_labels(rng, 10)[:, None]),
    )
    monkeypatch.setattr(lrdata, "_keras_loader", lambda name: lambda: loaded)

    dataset = lrdata.load_keras_dataset("cifar10")

    assert dataset.input_shape == (32, 32, 3)
    assert dataset.y_test.shape == (10,)
    np.testing.assert_array_equal(dataset.y_test, loaded[1][1][:, 0])


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_missing_data_without_network_raises_a_clear_error(keras_home, monkeypatch):
    monkeypatch.setattr(keras.src.utils.file_utils, "urlretrieve", _no_network)

    with pytest.raises(lrdata.DatasetUnavailableError) as caught:
        lrdata.load_keras_dataset("mnist")

    message = str(caught.value)
    assert str(keras_home / "datasets" / "mnist.npz") in message
    assert "connect to the internet" in message
    assert "load_digits" in message
    assert caught.value.__cause__ is not None


def test_unknown_keras_dataset_is_rejected():
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10"):
        lrdata.load_keras_dataset("imagenet")
    with pytest.raises(TypeError, match="mnist, fashion_mnist, cifar10"):
        lrdata.load_keras_dataset(None)


# --------------------------------------------------------------------------- sequence tasks


def test_sequence_task_has_token_sequences_of_the_requested_sizes():
    task = lrdata.make_sequence_task(
        "sort", length=6, vocab_size=7, train_size=50, val_size=20, test_size=10, seed=0
    )
    assert task.input_shape == (6,) and task.num_classes == 7
    assert task.name == "sort 6x7"
    for inputs, labels, count in (
        (task.x_train, task.y_train, 50),
        (task.x_val, task.y_val, 20),
        (task.x_test, task.y_test, 10),
    ):
        assert inputs.shape == labels.shape == (count, 6)
        assert inputs.dtype == labels.dtype == np.int64
        assert inputs.min() >= 0 and inputs.max() < 7
    # The splits are independent draws, not copies of one another.
    assert not np.array_equal(task.x_train[:10], task.x_test)


def test_sort_labels_are_the_inputs_in_ascending_order():
    task = lrdata.make_sequence_task("sort", length=9, vocab_size=5, train_size=200, seed=3)
    for inputs, labels in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        assert np.all(np.diff(labels, axis=1) >= 0)  # ascending
        # Each label holds the same tokens as its input, the same number of times.
        for row_in, row_out in zip(inputs, labels):
            assert np.array_equal(
                np.bincount(row_in, minlength=5), np.bincount(row_out, minlength=5)
            )
    # Label position i is the i-th smallest token: e.g. position 0 is each row's minimum.
    np.testing.assert_array_equal(task.y_train[:, 0], task.x_train.min(axis=1))
    np.testing.assert_array_equal(task.y_train[:, -1], task.x_train.max(axis=1))


def test_reverse_labels_are_the_inputs_backwards():
    task = lrdata.make_sequence_task("reverse", length=4, vocab_size=10, train_size=30, seed=1)
    for position in range(4):
        np.testing.assert_array_equal(task.y_train[:, position], task.x_train[:, 3 - position])


def test_sequence_task_seed_fixes_the_data():
    first, again, other = (
        lrdata.make_sequence_task(train_size=40, val_size=5, test_size=5, seed=s) for s in (2, 2, 3)
    )
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_train, other.x_train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "add"}, "task"),
        ({"length": 1}, "length"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"train_size": 0}, "train_size"),
        ({"val_size": 2.5}, "val_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_sequence_task_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lrdata.make_sequence_task(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # A flag is not a size (before the shared checks this was a ValueError).
        ({"test_size": True}, "test_size"),
        ({"length": "8"}, "length"),
        ({"task": None}, "task"),
    ],
)
def test_sequence_task_rejects_arguments_of_the_wrong_type(kwargs, message):
    with pytest.raises(TypeError, match=message):
        lrdata.make_sequence_task(**kwargs)


def test_sequence_task_accepts_whole_float_sizes():
    task = lrdata.make_sequence_task(length=5.0, train_size=10.0, val_size=2, test_size=2)
    assert task.input_shape == (5,) and task.x_train.shape == (10, 5)
