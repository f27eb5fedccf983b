"""Cheap structural checks of the book: no notebook is executed here.

The chapters are executed by ``pytest --nbval-lax chapters`` and by the book build in CI. These
tests check, in well under a second, the conventions a full build would only reveal late (or
never): every chapter is in the table of contents, notebooks are stored clean, the Colab set-up
cell and the hidden checks are in place, citations resolve, and the configuration keeps the
build offline and honest.
"""

from __future__ import annotations

import ast
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))
# Appendix pages (the "Measured" page of the benchmarks) are notebooks too, stored and checked like
# the chapters, but they are not chapters: no Colab cell and no "In your own project" box.
ALL_NOTEBOOKS = NOTEBOOKS + sorted((ROOT / "appendix").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
REPOSITORY_URL = CONFIG["repository"]["url"]

# {cite}`a`, {cite:p}`a,b`, {cite:t}`a, b`: the keys between the backticks.
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIB_KEY = re.compile(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)
PROJECT_URL = re.compile(r"https://github\.com/lr-hands-on/[\w.-]+")


def toc_files(toc: dict) -> list[str]:
    """Return every ``file:`` entry of a jb-book table of contents, in reading order."""
    files = [toc["root"]]
    pending = list(toc.get("chapters", [])) + [
        chapter for part in toc.get("parts", []) for chapter in part.get("chapters", [])
    ]
    while pending:
        entry = pending.pop(0)
        if "file" in entry:
            files.append(entry["file"])
        pending[:0] = entry.get("sections", [])
    return files


def page_path(entry: str) -> Path:
    """Return the file a table-of-contents entry (given without a suffix) refers to."""
    candidates = [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
    existing = [path for path in candidates if path.exists()]
    assert existing, f"_toc.yml lists {entry!r}, but neither {entry}.md nor {entry}.ipynb exists"
    return existing[0]


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def python_source(cell_source: str) -> str:
    """Return a code cell's source with IPython magics and shell escapes replaced by ``pass``."""
    lines = cell_source.splitlines()
    return "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass"
        if line.lstrip().startswith(("%", "!"))
        else line
        for line in lines
    )


def test_notebooks_exist():
    assert NOTEBOOKS, "chapters/ holds no notebook"


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    entries = toc_files(TOC)
    pages = [page_path(entry) for entry in entries]
    assert len(set(pages)) == len(pages), "a page is listed twice in _toc.yml"
    listed_notebooks = {path for path in pages if path.suffix == ".ipynb"}
    notebooks = set(ALL_NOTEBOOKS)
    assert listed_notebooks == notebooks, (
        "the notebooks in chapters/ and appendix/ and those in _toc.yml differ: "
        f"not listed {sorted(p.name for p in notebooks - listed_notebooks)}, "
        f"listed but not there {sorted(p.name for p in listed_notebooks - notebooks)}"
    )


def test_chapters_are_listed_in_file_name_order():
    listed = [entry for entry in toc_files(TOC) if entry.startswith("chapters/")]
    assert listed == sorted(listed)


def test_config_keeps_the_build_offline_and_executed():
    execute = CONFIG["execute"]
    # jupyter-cache keys on code cells only: "cache" could show results of an older lrtools.
    assert execute["execute_notebooks"] == "force"
    assert execute["timeout"] >= 60
    assert execute.get("allow_errors") is False
    assert execute.get("raise_on_error") is True
    sphinx = CONFIG.get("sphinx", {})
    extensions = sphinx.get("extra_extensions") or []
    assert not any("intersphinx" in extension for extension in extensions)
    assert "intersphinx_mapping" not in (sphinx.get("config") or {})
    assert "references.bib" in CONFIG["bibtex_bibfiles"]
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stored_clean(path):
    notebook = read_notebook(path)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} is stored with outputs"
            assert cell.execution_count is None, f"cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_first_cell_installs_lrtools_in_colab_only(path):
    first = read_notebook(path).cells[0]
    assert first.cell_type == "code"
    assert "remove-input" in first.metadata.get("tags", [])
    source = first.source
    assert 'if "google.colab" in sys.modules:' in source
    install = [line.strip() for line in source.splitlines() if "pip install" in line]
    assert install == [f'%pip install -q "lrtools-keras[book] @ git+{REPOSITORY_URL}"'], install


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: path.name)
def test_measured_claims_are_checked_in_hidden_cells(path):
    hidden_checks = [
        cell
        for cell in read_notebook(path).cells
        if cell.cell_type == "code"
        and {"remove-cell", "hide-input"} & set(cell.metadata.get("tags", []))
        and any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(cell.source)))
    ]
    assert hidden_checks, "no hidden cell (tag remove-cell or hide-input) with an assert"


def message_text(message: ast.expr) -> str:
    """Return the literal text of an assert's message (the parts of an f-string outside ``{}``)."""
    return "".join(
        node.value
        for node in ast.walk(message)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: path.name)
def test_check_cells_name_their_claim_and_report_what_they_measured(path):
    # In Colab and JupyterLab the check cells run in plain sight: a failed check must say which
    # claim of the text it checks and what it measured, not stop on a bare AssertionError.
    for index, cell in enumerate(read_notebook(path).cells):
        if cell.cell_type != "code":
            continue
        asserts = [
            node
            for node in ast.walk(ast.parse(python_source(cell.source)))
            if isinstance(node, ast.Assert)
        ]
        if not asserts:
            continue
        tags = set(cell.metadata.get("tags", []))
        assert {"remove-cell", "hide-input"} & tags, f"cell {index} checks claims but is not hidden"
        first_line = cell.source.splitlines()[0]
        assert first_line.startswith("# Claim: ") and len(first_line) > len("# Claim: "), (
            f"cell {index} does not start with a '# Claim: ...' line: {first_line!r}"
        )
        for node in asserts:
            statement = ast.get_source_segment(cell.source, node)
            assert isinstance(node.msg, ast.Constant | ast.JoinedStr), (
                f"cell {index}: the assert has no message (a string) saying what it measured: "
                f"{statement}"
            )
            assert "expected" in message_text(node.msg), (
                f"cell {index}: the assert's message does not say what was expected: {statement}"
            )


