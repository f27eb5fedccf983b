"""lrtools across processes and devices: MultiWorkerMirroredStrategy, and DataParallel on JAX.

Each test starts worker processes of ``_distributed_worker.py`` on this machine
(127.0.0.1 only) and compares what they record: the rate (and momentum) of
every step under a schedule inside the optimizer, ``LRScheduler`` and
``OneCycle``, and the curve and the restore of ``lr_range_test``. A one-process
run of the same script is the reference.

Keras 3 cannot ``fit`` (nor ``train_on_batch``) under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, open): the workers train
with a custom loop that drives lrtools's callbacks through a ``CallbackList``, as
Keras's guide to custom training loops does, and the range test runs its own step
through the strategy (the curve of one process on every worker; validation data refused).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

_WORKER = Path(__file__).with_name("_distributed_worker.py")
_ROOT = Path(__file__).resolve().parents[1]
_TIMEOUT_S = 300
_RUNS = ("in_optimizer", "lr_scheduler", "one_cycle")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _environment(backend: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    return {**env, "KERAS_BACKEND": backend, "PYTHONPATH": str(_ROOT), **extra}


def _start(mode: str, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(_WORKER), mode, str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: list[subprocess.Popen], outs: list[Path]) -> list[dict]:
    try:
        for process in processes:
            output, _ = process.communicate(timeout=_TIMEOUT_S)
            assert process.returncode == 0, f"worker failed:\n{output[-4000:]}"
    finally:
        for process in processes:
            process.kill()
    return [json.loads(out.read_text()) for out in outs]


def _reference(backend: str, tmp_path: Path) -> dict:
    out = tmp_path / f"single_{backend}.json"
    return _finish([_start("single", out, _environment(backend))], [out])[0]


def _assert_same_schedule(run: dict, reference: dict, name: str) -> None:
    assert run["steps"] == list(range(len(run["steps"]))) == reference["steps"], name
    # Equal up to float32 arithmetic: inside fit the compiled step computes the rate in
    # float32, a custom loop's callback computes it in float64 and rounds it once.
    np.testing.assert_allclose(run["rates"], reference["rates"], rtol=1e-5, err_msg=name)
    if "momenta" in reference:
        np.testing.assert_allclose(run["momenta"], reference["momenta"], rtol=1e-5, err_msg=name)
        assert len(set(np.round(run["momenta"], 6))) > 2, "the momentum did not cycle"


def test_multiworker_mirrored_strategy_gives_every_worker_the_same_rates(tmp_path: Path) -> None:
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    outs = [tmp_path / f"worker{index}.json" for index in range(2)]
    processes = []
    for index, out in enumerate(outs):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = _environment("tensorflow", TF_CONFIG=json.dumps(config))
        processes.append(_start("multiworker", out, env))
    first, second = _finish(processes, outs)
    reference = _reference("tensorflow", tmp_path)

    assert first["replicas"] == second["replicas"] == 2
    for name in _RUNS:
        for worker in (first, second):
            _assert_same_schedule(worker[name], reference[name], name)
        # Replicas stay in sync: the same losses and the same weights on both workers.
        assert first[name]["loss"] == second[name]["loss"], name
        assert first[name]["weights"] == second[name]["weights"], name
    # Keras 3 cannot run train_on_batch under this strategy (keras-team/keras#20585); the
    # range test runs its own step through the strategy: the one-process curve on both
    # workers, and every variable back. Validation (evaluate) is refused, saying why.
    for worker in (first, second):
        test = worker["range_test_fresh"]
        assert test["restored"] and test["rate_after"] == pytest.approx(0.01)
        np.testing.assert_allclose(test["lrs"], reference["range_test_fresh"]["lrs"], rtol=1e-6)
        np.testing.assert_allclose(
            test["losses"], reference["range_test_fresh"]["losses"], rtol=1e-4
        )
        error = worker.get("range_test_error", "")
        assert error.startswith("ValueError") and "MultiWorkerMirroredStrategy" in error, error
        assert "validation_data" in error, error
    assert first["range_test_fresh"]["losses"] == second["range_test_fresh"]["losses"]


def test_jax_data_parallel_matches_one_device(tmp_path: Path) -> None:
    out = tmp_path / "jax_parallel.json"
    env = _environment("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    parallel = _finish([_start("jax", out, env)], [out])[0]
    reference = _reference("jax", tmp_path)

    assert parallel["backend"] == "jax" and parallel["replicas"] == 2
    for name in _RUNS:
        _assert_same_schedule(parallel[name], reference[name], name)
        # The same global batches on two devices compute the same updates as on one.
        np.testing.assert_allclose(parallel[name]["loss"], reference[name]["loss"], rtol=1e-4)
        for got, want in zip(parallel[name]["weights"], reference[name]["weights"], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=name)
    test = parallel["range_test"]
    assert test["restored"] and test["rate_after"] == pytest.approx(0.01)
    np.testing.assert_allclose(test["losses"], reference["range_test"]["losses"], rtol=1e-4)
