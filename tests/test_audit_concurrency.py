"""Flood: 10,000 identical refusals from several concurrent processes cost O(1) audit rows with exact
counts, no 500 and no "database is locked" — on a SQLite file database (WAL, as project/settings.py
configures it) and on PostgreSQL.

Each worker is a separate Python process with its own Django and its own database connection, started
with ``DATABASE_URL`` pointing at a real (migrated) database, not the test database.  Part of the refusals
go through the real Django request handler (``django.test.Client``: URL routing, middleware, DRF, the
certauth exception handler); the bulk calls ``certauth.audit.record`` directly so the test stays well
under a minute on two cores.  The workers start together on a signal and write at the same time.

Run: ``pytest -m slow tests/test_audit_concurrency.py``; add PostgreSQL with
``CERTAUTH_FLOOD_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres`` (default: that URL when a server
answers there)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
HTTP_SHARE = 10  # one refusal in ten goes through the request handler
# Distinct aggregation keys a flood produces: HTTP with the certificate, HTTP without one, direct record().
KEYS_PER_FLOOD = 3
TABLE = "certauth_authenticationfailure"
POSTGRES_ADMIN_URL = os.environ.get("CERTAUTH_FLOOD_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
#: Per process: two suites on one server (a matrix next to make test, two checkouts) must not drop each
#: other's database mid-flood.
POSTGRES_DB = f"h5_flood_{os.getpid()}"
WORKER_COMMAND = [sys.executable, "-m", "tests.test_audit_concurrency", "worker"]


# --- the worker (runs in its own process: python -m tests.test_audit_concurrency worker ...) -------------------


def worker_main(certificate_path: str) -> None:
    """Wait for ``go <direct> <http>`` lines on stdin; after each, send that many refusals and print a
    JSON report.  Exit on end of input."""
    import logging

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from cryptography import x509
    from django.conf import settings
    from django.test import Client, override_settings
    from django.utils import timezone

    from certauth import audit
    from certauth.certificates import describe
    from certauth.reasons import Reason

    from .conftest import escaped

    # One window for the whole run, so the expected row count does not depend on the clock.
    override_settings(CERTAUTH={**settings.CERTAUTH, "AUDIT_WINDOW_SECONDS": 10**9}).enable()

    class Counting(logging.Handler):
        errors: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            Counting.errors.append(record.getMessage() + (f" {record.exc_info[1]}" if record.exc_info else ""))

    certauth_logger = logging.getLogger("certauth")
    certauth_logger.setLevel(logging.ERROR)  # the 10,000 refusal lines are not what this test is about
    certauth_logger.addHandler(Counting(level=logging.ERROR))
    logging.getLogger("django.request").setLevel(logging.CRITICAL)

    pem = Path(certificate_path).read_bytes()
    info = describe(x509.load_pem_x509_certificate(pem))
    header = escaped(pem)
    client = Client(raise_request_exception=False, HTTP_HOST="localhost")
    print("ready", flush=True)
    for line in sys.stdin:  # "go <direct> <http>": every worker starts writing at the same moment
        _, direct, http = line.split()
        Counting.errors = []
        statuses: Counter[int] = Counter()
        for i in range(int(http)):
            if i % 2:
                response = client.get(
                    "/api/whoami/",
                    REMOTE_ADDR="127.0.0.1",
                    HTTP_X_SSL_CLIENT_CERT=header,
                    HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
                    HTTP_X_REAL_IP="203.0.113.7",
                )
            else:
                response = client.get("/api/whoami/", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="203.0.113.7")
            statuses[response.status_code] += 1
        for _ in range(int(direct)):
            audit.record(
                audit.RefusalEvent(
                    reason=Reason.UNKNOWN_CERTIFICATE,
                    detail="flood",
                    at=timezone.now(),
                    certificate=info,
                    client_ip="198.51.100.77",
                    proxy_ip="127.0.0.1",
                    method="GET",
                    path="/api/flood/",
                )
            )
        report = {"statuses": statuses, "errors": Counting.errors[:5], "error_count": len(Counting.errors)}
        print(json.dumps(report), flush=True)


# --- the parent (pytest) -----------------------------------------------------------------------------------------


def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "CERTAUTH_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONPATH": str(ROOT),
        "DEBUG": "0",
    }


def migrate(database_url: str, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=_env(database_url, tmp_path),
        check=True,
        timeout=120,
    )


class Workers:
    """``WORKERS`` worker processes on one database, started once and reused for several floods."""

    def __init__(self, database_url: str, tmp_path: Path, certificate: Path) -> None:
        self.processes = [
            subprocess.Popen(
                [*WORKER_COMMAND, str(certificate)],
                cwd=ROOT,
                env=_env(database_url, tmp_path),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        for process in self.processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", self.close()

    def flood(self, total: int) -> list[dict[str, Any]]:
        """Send ``total`` refusals from all workers at once; return each worker's report."""
        per_worker = total // WORKERS
        http = per_worker // HTTP_SHARE
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"go {per_worker - http} {http}\n")
            process.stdin.flush()
        reports = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, self.close()
            reports.append(json.loads(line))
        return reports

    def close(self) -> str:
        """Stop the workers; return their stderr (asserted free of "database is locked")."""
        errors = []
        for process in self.processes:
            try:
                _, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            errors.append(err)
        return "\n".join(errors)


