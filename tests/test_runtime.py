"""Tests for lrtools.runtime: what the machine offers."""

from __future__ import annotations

import sys

import keras
import pytest

from lrtools import runtime


class _FakeModule:
    def __init__(self, **attributes):
        self.__dict__.update(attributes)


@pytest.mark.parametrize(
    ("backend", "module", "fake", "expected"),
    [
        ("jax", "jax", _FakeModule(default_backend=lambda: "gpu"), True),
        ("jax", "jax", _FakeModule(default_backend=lambda: "cpu"), False),
        (
            "tensorflow",
            "tensorflow",
            _FakeModule(
                config=_FakeModule(
                    list_physical_devices=lambda kind: ["GPU:0"] if kind == "GPU" else []
                )
            ),
            True,
        ),
        (
            "tensorflow",
            "tensorflow",
            _FakeModule(config=_FakeModule(list_physical_devices=lambda kind: [])),
            False,
        ),
        ("torch", "torch", _FakeModule(cuda=_FakeModule(is_available=lambda: True)), True),
        ("numpy", "numpy", None, False),
    ],
)
def test_has_accelerator_asks_the_backend_keras_uses(monkeypatch, backend, module, fake, expected):
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    if fake is not None:
        monkeypatch.setitem(sys.modules, module, fake)
    assert runtime.has_accelerator() is expected
