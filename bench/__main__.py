"""``python -m bench [--quick] [--sections 1,2,3]``: run the benchmark suite, print the table and write
bench/RESULTS.md.  Never fails on timing; exits non-zero only when a scenario answered wrongly."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds; figures meaningless)")
    parser.add_argument("--sections", default="1,2,3", help="comma-separated sections to run (default 1,2,3)")
    parser.add_argument("--output", type=Path, help="where to write the results (default bench/RESULTS.md)")
    parser.add_argument("--var-dir", type=Path, help="state directory (default var/bench)")
    return parser.parse_args(argv)


def prepare_django(var_dir: Path) -> None:
    """A fresh bench database for sections 1 and the failure/memory rows, migrated."""
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    database = Path(os.environ.setdefault("BENCH_DB", str(var_dir / "bench.sqlite3")))
    if "BENCH_DATABASE_URL" not in os.environ:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    repo = Path(__file__).resolve().parent.parent
    var_dir = (arguments.var_dir or repo / "var" / "bench").absolute()
    sections = {part.strip() for part in arguments.sections.split(",") if part.strip()}
    prepare_django(var_dir)

    from . import report as reporting
    from .driver import BenchFailure

    report = reporting.Report(quick=arguments.quick)
    started = time.monotonic()
    try:
        if "1" in sections:
            from . import inprocess

            _announce("section 1: in-process per-request cost")
            report.add(inprocess.run(inprocess.QUICK if arguments.quick else inprocess.FULL))
        if "3" in sections:
            from . import scale

            _announce("section 3: scale and memory")
            report.add(scale.run(var_dir, quick=arguments.quick, notes=report.notes))
        if "2" in sections:
            from . import endtoend

            _announce("section 2: end to end through nginx (mTLS, keep-alive) + gunicorn, then uvicorn (2 workers)")
            report.add(endtoend.run(var_dir, quick=arguments.quick, notes=report.notes))
    except BenchFailure as failure:
        print(f"bench: {failure}", file=sys.stderr)
        return 1
    report.notes.append(f"total run time {time.monotonic() - started:,.0f} s")
    print()
    print(report.table())
    path = reporting.write(report, arguments.output or reporting.RESULTS)
    print(f"\nwritten to {path}")
    return 0


def _announce(text: str) -> None:
    print(f"== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
