"""Keep what nbval executes, so that the book build can show it instead of running it again.

Under ``python -m pytest`` every chapter is executed by nbval, cell by cell. The book build
(the ``built_site`` fixture) used to execute every chapter a second time, which doubled the
largest part of CI's time. This plugin records each cell's outputs as nbval receives them from
the kernel; once every cell of a notebook has passed, the notebook with its outputs is kept.
The build then renders kept notebooks as they are and executes only the others, so a build in a
session that ran no notebook (``pytest tests/test_site.py``) still executes everything.

It also prints how long each notebook took, the per-chapter times the book's budget is about.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import IPyNbCell

# Folders of the repository a book build does not read.
_NOT_THE_BOOK = (".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__", ".*cache")


@dataclass
class _Run:
    """One notebook as nbval ran it: its cells with outputs, how many passed, its time."""

    notebook: nbformat.NotebookNode
    cells: int
    passed: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.passed == self.cells


class NotebookRuns:
    """A pytest plugin: notebooks executed by nbval in this session, with their outputs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: dict[Path, _Run] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Move the tests that use the built book after every notebook, so it can reuse them."""
        site = [item for item in items if "built_site" in getattr(item, "fixturenames", ())]
        items[:] = [item for item in items if item not in site] + site

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if not isinstance(item, IPyNbCell) or report.when != "call":
            return
        notebook = item.parent.nb
        path = Path(str(item.parent.fspath)).resolve()
        if path not in self.runs:
            cells = sum(1 for cell in notebook.cells if cell.cell_type == "code")
            self.runs[path] = _Run(copy.deepcopy(notebook), cells)
        run = self.runs[path]
        run.seconds += report.duration
        if not report.passed:
            run.failed += 1
            return
        run.passed += 1
        code_cells = [cell for cell in run.notebook.cells if cell.cell_type == "code"]
        cell = code_cells[item.cell_num]
        cell.execution_count = run.passed
        cell.outputs = [_as_output(output, run.passed) for output in item.test_outputs or []]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.runs:
            return
        terminalreporter.section("notebook execution times (nbval)")
        total = 0.0
        for path, run in sorted(self.runs.items()):
            state = "passed" if run.complete else f"{run.failed} failed"
            terminalreporter.write_line(f"{run.seconds:7.1f} s  {path.name}  ({state})")
            total += run.seconds
        terminalreporter.write_line(f"{total:7.1f} s  in all")

    def stage_book(self, destination: Path) -> tuple[Path, list[str]]:
        """Copy the book's sources to ``destination`` with every complete notebook executed.

        Returns:
            The staged book's root, and the notebooks (relative paths) that need no execution.
        """
        ignore = shutil.ignore_patterns(*_NOT_THE_BOOK)
        shutil.copytree(self.root, destination, ignore=ignore, symlinks=True)
        executed = []
        for path, run in self.runs.items():
            if not run.complete or not path.is_relative_to(self.root):
                continue
            relative = path.relative_to(self.root).as_posix()
            nbformat.validate(run.notebook)
            nbformat.write(run.notebook, destination / relative)
            executed.append(relative)
        return destination, sorted(executed)


def _as_output(output: dict, count: int) -> nbformat.NotebookNode:
    """One output as nbval recorded it, in the form a stored notebook holds it."""
    output = nbformat.from_dict(copy.deepcopy(dict(output)))
    if output.get("output_type") == "execute_result":
        output["execution_count"] = count
    return output
