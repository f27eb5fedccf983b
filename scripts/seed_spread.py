"""Run a chapter with other seeds and record every check instead of stopping at the first.

A chapter's check cells (code cells whose first line is ``# Claim: ...``) assert on measured
figures. To set their bounds from the spread over seeds rather than from one run, this script
executes a copy of a notebook in which

- each ``OLD=>NEW`` substitution given with ``--sub`` is applied to the code cells (for example
  ``--sub "SEEDS = [0, 1]=>SEEDS = [2, 3]"``; a substitution that matches nothing is an error),
- every ``assert cond, msg`` inside a check cell is rewritten (with :mod:`ast`) into a call that
  records ``(claim, line, passed, message)`` and carries on,

and writes the records, the substitutions and the notebook's wall time as JSON (``--out``, and a
summary on stdout). Errors other than failed asserts are recorded too (``passed`` is ``None``).
The kernel runs in ``chapters/`` (as nbval and the book build do), each cell with a 600 s limit.

Usage, from the repository root::

    python scripts/seed_spread.py chapters/02_fixed_rates.ipynb \\
        --sub "SEEDS = [0, 1]=>SEEDS = [2, 3]" --out /tmp/ch2_s23.json
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

CLAIM = "# Claim"
RECORDER = """
import json as _spread_json

def _spread_record(claim, line, test, message):
    try:
        passed = bool(test())
    except Exception as error:  # noqa: BLE001
        passed, message = None, lambda: f"{type(error).__name__}: {error}"
    try:
        text = str(message())
    except Exception as error:  # noqa: BLE001
        text = f"message failed: {type(error).__name__}: {error}"
    with open(RECORDS_PATH, "a") as _file:
        _file.write(_spread_json.dumps(dict(claim=claim, line=line, passed=passed, message=text)))
        _file.write("\\n")
"""


class _AssertRecorder(ast.NodeTransformer):
    """Replace ``assert test, msg`` by a call that records the outcome and carries on."""

    def __init__(self, claim: str) -> None:
        self.claim = claim

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:  # noqa: N802 (ast's naming)
        message = node.msg if node.msg is not None else ast.Constant("")
        call = ast.Call(
            func=ast.Name("_spread_record", ast.Load()),
            args=[
                ast.Constant(self.claim),
                ast.Constant(node.lineno),
                ast.Lambda(_no_arguments(), node.test),
                ast.Lambda(_no_arguments(), message),
            ],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(call), node)


def _no_arguments() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])


def record_asserts(source: str) -> str:
    """Return a check cell's source with each assert rewritten to record and continue.

    Args:
        source: the cell's code; its first line names the claim (``# Claim: ...``).

    Returns:
        The rewritten code (comments dropped), or ``source`` unchanged if it is not a check cell.

    Example:
        >>> "assert" in record_asserts("# Claim: x\\nassert 1 < 0, 'expected'")
        False
    """
    first = source.splitlines()[0] if source else ""
    if not first.startswith(CLAIM):
        return source
    claim = first.removeprefix(CLAIM).lstrip(": ").strip()
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: run the cell as it is
        return source
    tree = ast.fix_missing_locations(_AssertRecorder(claim).visit(tree))
    return ast.unparse(tree)


def run(notebook: Path, subs: list[tuple[str, str]], records: Path) -> float:
    """Execute a rewritten copy of ``notebook``; append records to ``records``; return seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    for old, new in subs:
        hits = [cell for cell in nb.cells if cell.cell_type == "code" and old in cell.source]
        if not hits:
            raise SystemExit(f"substitution matches no code cell: {old!r}")
        for cell in hits:
            cell.source = cell.source.replace(old, new)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = record_asserts(cell.source)
    nb.cells.insert(
        0, nbformat.v4.new_code_cell(RECORDER.replace("RECORDS_PATH", repr(str(records))))
    )
    client = NotebookClient(
        nb, timeout=600, allow_errors=True, resources={"metadata": {"path": notebook.parent}}
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    with records.open("a") as file:
        for index, cell in enumerate(nb.cells):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    error = f"cell {index}: {output['ename']}: {output['evalue']}"
                    file.write(json.dumps(dict(claim=None, passed=None, message=error)) + "\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the notebook, write and print the JSON; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--sub", action="append", default=[], help="OLD=>NEW, repeatable")
    parser.add_argument("--out", type=Path, help="where to write the JSON")
    args = parser.parse_args(argv)
    subs = [tuple(item.split("=>", 1)) for item in args.sub]
    if any(len(pair) != 2 for pair in subs):
        parser.error("--sub takes OLD=>NEW")
    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / "records.jsonl"
        records.touch()
        seconds = run(args.notebook.resolve(), subs, records)
        lines = records.read_text().splitlines()
    result = dict(
        notebook=str(args.notebook),
        subs=subs,
        seconds=round(seconds, 1),
        records=[json.loads(line) for line in lines],
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    for item in result["records"]:
        print(f"{item['passed']!s:5} {item['claim']} | {item['message']}")
    print(f"{args.notebook}: {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
