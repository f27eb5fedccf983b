"""TensorFlow's start-up lines obey TF_CPP_MIN_LOG_LEVEL when lrtools imports it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lrtools import _quiet

ONEDNN = "I0000 00:00:1796006686.410310   15485 port.cc:153] oneDNN custom operations are on.\n"
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
ERROR = "E0000 00:00:1796006686.410655   15485 cuda_dnn.cc:8579] Unable to register cuDNN\n"


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, BANNER + ONEDNN + ERROR + "plain\n"),
        (1, BANNER + ERROR + "plain\n"),
        (2, BANNER + ERROR + "plain\n"),
        (3, "plain\n"),
    ],
)
def test_lines_below_the_level_go_and_the_banner_with_them(level, expected):
    assert _quiet.filter_notices(BANNER + ONEDNN + ERROR + "plain\n", level) == expected


def test_lines_that_are_not_absl_start_up_lines_always_pass():
    text = "Traceback (most recent call last):\nI0000 is not a log line\n"
    assert _quiet.filter_notices(text, 3) == text


@pytest.mark.parametrize(("value", "level"), [("3", 3), ("9", 3), ("-1", 0), ("x", 0), ("", 0)])
def test_level_is_read_like_tensorflow_reads_it(monkeypatch, value, level):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", value)
    assert _quiet.minimum_level() == level


def test_descriptor_two_is_restored_when_the_import_fails(monkeypatch, capfd):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    before = os.fstat(2)
    with pytest.raises(RuntimeError), _quiet.start_up_notices_filtered():
        os.write(2, ONEDNN.encode() + b"kept\n")
        raise RuntimeError("the import failed")
    after = os.fstat(2)
    assert (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)
    assert capfd.readouterr().err == "kept\n"


def _stderr_of_import(level: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", "import lrtools"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.slow
def test_import_lrtools_prints_no_start_up_lines_at_level_three():
    # On this CPU build TensorFlow prints the oneDNN and CUDA-driver lines at level 0 (see
    # ONEDNN above); at level 3 nothing of absl's start-up format may pass.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", "import lrtools"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    leaked = [line for line in done.stderr.splitlines() if _quiet._ABSL_LINE.match(line)]
    assert not leaked and "absl::InitializeLog" not in done.stderr, done.stderr
