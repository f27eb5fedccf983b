"""Every lrtools module imports with only the core dependencies, or names the extra it needs.

lrtools's core needs Keras and NumPy; plotting, DataFrames, the bundled data set and
keras-tuner come with extras (``pyproject.toml``). A fresh interpreter that cannot import
the optional packages (a meta-path blocker makes them raise ``ModuleNotFoundError``, as
if they were not installed) imports every module found in the package, one after the
other. Each must import, or raise an ``ImportError`` whose message names the extra and
the pip command that installs it. The list of modules comes from ``pkgutil``, so a new
module is checked without editing this file.
"""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

import lrtools
from lrtools._extras import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("pandas", "matplotlib", "seaborn", "sklearn", "keras_tuner")
"""Top-level packages that only the extras bring."""

MODULES = sorted(f"lrtools.{module.name}" for module in pkgutil.iter_modules(lrtools.__path__))

BLOCKER = f"""
import importlib.abc, sys

BLOCKED = {OPTIONAL!r}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
"""

IMPORT_EVERY_MODULE = """
import importlib, json, sys

outcomes = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        outcomes[name] = {"error": type(error).__name__, "message": str(error)}
    else:
        outcomes[name] = {"error": None, "message": ""}
print("OUTCOMES" + json.dumps(outcomes))
"""


def run_without_extras(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the optional packages cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def extras() -> set[str]:
    """The extras the distribution declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project.get("optional-dependencies", {}))


def names_an_extra(message: str) -> bool:
    """Whether ``message`` names one of the extras, with the pip command that installs it."""
    return any(
        f"[{extra}]" in message and f'pip install "{DISTRIBUTION}[{extra}]"' in message
        for extra in extras()
    )


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, str | None]]:
    """Import every module in one interpreter without the extras; what happened to each."""
    done = run_without_extras(IMPORT_EVERY_MODULE, *MODULES)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.split("OUTCOMES", 1)[1])


def test_the_blocker_hides_every_optional_package():
    code = """
    import importlib, json
    hidden = []
    for name in BLOCKED:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            hidden.append(name)
    print("HIDDEN" + json.dumps(hidden))
    """
    done = run_without_extras(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(json.loads(done.stdout.split("HIDDEN", 1)[1])) == sorted(OPTIONAL)


def test_every_module_is_found():
    assert {"lrtools.experiments", "lrtools.models", "lrtools.runtime"} <= set(MODULES)
    assert all(re.fullmatch(r"lrtools\.\w+", name) for name in MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_or_names_its_extra(outcomes, module):
    outcome = outcomes[module]
    if outcome["error"] is None:
        return
    assert outcome["error"] in ("ImportError", "ModuleNotFoundError"), (
        f"importing {module} without the extras raised {outcome['error']}: {outcome['message']}"
    )
    assert names_an_extra(outcome["message"]), (
        f"{module} needs an optional package but its error does not name the extra and the "
        f"pip command: {outcome['message']!r}"
    )


def test_lazy_submodules_are_the_modules_of_the_package():
    public = {name.removeprefix("lrtools.") for name in MODULES if "._" not in name}
    assert public == {"schedules", *lrtools._SUBMODULES}


def test_what_needs_an_extra_says_which_when_it_is_called():
    """The core of each module works without extras; the parts that need one name it."""
    code = """
    import json, numpy as np
    import lrtools
    from lrtools.models import digits_cnn

    results = {"model": digits_cnn().output_shape[-1]}
    calls = {
        "load_digits": lambda: lrtools.data.load_digits(),
        "run_experiment": lambda: lrtools.experiments.run_experiment(
            digits_cnn, {"sgd": lambda: None}, None, epochs=1
        ),
        "search_learning_rate": lambda: lrtools.tuning.search_learning_rate(
            lambda rate: None, np.zeros((4, 1)), np.zeros(4), validation_data=None
        ),
    }
    for name, call in calls.items():
        try:
            call()
        except ImportError as error:
            results[name] = str(error)
        else:
            results[name] = None
    print("RESULTS" + json.dumps(results))
    """
    done = run_without_extras(code)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULTS", 1)[1])
    assert results.pop("model") == 10  # lrtools.models needs no pandas
    expected = {"load_digits": "data", "run_experiment": "plot", "search_learning_rate": "tuning"}
    for name, extra in expected.items():
        assert results[name] is not None, f"{name} ran without its optional packages"
        assert f'pip install "{DISTRIBUTION}[{extra}]"' in results[name], results[name]
