"""Shared pytest set-up: quiet TensorFlow's C++ logs, and build the book once per session.

Do not set MPLBACKEND here: it is inherited by the notebook kernels that nbval and
the book build start, and a kernel with MPLBACKEND=Agg shows no figures.
Matplotlib already picks a headless backend when there is no display.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
_RUNS = "lrbook-notebook-runs"


def pytest_configure(config: pytest.Config) -> None:
    """Keep the notebooks nbval executes, for the book build (see ``_notebook_runs.py``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _notebook_runs import NotebookRuns

    config.pluginmanager.register(NotebookRuns(ROOT), _RUNS)


@pytest.fixture(scope="session")
def built_site(request, tmp_path_factory) -> Path:
    """Build the whole book the way the README says and return its ``_build/html`` folder.

    Sphinx runs with ``-W -n``, so a warning, a failed cell or a failed ``assert`` fails every
    test that uses the site. It is built once per session and shared by ``test_book_build.py``
    and ``test_site.py``. Notebooks that nbval already executed in this session, every cell
    passing, are rendered with those outputs (see ``_notebook_runs.py``); the build executes the
    others against the current lrtools, as ``jupyter-book build .`` does.

    ``LRBOOK_SITE=path/to/_build/html`` skips the build and checks a site built before, which is
    quicker while working on the website tests; CI never sets it.
    """
    if os.environ.get("LRBOOK_SITE"):
        return Path(os.environ["LRBOOK_SITE"])
    out = tmp_path_factory.mktemp("book")
    source, executed = request.config.pluginmanager.get_plugin(_RUNS).stage_book(out / "source")
    if executed:  # render these as nbval ran them; execute the rest
        config = source / "_config.yml"
        patterns = "".join(f"\n    - {path}" for path in executed)
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace("\nexecute:", f"\nexecute:\n  exclude_patterns:{patterns}", 1)
        )
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(source), "--path-output", str(out), "-W", "-n"]
    # A kernel that inherits MPLBACKEND=Agg draws no inline figures.
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, f"book build failed:\n{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    return out / "_build" / "html"
