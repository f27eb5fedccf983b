"""Tests for lrtools.models: the small networks the book trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from lrtools import models

# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_digits_cnn_maps_images_to_class_probabilities(input_shape):
    model = models.digits_cnn(input_shape, 7)
    assert model.output_shape == (None, 7)
    probabilities = keras.ops.convert_to_numpy(model(np.zeros((2, *input_shape), "float32")))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_digits_cnn_rejects_flat_inputs():
    with pytest.raises(ValueError, match="digits_mlp"):
        models.digits_cnn((64,), 10)


@pytest.mark.parametrize("hidden_units", [4, 64])
def test_digits_mlp_has_one_hidden_layer(hidden_units):
    model = models.digits_mlp((8, 8, 1), 10, hidden_units=hidden_units)
    assert model.output_shape == (None, 10)
    assert model.count_params() == 64 * hidden_units + hidden_units + hidden_units * 10 + 10


def test_digits_mlp_with_batch_norm_normalises_the_hidden_layer():
    model = models.digits_mlp((8, 8, 1), 10, hidden_units=16, batch_norm=True)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 1
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert not dense[0].use_bias  # BN's shift replaces the bias
    # Dense without bias, then BN's gamma, beta, moving mean and variance per unit, then softmax.
    assert model.count_params() == 64 * 16 + 4 * 16 + 16 * 10 + 10
    # In training mode the hidden layer's pre-activations have mean 0 over the batch.
    inputs = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
    hidden = keras.Model(model.inputs, norms[0].output)
    outputs = keras.ops.convert_to_numpy(hidden(inputs, training=True))
    np.testing.assert_allclose(outputs.mean(axis=0), 0.0, atol=1e-4)
    probabilities = keras.ops.convert_to_numpy(model(inputs))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_digits_mlp_without_batch_norm_by_default():
    model = models.digits_mlp((64,), 10)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize("flag", [1, "True", None])
def test_digits_mlp_refuses_a_batch_norm_that_is_not_a_bool(flag):
    with pytest.raises(TypeError, match="batch_norm"):
        models.digits_mlp((64,), 10, batch_norm=flag)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_classes": 1}, "num_classes"), ({"hidden_units": 0}, "hidden_units")],
)
def test_digits_mlp_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.digits_mlp((64,), **{"num_classes": 10, **kwargs})


# --------------------------------------------------------------------------- case-study models


def _layer_count(model: keras.Model, layer_type: type) -> int:
    return sum(isinstance(layer, layer_type) for layer in model.layers)


@pytest.mark.parametrize(
    ("filters", "blocks_per_stage", "input_shape", "projections"),
    [((16, 32), 1, (8, 8, 1), 1), ((8, 8, 16), 2, (32, 32, 3), 2)],
)
def test_small_resnet_has_residual_blocks_and_projection_shortcuts(
    filters, blocks_per_stage, input_shape, projections
):
    model = models.small_resnet(input_shape, 5, filters=filters, blocks_per_stage=blocks_per_stage)
    assert model.output_shape == (None, 5)
    assert _layer_count(model, keras.layers.Add) == len(filters) * blocks_per_stage
    # Two 3x3 convolutions per block, the stem, and a 1x1 projection where the shape changes.
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sum(layer.kernel_size == (1, 1) for layer in convolutions) == projections
    assert len(convolutions) == 1 + 2 * len(filters) * blocks_per_stage + projections
    # Every stage after the first halves the image once.
    last_map = model.get_layer(index=-3).output.shape
    assert last_map[1] == input_shape[0] // 2 ** (len(filters) - 1)
    probabilities = keras.ops.convert_to_numpy(model(np.ones((3, *input_shape), "float32")))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_small_resnet_outputs_float32_under_mixed_precision():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = models.small_resnet((8, 8, 1), 10, filters=(4,))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert model.get_layer(index=1).compute_dtype == "float16"
    assert model.layers[-1].compute_dtype == "float32"
    assert keras.ops.convert_to_numpy(model(np.zeros((1, 8, 8, 1), "float32"))).dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_shape": (64,)}, ValueError, "height, width, channels"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"filters": ()}, ValueError, "filters"),
        ({"filters": (8, 0)}, ValueError, "filters"),
        ({"blocks_per_stage": 0}, ValueError, "blocks_per_stage"),
    ],
)
def test_small_resnet_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        models.small_resnet(**{"input_shape": (8, 8, 1), "num_classes": 10, **kwargs})


@pytest.mark.parametrize(
    ("cell", "layer_type"), [("gru", keras.layers.GRU), ("lstm", keras.layers.LSTM)]
)
def test_digits_rnn_reads_an_image_row_by_row(cell, layer_type):
    model = models.digits_rnn((8, 8, 1), 10, units=5, cell=cell)
    assert model.output_shape == (None, 10)
    recurrent = [layer for layer in model.layers if isinstance(layer, layer_type)]
    assert len(recurrent) == 1 and recurrent[0].units == 5
    assert recurrent[0].input.shape == (None, 8, 8)  # 8 steps of 8 pixels
    # Reading the rows in another order changes the prediction: the order is the sequence.
    image = np.random.default_rng(0).random((1, 8, 8, 1)).astype("float32")
    forwards = keras.ops.convert_to_numpy(model(image))
    backwards = keras.ops.convert_to_numpy(model(image[:, ::-1]))
    assert not np.allclose(forwards, backwards)
    assert models.digits_rnn((5, 3), 4).output_shape == (None, 4)  # already a sequence


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (64,)}, "sequences"),
        ({"num_classes": 1}, "num_classes"),
        ({"units": 0}, "units"),
        ({"cell": "rnn"}, "cell"),
    ],
)
def test_digits_rnn_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.digits_rnn(**{"input_shape": (8, 8, 1), "num_classes": 10, **kwargs})


def test_position_embedding_adds_one_learned_vector_per_position():
    layer = models.PositionEmbedding(5)
    inputs = np.random.default_rng(1).random((2, 4, 3)).astype("float32")
    outputs = keras.ops.convert_to_numpy(layer(inputs))  # shorter sequences use the first rows
    table = keras.ops.convert_to_numpy(layer.position_embeddings)
    assert table.shape == (5, 3)
    np.testing.assert_allclose(outputs, inputs + table[:4], rtol=1e-6)
    copy = models.PositionEmbedding.from_config(layer.get_config())
    assert copy.sequence_length == 5
    with pytest.raises(ValueError, match="sequence_length"):
        models.PositionEmbedding(0)


def test_small_transformer_predicts_a_distribution_per_position():
    model = models.small_transformer((6,), 7, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=2)
    assert model.output_shape == (None, 6, 7)
    assert _layer_count(model, keras.layers.MultiHeadAttention) == 2
    tokens = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    probabilities = keras.ops.convert_to_numpy(model(tokens))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    # Positions are embedded: the same token at two positions gets two different outputs.
    same = keras.ops.convert_to_numpy(model(np.zeros((1, 6), "int32")))
    assert not np.allclose(same[0, 0], same[0, 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (8, 8, 1)}, "sequence_length"),
        ({"num_classes": 1}, "num_classes"),
        ({"embed_dim": 10, "num_heads": 4}, "divisible"),
        ({"ff_dim": 0}, "ff_dim"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_small_transformer_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.small_transformer(**{"input_shape": (8,), "num_classes": 10, **kwargs})


def test_sequence_accuracy_counts_only_sequences_right_at_every_position():
    labels = np.array([[0, 1, 2], [2, 2, 2], [1, 0, 2]])
    predicted = np.array([[0, 1, 2], [2, 2, 1], [0, 1, 2]])
    probabilities = np.eye(3, dtype="float32")[predicted] * 0.8 + 0.2 / 3
    scores = keras.ops.convert_to_numpy(models.sequence_accuracy(labels, probabilities))
    np.testing.assert_array_equal(scores, [1.0, 0.0, 0.0])
    assert scores.dtype == np.float32


# --------------------------------------------------------------------------- argument policy


@pytest.mark.parametrize(
    ("builder", "kwargs", "error", "message"),
    [
        (models.digits_mlp, {"hidden_units": "64"}, TypeError, "hidden_units"),
        (models.digits_mlp, {"hidden_units": True}, TypeError, "hidden_units"),
        (models.digits_mlp, {"num_classes": 2.5}, ValueError, "num_classes"),
        (models.digits_mlp, {"input_shape": "64"}, TypeError, "input_shape"),
        (models.digits_cnn, {"input_shape": (8, None, 1)}, TypeError, r"input_shape\[1\]"),
        (models.small_resnet, {"filters": ("8",)}, TypeError, r"filters\[0\]"),
        (models.small_resnet, {"blocks_per_stage": 1.5}, ValueError, "blocks_per_stage"),
        (models.digits_rnn, {"cell": 1}, TypeError, "cell"),
        (models.digits_rnn, {"units": "32"}, TypeError, "units"),
        (models.small_transformer, {"dropout": "0.1"}, TypeError, "dropout"),
        (models.small_transformer, {"dropout": -0.1}, ValueError, r"dropout.*\[0, 1\)"),
        (models.small_transformer, {"num_heads": 0}, ValueError, "num_heads"),
    ],
)
def test_builders_follow_the_argument_policy(builder, kwargs, error, message):
    """A wrong type is a TypeError, a wrong value a ValueError; the message names the argument."""
    with pytest.raises(error, match=message):
        builder(**kwargs)


def test_builders_accept_whole_floats_and_numpy_sizes():
    model = models.digits_mlp((np.int64(64),), np.int64(10), hidden_units=8.0)
    assert model.output_shape == (None, 10)
    assert model.layers[-2].units == 8 and isinstance(model.layers[-2].units, int)


def test_position_embedding_rejects_a_length_that_is_not_a_count():
    with pytest.raises(TypeError, match="sequence_length"):
        models.PositionEmbedding("8")


# --------------------------------------------------------------------------- saved files


def test_position_embedding_keeps_its_registered_name():
    assert keras.saving.get_registered_name(models.PositionEmbedding) == "lrtools>PositionEmbedding"


def _as_saved_before_the_move(path: Path) -> None:
    """Rewrite a .keras file as lrtools 0.1 wrote it: the layer's module was lrtools.experiments."""
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    config = contents["config.json"].decode()
    assert '"module": "lrtools.models"' in config
    contents["config.json"] = config.replace(
        '"module": "lrtools.models"', '"module": "lrtools.experiments"'
    ).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def test_a_transformer_saved_before_the_move_still_loads(tmp_path):
    model = models.small_transformer((4,), 5, embed_dim=4, num_heads=1, ff_dim=4)
    path = tmp_path / "old.keras"
    model.save(path)
    _as_saved_before_the_move(path)
    tokens = np.array([[0, 1, 2, 3]])
    expected = keras.ops.convert_to_numpy(model(tokens))
    # A fresh interpreter that imports only what an old script imported; loading must not
    # go through the deprecated old names.
    code = (
        "import json, sys, warnings, keras, numpy as np\n"
        "import lrtools.experiments\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    model = keras.saving.load_model(sys.argv[1])\n"
        "assert not [w for w in caught if 'moved to' in str(w.message)], caught\n"
        "print(json.dumps(keras.ops.convert_to_numpy(model(np.array([[0, 1, 2, 3]]))).tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(loaded, expected, rtol=1e-6)