class Database:
    """Read the flood database from the test process without Django (it is not the test database)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _query(self, sql: str) -> Any:
        if self.url.startswith("sqlite:///"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                return db.execute(sql).fetchone()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            return db.execute(sql).fetchone()

    def totals(self) -> tuple[int, int]:
        rows, refusals = self._query(f"SELECT COUNT(*), COALESCE(SUM(count), 0) FROM {TABLE}")  # noqa: S608
        return int(rows), int(refusals)

    def clear(self) -> None:
        self._query(f"DELETE FROM {TABLE} RETURNING 1")  # noqa: S608


def check_flood(database: Database, tmp_path: Path, certificate: Path) -> dict[int, float]:
    seconds = {}
    rows_by_total = {}
    workers = Workers(database.url, tmp_path, certificate)
    try:
        for total in (1_000, 10_000):
            database.clear()
            started = time.monotonic()
            reports = workers.flood(total)
            seconds[total] = round(time.monotonic() - started, 1)
            statuses = sum((Counter({int(k): v for k, v in r["statuses"].items()}) for r in reports), Counter())
            assert set(statuses) == {401}, statuses  # never a 500, whatever the contention
            assert sum(r["error_count"] for r in reports) == 0, [r["errors"] for r in reports]
            rows, refusals = database.totals()
            assert refusals == total  # exact: no increment lost, none counted twice
            rows_by_total[total] = rows
    finally:
        stderr = workers.close()
    assert "database is locked" not in stderr and "Traceback" not in stderr, stderr
    assert rows_by_total[1_000] == rows_by_total[10_000] == KEYS_PER_FLOOD  # O(1): independent of N
    return seconds


@pytest.fixture
def certificate(pki: Any, tmp_path: Path) -> Path:
    path = tmp_path / "flooding-client.pem"
    path.write_bytes(pki.stranger.cert_pem())
    return path


@pytest.mark.slow
def test_flood_on_sqlite_file_database(tmp_path: Path, certificate: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flood.sqlite3'}"
    migrate(url, tmp_path)
    journal = sqlite3.connect(tmp_path / "flood.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"  # the setting under test: project/settings.py's init_command
    seconds = check_flood(Database(url), tmp_path, certificate)
    print(f"sqlite flood seconds by total: {seconds}")


def _postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _postgres_available(), reason="no PostgreSQL at CERTAUTH_FLOOD_POSTGRES")
def test_flood_on_postgresql(tmp_path: Path, certificate: Path) -> None:
    import psycopg

    admin_url = POSTGRES_ADMIN_URL
    url = admin_url.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)")
        db.execute(f"CREATE DATABASE {POSTGRES_DB}")
    try:
        migrate(url, tmp_path)
        seconds = check_flood(Database(url), tmp_path, certificate)
        print(f"postgresql flood seconds by total: {seconds}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "worker":
    worker_main(sys.argv[2])
