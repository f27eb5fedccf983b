"""The seed-spread script's assert rewrite: check cells record and carry on (no notebook run)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "seed_spread.py"
spec = importlib.util.spec_from_file_location("seed_spread", SCRIPT)
seed_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_spread)


def run_cell(source, tmp_path):
    records = tmp_path / "records.jsonl"
    namespace = {}
    exec(seed_spread.RECORDER.replace("RECORDS_PATH", repr(str(records))), namespace)
    exec(seed_spread.record_asserts(source), namespace)
    return [json.loads(line) for line in records.read_text().splitlines()], namespace


def test_failed_asserts_are_recorded_with_their_message_and_the_cell_goes_on(tmp_path):
    source = (
        "# Claim: the gap is small\n"
        "gap = 0.2\n"
        "assert gap < 0.1, f'gap {gap:.2f}, expected < 0.1'\n"
        "assert gap > 0, f'gap {gap:.2f}, expected > 0'\n"
        "after = True\n"
    )
    records, namespace = run_cell(source, tmp_path)
    assert namespace["after"] is True
    assert [(r["claim"], r["line"], r["passed"]) for r in records] == [
        ("the gap is small", 3, False),
        ("the gap is small", 4, True),
    ]
    assert records[0]["message"] == "gap 0.20, expected < 0.1"


def test_asserts_inside_loops_and_functions_are_rewritten_and_errors_recorded(tmp_path):
    source = (
        "# Claim: loops\n"
        "def check(x):\n"
        "    assert x > 1, f'x {x}, expected > 1'\n"
        "for x in (1, 2):\n"
        "    check(x)\n"
        "assert undefined_name, 'expected a name'\n"
    )
    records, _ = run_cell(source, tmp_path)
    assert [r["passed"] for r in records] == [False, True, None]
    assert "NameError" in records[2]["message"]


def test_cells_that_are_not_checks_keep_their_asserts():
    source = "x = 1\nassert x == 2, 'expected 2'\n"
    assert seed_spread.record_asserts(source) == source
    assert "assert" not in seed_spread.record_asserts("# Claim: c\n" + source)
