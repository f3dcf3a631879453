"""No test module reads the clock at import time.

A timestamp taken when a module is imported is minutes old by the time a later test compares it with
certificates, CRLs or database rows stamped with the real clock: on a busy machine that made
``test_revoked_even_when_failing_open`` build a CRL whose thisUpdate (the real clock, minus 5 minutes)
came after its nextUpdate (the import-time clock, minus 1 minute).  Tests read the time where they use it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "_utcnow"}


def _clock_reads_outside_functions(tree: ast.Module) -> list[int]:
    """Line numbers of clock calls evaluated when the module (or a class body in it) is executed."""
    lines: list[int] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # Only the defaults and decorators run at definition time.
            args = node.args
            for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
                visit(default)
            for decorator in getattr(node, "decorator_list", []):
                visit(decorator)
            return
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in CLOCK_CALLS:
                lines.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return lines


def _sources() -> list[Path]:
    return sorted(p for folder in ("tests", "bench") for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_clock_read_at_import_time(path: Path) -> None:
    lines = _clock_reads_outside_functions(ast.parse(path.read_text(), str(path)))
    assert not lines, f"{path.relative_to(ROOT)} reads the clock at import time on line(s) {lines}: read it where used"


def test_the_check_finds_the_old_pattern() -> None:
    old = "import datetime as dt\nNOW = dt.datetime.now(dt.UTC)\nclass A:\n    T = time.time()\n"
    assert _clock_reads_outside_functions(ast.parse(old)) == [2, 4]
    fine = "def now():\n    return dt.datetime.now(dt.UTC)\ndef f(x=None):\n    return time.monotonic()\n"
    assert _clock_reads_outside_functions(ast.parse(fine)) == []
