"""``last_used_at``: written at most once per ``LAST_USED_RESOLUTION_SECONDS`` per entry — per worker by a
memory of the last write, across workers and hosts by a conditional UPDATE — and never on every request."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from certauth import registry as registry_module
from certauth.models import RegisteredCertificate
from certauth.registry import registry, reset_last_used_memory

pytestmark = pytest.mark.django_db


def last_used_updates(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "last_used_at" in q["sql"]]


def test_first_use_is_recorded_and_the_next_ones_cost_no_write(api, pki, register) -> None:
    entry = register(pki.client)
    assert entry.last_used_at is None
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert api.get("/api/whoami/", pki.client).status_code == 200
    assert len(last_used_updates(queries)) == 1
    entry.refresh_from_db()
    assert entry.last_used_at is not None


def test_another_worker_does_not_write_again_within_the_period(api, pki, register) -> None:
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    entry.refresh_from_db()
    first = entry.last_used_at
    # "Another worker": no memory of the write, no cached registry row.
    reset_last_used_memory()
    registry.invalidate()
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/whoami/", pki.client).status_code == 200
    assert last_used_updates(queries) == []  # seeded from the row it read
    # Even a worker that does issue the UPDATE changes nothing inside the period (the condition in SQL).
    reset_last_used_memory()
    registry_module.touch_last_used(entry.pk, first + dt.timedelta(seconds=5))
    entry.refresh_from_db()
    assert entry.last_used_at == first


def test_written_again_once_the_period_has_passed(api, pki, register, monkeypatch) -> None:
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    entry.refresh_from_db()
    first = entry.last_used_at
    later = first + dt.timedelta(seconds=61)
    clock = registry_module.time.monotonic() + 61
    monkeypatch.setattr(registry_module.time, "monotonic", lambda: clock)
    registry_module.touch_last_used(entry.pk, later)
    assert RegisteredCertificate.objects.get(pk=entry.pk).last_used_at == later


def test_a_failed_last_used_write_leaves_the_requests_transaction_usable(api, pki, register, monkeypatch) -> None:
    """With ATOMIC_REQUESTS the view runs in a transaction: a real database error from the last-used write
    (here a broken statement) is contained in a savepoint, so the request and its later queries still work.
    On PostgreSQL, without the savepoint, the transaction would be aborted and the request would end in a 500."""
    from django.db import transaction

    from certauth import queries

    entry = register(pki.client)
    field = RegisteredCertificate._meta.get_field("last_used_at")
    broken = "UPDATE certauth_no_such_table SET last_used_at = %s WHERE id = %s AND last_used_at <= %s"
    monkeypatch.setattr(queries, "_update_sql", lambda *args: (broken, field))
    with transaction.atomic():
        registry_module.touch_last_used(entry.pk, dt.datetime.now(dt.UTC))
        # The transaction is still usable: a query after the failed write succeeds.
        assert RegisteredCertificate.objects.filter(pk=entry.pk).count() == 1
    entry.refresh_from_db()
    assert entry.last_used_at is None  # the write failed and was not retried within the request