BACKEND_MODULES = {"keras", "lrtools", "tensorflow"}
QUIET_TENSORFLOW = 'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")'


def backend_import_line(source: str) -> int | None:
    """Return the line of a cell's first import of Keras, TensorFlow or lrtools, or None."""
    lines = [
        node.lineno
        for node in ast.walk(ast.parse(python_source(source)))
        if (
            isinstance(node, ast.Import)
            and any(alias.name.split(".")[0] in BACKEND_MODULES for alias in node.names)
        )
        or (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] in BACKEND_MODULES
        )
    ]
    return min(lines, default=None)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: path.name)
def test_tensorflow_start_up_log_is_quieted_before_the_first_import(path):
    # TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it is first imported (through Keras or
    # lrtools): set later, the C++ start-up lines ("failed call to cuInit", ...) reach the output.
    cells = [cell for cell in read_notebook(path).cells if cell.cell_type == "code"]
    first = next((cell for cell in cells if backend_import_line(cell.source)), None)
    assert first is not None, "no cell imports Keras or lrtools"
    tree = ast.parse(python_source(first.source))
    quiet = [
        node.lineno
        for node in tree.body
        if isinstance(node, ast.Expr)
        and ast.unparse(node.value) == QUIET_TENSORFLOW.replace('"', "'")
    ]
    assert quiet, f"the first cell that imports Keras or lrtools does not run {QUIET_TENSORFLOW}"
    assert quiet[0] < backend_import_line(first.source), (
        f"{QUIET_TENSORFLOW} comes after the first import of Keras or lrtools"
    )
    # TensorFlow prints a few lines while loading, before it reads that variable; lrtools holds
    # them to it (lrtools/_quiet.py), but only if it is what imports TensorFlow.
    first_import = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and getattr(node, "lineno", 0) == backend_import_line(first.source)
    )
    names = (
        [alias.name for alias in first_import.names]
        if isinstance(first_import, ast.Import)
        else [first_import.module]
    )
    assert names[0].split(".")[0] == "lrtools", (
        f"the first backend import is {names[0]}, expected lrtools (import lrtools before Keras)"
    )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_defines_no_functions_or_classes(path):
    # A helper a notebook needs belongs in lrtools, with a test.
    for index, cell in enumerate(read_notebook(path).cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(python_source(cell.source))
        definitions = [
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        assert not definitions, f"cell {index} defines {definitions}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_downloads_nothing(path):
    cells = read_notebook(path).cells
    # The Colab set-up cell installs lrtools from the network, in Colab only.
    code = "\n".join(
        c.source for c in cells if c.cell_type == "code" and "google.colab" not in c.source
    )
    for forbidden in ("load_data(", "load_dataset(", "urlopen(", "requests.get(", "wget "):
        assert forbidden not in code, f"{forbidden!r} needs the network"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_chapter_has_a_title_and_an_in_your_own_project_box(path):
    markdown = [c.source for c in read_notebook(path).cells if c.cell_type == "markdown"]
    assert markdown and markdown[0].lstrip().startswith("# "), "the first text cell is no title"
    assert any("{admonition} In your own project" in text for text in markdown)


def book_texts() -> dict[str, str]:
    """Return the Markdown text of every page in the table of contents, by file name."""
    texts = {}
    for entry in toc_files(TOC):
        path = page_path(entry)
        if path.suffix == ".md":
            texts[path.name] = path.read_text(encoding="utf-8")
        else:
            cells = read_notebook(path).cells
            texts[path.name] = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    return texts


def test_every_citation_is_in_the_bibliography():
    bib_keys = set(BIB_KEY.findall((ROOT / "references.bib").read_text(encoding="utf-8")))
    cited = {
        (page, key.strip())
        for page, text in book_texts().items()
        for keys in CITE_ROLE.findall(text)
        for key in keys.split(",")
    }
    assert cited, "no page cites anything"
    missing = sorted((page, key) for page, key in cited if key not in bib_keys)
    assert not missing, f"cited but not in references.bib: {missing}"


def test_every_project_link_uses_the_configured_repository():
    texts = book_texts()
    texts["setup cells"] = "\n".join(read_notebook(path).cells[0].source for path in NOTEBOOKS)
    links = {(page, url) for page, text in texts.items() for url in PROJECT_URL.findall(text)}
    assert links, "no page links to the repository"
    wrong = sorted((page, url) for page, url in links if url != REPOSITORY_URL)
    assert not wrong, f"links that differ from _config.yml's {REPOSITORY_URL}: {wrong}"


def test_figure_captions_are_named_once():
    names = []
    for path in ALL_NOTEBOOKS:
        for cell in read_notebook(path).cells:
            figure = cell.metadata.get("mystnb", {}).get("figure")
            if figure:
                assert figure.get("caption", "").strip(), f"{path.name}: a figure has no caption"
                names.extend([figure["name"]] if "name" in figure else [])
    assert len(names) == len(set(names)), f"figure names used twice: {names}"


def test_api_page_documents_every_public_module():
    api = (ROOT / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"\.\. automodule:: (lrtools\.\w+)", api))
    modules = {
        f"lrtools.{module.name}"
        for module in pkgutil.iter_modules([str(ROOT / "lrtools")])
        if not module.name.startswith("_")
    }
    assert modules <= documented, f"not on the API page: {sorted(modules - documented)}"
