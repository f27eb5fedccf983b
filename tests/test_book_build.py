"""Build the whole book the way the README says, and look at what came out.

The build executes every chapter against the current lrtools (``execute_notebooks:
force``) and runs Sphinx with ``-W``, so a warning, a failed cell or a failed
assert fails this test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(ROOT.glob("chapters/*.ipynb"))


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-W", "-n"]
    # A kernel that inherits MPLBACKEND=Agg draws no inline figures.
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, f"book build failed:\n{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    return out / "_build" / "html"


def test_every_chapter_becomes_a_page_with_its_figures(built_site):
    assert (built_site / "index.html").exists() or (built_site / "intro.html").exists()
    for notebook in CHAPTERS:
        page = built_site / "chapters" / f"{notebook.stem}.html"
        assert page.exists(), f"{notebook.name} has no page"
        html = page.read_text(encoding="utf-8")
        assert re.search(r"<img[^>]+src=\"[^\"]*_images/", html), f"{page.name} shows no figure"
        assert "Traceback" not in html and "AssertionError" not in html, page.name


def test_api_reference_lists_the_schedules(built_site):
    html = (built_site / "api.html").read_text(encoding="utf-8")
    for name in ("CosineDecay", "OneCycle", "Warmup", "CyclicLR"):
        assert name in html, name
