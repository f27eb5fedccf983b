"""lrtools installed from its wheel, and chapters run alone, in one fresh virtual environment.

The wheel is built from this checkout (``python -m build --wheel``) and checked with
``twine check``. A new virtual environment (no system site-packages, no ``PYTHONPATH``, run from
an empty folder, so nothing of this repository can be imported) gets only
``pip install "<wheel>[book]"``, as a reader's would. In it:

- ``import lrtools``, one schedule, one range test and one callback run;
- chapter notebooks, each copied alone into an empty folder, run top to bottom (the kernel is the
  environment's own ipykernel, which ``[book]`` installs; the outer interpreter's nbclient drives
  it).

By default the notebooks run are the cheapest chapter and every chapter that switches to another
backend than TensorFlow (chapters 5 and 8 run on JAX). ``LRBOOK_STANDALONE_ALL=1`` runs every
chapter; ``LRBOOK_STANDALONE=0`` skips this module (the install alone takes a minute or two).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
# The cheapest chapter, and the chapters that switch to JAX (KERAS_BACKEND="jax").
DEFAULT_CHAPTERS = {"01_gradient_descent", "05_adaptive_optimizers", "08_warmup_one_cycle"}
RUN_ALL = os.environ.get("LRBOOK_STANDALONE_ALL") == "1"
SELECTED = [path for path in CHAPTERS if RUN_ALL or path.stem in DEFAULT_CHAPTERS]
CELL_TIMEOUT_S = 600
# Nothing of the outer environment that could point the new one at this checkout or at a backend.
DROPPED_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "KERAS_BACKEND", "MPLBACKEND")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("LRBOOK_STANDALONE") == "0", reason="LRBOOK_STANDALONE=0 skips it"
    ),
]


def clean_environment(venv_dir: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_VARIABLES}
    if venv_dir is not None:
        env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv_dir)
    return env


def run(command: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel of this checkout into an empty folder and return its path."""
    # Built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info/
    # into the folder it builds, and the checkout stays clean.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "lrtools", source / "lrtools", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("dist")
    started = time.perf_counter()
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)], timeout=600)
    print(f"wheel built in {time.perf_counter() - started:.0f} s")
    (built,) = out.glob("lrtools_keras-*-py3-none-any.whl")
    return built


@pytest.fixture(scope="module")
def book_venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with only ``pip install "<wheel>[book]"``; its folder."""
    folder = tmp_path_factory.mktemp("standalone") / "venv"
    started = time.perf_counter()
    venv.EnvBuilder(with_pip=True, system_site_packages=False, symlinks=True).create(folder)
    python = folder / "bin" / "python"
    # --no-compile: byte-compiling TensorFlow's thousands of files costs a minute and buys nothing
    # here; Python compiles what it imports.
    run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", f"{wheel}[book]"],
        timeout=1200,
        env=clean_environment(folder),
        cwd=folder,
    )
    print(f"fresh environment with [book] installed in {time.perf_counter() - started:.0f} s")
    return folder


def test_wheel_passes_twine_check(wheel):
    run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], timeout=120)


SMOKE = """
import json, pathlib, sys
import numpy as np
import keras
import lrtools
from lrtools import callbacks, schedules

schedule = schedules.CosineDecay(0.1, decay_steps=10)
rates = np.asarray(schedule(np.arange(11)))

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))[:, None]
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
result = lrtools.lr_range_test(
    model, x, y, start_lr=1e-4, end_lr=1.0, num_steps=20, batch_size=16, verbose=0
)

history = model.fit(
    x, y, epochs=3, batch_size=16, verbose=0,
    callbacks=[callbacks.LRScheduler(lambda epoch: 0.01 * 0.5**epoch, unit="epoch")],
)
print(json.dumps({
    "lrtools": str(pathlib.Path(lrtools.__file__).resolve()),
    "prefix": str(pathlib.Path(sys.prefix).resolve()),
    "backend": keras.backend.backend(),
    "rates": [float(rates[0]), float(rates[5]), float(rates[10])],
    "range_test_steps": len(result.lrs),
    "epoch_rates": [float(r) for r in history.history["learning_rate"]],
}))
"""


def test_wheel_installs_and_works_in_a_fresh_environment(book_venv, tmp_path):
    done = run(
        [str(book_venv / "bin" / "python"), "-c", SMOKE],
        timeout=600,
        env=clean_environment(book_venv),
        cwd=tmp_path,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # lrtools comes from the environment's site-packages, not from this checkout.
    assert report["lrtools"].startswith(report["prefix"]), report
    assert "site-packages" in report["lrtools"]
    assert not report["lrtools"].startswith(str(ROOT)), report
    assert report["backend"] == "tensorflow"
    assert report["rates"] == pytest.approx([0.1, 0.05, 0.0], abs=1e-6)
    assert 2 <= report["range_test_steps"] <= 20
    assert report["epoch_rates"] == pytest.approx([0.01, 0.005, 0.0025], rel=1e-5)


@pytest.fixture(scope="module")
def kernel_name(book_venv, tmp_path_factory) -> Iterator[str]:
    """A Jupyter kernel spec that starts the fresh environment's own Python and ipykernel."""
    name = "lrbook-standalone"
    folder = tmp_path_factory.mktemp("jupyter") / "kernels" / name
    folder.mkdir(parents=True)
    spec = {
        "argv": [str(book_venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f"]
        + ["{connection_file}"],
        "display_name": "lrtools-keras[book], fresh",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    # Jupyter looks for kernel specs in JUPYTER_PATH first; put back what was there afterwards.
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder.parent.parent), before]))
    yield name
    if before is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = before


@pytest.mark.parametrize("chapter", SELECTED, ids=lambda path: path.stem)
def test_chapter_runs_alone_from_the_wheel(chapter, book_venv, kernel_name, tmp_path):
    from nbclient import NotebookClient

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(chapter, alone / chapter.name)
    assert [path.name for path in alone.iterdir()] == [chapter.name]
    notebook = nbformat.read(alone / chapter.name, as_version=4)
    # One cell more, at the end: where lrtools came from, and which backend the chapter ran on.
    notebook.cells.append(nbformat.v4.new_code_cell(WHERE_FROM))
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(alone)}},
    )
    started = time.perf_counter()
    client.execute(env=clean_environment(book_venv), cwd=str(alone))
    print(f"{chapter.stem} ran alone in {time.perf_counter() - started:.0f} s")
    text = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    report = json.loads(text.strip().splitlines()[-1])
    assert report["lrtools"].startswith(str(book_venv.resolve())), report
    assert not report["lrtools"].startswith(str(ROOT)), report
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    expected = "jax" if 'os.environ["KERAS_BACKEND"] = "jax"' in source else "tensorflow"
    assert report["backend"] == expected, report


WHERE_FROM = """
import json, pathlib, keras, lrtools
print(json.dumps({
    "lrtools": str(pathlib.Path(lrtools.__file__).resolve()),
    "backend": keras.backend.backend(),
}))
"""
