"""Build the whole book the way the README says, and look at what came out.

The build (the session fixture ``built_site`` in ``conftest.py``) shows every chapter executed
against the current lrtools (by nbval earlier in the session, or by the build itself) and runs
Sphinx with ``-W``, so a warning, a failed cell or a failed assert fails these tests.
``test_site.py`` opens the same build in a browser.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("chapters/*.ipynb")) + sorted(ROOT.glob("appendix/*.ipynb"))


def test_every_notebook_becomes_a_page_with_its_figures(built_site):
    assert (built_site / "index.html").exists() or (built_site / "intro.html").exists()
    for notebook in NOTEBOOKS:
        page = built_site / notebook.parent.name / f"{notebook.stem}.html"
        assert page.exists(), f"{notebook.name} has no page"
        html = page.read_text(encoding="utf-8")
        assert re.search(r"<img[^>]+src=\"[^\"]*_images/", html), f"{page.name} shows no figure"
        assert "Traceback" not in html and "AssertionError" not in html, page.name


def test_api_reference_lists_the_schedules(built_site):
    html = (built_site / "api.html").read_text(encoding="utf-8")
    for name in ("CosineDecay", "OneCycle", "Warmup", "CyclicLR"):
        assert name in html, name
