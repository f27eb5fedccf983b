"""Run the backend-neutral test files again on JAX, in a fresh interpreter.

Keras picks its backend once per process, so the JAX run needs its own
interpreter. The schedules must run inside compiled train steps on every Keras
backend; TensorFlow is covered by the main run, JAX here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
BACKEND_NEUTRAL_FILES = ["test_schedules.py"]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already running on JAX")
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
@pytest.mark.parametrize("test_file", BACKEND_NEUTRAL_FILES)
def test_passes_on_the_jax_backend(test_file):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(TESTS / test_file),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (
        f"{test_file} failed on JAX:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    )
    assert " passed" in done.stdout.splitlines()[-1]
