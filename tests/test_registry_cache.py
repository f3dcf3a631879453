"""The per-worker caches never serve a decision past its bound: registry changes are seen within
REGISTRY_MAX_STALENESS_SECONDS by every worker (0 = on the very next request) and at once by the worker
that made them; nothing is served past the certificate's not_after; the caches stay bounded."""

from __future__ import annotations

import datetime as dt
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certauth import authenticator
from certauth import registry as registry_module
from certauth.lru import MISSING, BoundedCache


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The registry's monotonic clock, moved by hand: ``clock[0] += 1.5``."""
    now = [1_000.0]
    monkeypatch.setattr(registry_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


def staleness(settings: Any, seconds: float, **more: Any) -> None:
    settings.CERTAUTH = {**settings.CERTAUTH, "REGISTRY_MAX_STALENESS_SECONDS": seconds, **more}


def revoke_from_another_worker(entry_id: int) -> None:
    """What another worker's (or host's) revocation looks like from here: the row and the shared
    generation change in the database; this process is not told (no registry_changed, no signals)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE certauth_registeredcertificate SET revoked_at = %s WHERE id = %s",
            [_db_now(connection), entry_id],
        )
        cursor.execute("UPDATE certauth_registrystate SET generation = generation + 1 WHERE id = 1")
        if cursor.rowcount == 0:
            cursor.execute("INSERT INTO certauth_registrystate (id, generation, changed_at) VALUES (1, 1, %s)",
                           [_db_now(connection)])  # fmt: skip


def _db_now(connection: Any) -> Any:
    now = dt.datetime.now(dt.UTC)
    return now.isoformat() if connection.vendor == "sqlite" else now


def reason(response: Any) -> str | None:
    return None if response.status_code == 200 else response.json().get("reason")


def test_staleness_bound_is_honoured(api, pki, register, settings, clock) -> None:
    staleness(settings, 1)
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    revoke_from_another_worker(entry.pk)

    clock[0] += 0.5  # within the bound: this worker may still answer from its cache
    assert api.get("/api/whoami/", pki.client).status_code == 200
    clock[0] += 0.51  # past the bound: the generation is re-read and the revocation seen
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"


def test_strict_mode_sees_another_workers_change_on_the_very_next_request(api, pki, register, settings, clock) -> None:
    staleness(settings, 0)
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    revoke_from_another_worker(entry.pk)
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"


def test_the_changing_worker_sees_its_change_at_once(api, pki, register, settings, clock) -> None:
    staleness(settings, 3600)
    entry = register(pki.client)
    other = register(pki.client2, identity="other")
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert api.get("/api/whoami/", pki.client2).status_code == 200

    entry.revoke()
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"
    other.identity.disable()
    assert reason(api.get("/api/whoami/", pki.client2)) == "identity_disabled"


def test_a_cached_certificate_is_never_served_past_its_not_after(api, pki, register, monkeypatch) -> None:
    register(pki.client)
    not_after = pki.client.certificate.not_valid_after_utc
    frozen = [not_after - dt.timedelta(seconds=1)]
    monkeypatch.setattr(authenticator.timezone, "now", lambda: frozen[0])
    assert api.get("/api/whoami/", pki.client).status_code == 200  # cached: parsed, trusted, looked up

    frozen[0] = not_after
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_expired"


def test_a_registered_entry_is_never_served_past_its_own_not_after(api, pki, trusted_root, monkeypatch) -> None:
    from certauth.services import get_or_create_identity, register_thumbprint

    identity, _ = get_or_create_identity("typed")
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    register_thumbprint(identity, pki.client.thumbprint, not_after=ends)
    frozen = [ends - dt.timedelta(seconds=1)]
    monkeypatch.setattr(authenticator.timezone, "now", lambda: frozen[0])
    assert api.get("/api/whoami/", pki.client).status_code == 200

    frozen[0] = ends  # the certificate itself is still valid; the registry entry is not
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_expired"


def test_parsed_and_registry_caches_are_bounded_by_cache_size(api, pki, register, settings) -> None:
    settings.CERTAUTH = {**settings.CERTAUTH, "CACHE_SIZE": 3}
    clients = [pki.issue(f"bounded-{n}") for n in range(6)]
    for client in clients:
        register(client, identity=client.common_name)
    for client in clients:
        assert api.get("/api/whoami/", client).status_code == 200
    assert len(authenticator.config().parsed) == 3
    assert len(registry_module.registry._entries) == 3
    # An evicted certificate is simply parsed and looked up again.
    assert api.get("/api/whoami/", clients[0]).status_code == 200


@given(st.integers(min_value=1, max_value=8), st.lists(st.integers(min_value=0, max_value=20), max_size=60))
def test_bounded_cache_never_exceeds_its_size_and_keeps_the_latest(maxsize: int, keys: list[int]) -> None:
    cache: BoundedCache[int, int] = BoundedCache(maxsize)
    for key in keys:
        cache.set(key, key * 2)
        assert len(cache) <= maxsize
        assert cache.get(key) == key * 2
    # Least recently used goes first: the last ``maxsize`` distinct keys set are all still there.
    recent = list(dict.fromkeys(reversed(keys)))[:maxsize]
    assert all(cache.get(key) == key * 2 for key in recent)
    assert all(cache.get(key) is MISSING for key in set(keys) - set(recent))
