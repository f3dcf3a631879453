"""Settings for the benchmark: the reference project's, with a file SQLite database of its own under
``var/bench/`` (``BENCH_DB`` overrides the path) and URLs that add the bench-only views."""

from __future__ import annotations

import os
from pathlib import Path

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, LOGGING

BENCH_DIR = Path(os.environ.get("BENCH_VAR_DIR", BASE_DIR / "var" / "bench"))
BENCH_DB = Path(os.environ.get("BENCH_DB", BENCH_DIR / "bench.sqlite3"))

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BENCH_DB),
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
if os.environ.get("BENCH_DATABASE_URL"):  # e.g. postgres://postgres@127.0.0.1:5432/bench
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["BENCH_DATABASE_URL"], conn_max_age=None)}

ROOT_URLCONF = "bench.urls"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
DEBUG = False
# Refusals in the failure benchmark would print 10,000 log lines otherwise.
LOGGING = {**LOGGING, "loggers": {"certauth": {"handlers": ["console"], "level": "ERROR"}}}
