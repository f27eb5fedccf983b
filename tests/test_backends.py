"""Run the backend-neutral tests again on JAX, in a fresh interpreter: the one way to do it.

Keras picks its backend once per process, so the JAX run needs its own interpreter. The
main run covers TensorFlow; :func:`run_pytest_on_jax` re-runs a selection of a test file
with ``KERAS_BACKEND=jax`` and judges the run by pytest's exit code and its JUnit XML
report (no failures, no errors, at least the expected number of tests run and not
skipped), never by reading pytest's printed summary. To re-run another file on JAX, add
a row to ``JAX_RERUNS`` instead of writing another subprocess in that file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@dataclass(frozen=True)
class JaxRerun:
    """One selection of a test file to run again on JAX.

    Attributes:
        test_file: a file in ``tests/``.
        selection: a ``pytest -k`` expression, or ``None`` for the whole file.
        minimum: how many tests must run (not skipped) on JAX; a selection that
            silently matches fewer (a renamed test) fails.
    """

    test_file: str
    selection: str | None
    minimum: int


JAX_RERUNS = [
    # The schedules must run inside compiled train steps on every Keras backend.
    JaxRerun("test_schedules.py", None, minimum=100),
    # Per-group rates: one compiled step updates every group, and the optimizer reloads.
    JaxRerun(
        "test_optimizers.py",
        "moves_as_its_own or single_train_step or saves_and_reloads",
        minimum=4,
    ),
    # Callbacks: updates inside fit, and nothing patched outlives a failed fit.
    JaxRerun(
        "test_callbacks.py",
        "(inside_fit or failed_fit or from_the_fit or get_current_learning_rate) and not jax",
        minimum=8,
    ),
    # Gradual unfreezing: frozen groups do not move inside JAX's compiled step either.
    JaxRerun("test_unfreezing.py", None, minimum=16),
    # A sweep on one shared network gives the fresh networks' runs bit for bit (JAX shuffles
    # the batches with NumPy, TensorFlow with its own seeds).
    JaxRerun("test_experiments.py", "reuse_network", minimum=10),
]


@dataclass(frozen=True)
class PytestReport:
    """What pytest's JUnit XML report says about one run."""

    tests: int
    failures: int
    errors: int
    skipped: int

    @property
    def ran(self) -> int:
        """Tests that ran to a verdict (not skipped)."""
        return self.tests - self.skipped


def read_junit_xml(path: Path) -> PytestReport:
    """Sum the counts of every ``<testsuite>`` in a JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        raise ValueError(f"{path} holds no <testsuite>: not a pytest JUnit XML report.")
    total = {key: 0 for key in ("tests", "failures", "errors", "skipped")}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return PytestReport(**total)


def run_pytest_on_jax(
    test_file: Path, selection: str | None, report: Path, timeout: float = 1200
) -> tuple[subprocess.CompletedProcess, PytestReport | None]:
    """Run ``pytest test_file [-k selection]`` with ``KERAS_BACKEND=jax`` in a fresh process.

    Returns:
        The finished process and the JUnit XML report it wrote (``None`` when it wrote
        none, e.g. pytest could not start).
    """
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        str(test_file),
    ]
    if selection is not None:
        command += ["-k", selection]
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return done, read_junit_xml(report) if report.exists() else None


def check_jax_run(
    done: subprocess.CompletedProcess, report: PytestReport | None, minimum: int
) -> None:
    """Fail unless pytest exited 0 and its report has no failure or error and enough tests."""
    output = f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert report is not None, (
        f"pytest wrote no JUnit XML report (exit {done.returncode}):\n{output}"
    )
    assert done.returncode == 0, f"pytest exited {done.returncode} on JAX:\n{output}"
    assert report.failures == 0 and report.errors == 0, f"{report}:\n{output}"
    assert report.ran >= minimum, (
        f"only {report.ran} tests ran on JAX, expected {minimum}: {report}"
    )


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already running on JAX")
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
@pytest.mark.parametrize("rerun", JAX_RERUNS, ids=lambda rerun: rerun.test_file)
def test_passes_on_the_jax_backend(rerun: JaxRerun, tmp_path: Path) -> None:
    done, report = run_pytest_on_jax(
        TESTS / rerun.test_file, rerun.selection, tmp_path / "report.xml"
    )
    check_jax_run(done, report, rerun.minimum)


# --------------------------------------------------------------------------- the judge itself


def _junit(tmp_path: Path, **counts: int) -> Path:
    attributes = " ".join(f'{key}="{value}"' for key, value in counts.items())
    path = tmp_path / "report.xml"
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite {attributes}/></testsuites>')
    return path


def _done(returncode: int) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(args=[], returncode=returncode, stdout="", stderr="")


def test_a_clean_report_passes(tmp_path: Path) -> None:
    report = read_junit_xml(_junit(tmp_path, tests=5, failures=0, errors=0, skipped=1))
    assert report == PytestReport(tests=5, failures=0, errors=0, skipped=1)
    check_jax_run(_done(0), report, minimum=4)


@pytest.mark.parametrize(
    ("returncode", "counts", "minimum"),
    [
        (1, {"tests": 5, "failures": 1, "errors": 0, "skipped": 0}, 1),  # a failure
        (0, {"tests": 5, "failures": 0, "errors": 1, "skipped": 0}, 1),  # an error
        (0, {"tests": 3, "failures": 0, "errors": 0, "skipped": 3}, 1),  # all skipped
        (5, {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}, 1),  # nothing selected
        (0, {"tests": 3, "failures": 0, "errors": 0, "skipped": 0}, 4),  # too few
        (2, {"tests": 4, "failures": 0, "errors": 0, "skipped": 0}, 4),  # interrupted
    ],
)
def test_a_bad_run_fails(tmp_path: Path, returncode: int, counts: dict, minimum: int) -> None:
    report = read_junit_xml(_junit(tmp_path, **counts))
    with pytest.raises(AssertionError):
        check_jax_run(_done(returncode), report, minimum)


def test_a_run_without_a_report_fails() -> None:
    with pytest.raises(AssertionError, match="no JUnit XML"):
        check_jax_run(_done(4), None, minimum=1)
