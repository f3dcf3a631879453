"""The result table, the machine's facts, and bench/RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Row:
    section: str
    name: str
    value: str
    p99: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # PASS / MISS / "" (informational) / n/a
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quick: bool = False

    def add(self, rows: list[Row]) -> None:
        self.rows.extend(rows)

    def table(self) -> str:
        header = ["section", "scenario", "median / rate", "p99", "ratio", "target", "verdict", "note"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [row.section, row.name, row.value, row.p99, row.ratio, row.target, row.verdict, row.note]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
        return "\n".join(lines)

    def markdown(self) -> str:
        facts = "\n".join(f"- {key}: {value}" for key, value in machine_facts().items())
        notes = "\n".join(f"- {note}" for note in self.notes)
        mode = " (--quick: smoke run, figures not meaningful)" if self.quick else ""
        return (
            f"# certauth benchmark results{mode}\n\n"
            "Written by `python -m bench` (`make bench`); every row measured in the same run on the same machine.\n"
            "Targets are informational: the run never fails on timing.\n\n"
            f"## Machine\n\n{facts}\n\n## Results\n\n{self.table()}\n\n## Notes\n\n{notes}\n"
        )


def machine_facts() -> dict[str, str]:
    import cryptography
    import django
    import rest_framework

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "load average at end": " ".join(f"{value:.2f}" for value in os.getloadavg()),
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
        "Django": django.get_version(),
        "Django REST framework": rest_framework.VERSION,
        "cryptography": cryptography.__version__,
        "database": database_description(),
    }


def database_description() -> str:
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (file, WAL)"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        return str(cursor.fetchone()[0]).split(",")[0]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def us(value: float) -> str:
    return f"{value:,.0f} µs" if value >= 100 else f"{value:,.1f} µs"


def ratio_verdict(ratio: float, limit: float) -> str:
    return "PASS" if ratio <= limit else "MISS"


def write(report: Report, path: Path = RESULTS) -> Path:
    path.write_text(report.markdown())
    return path
