"""The per-worker caches never serve a decision past its bound: registry changes are seen within
REGISTRY_MAX_STALENESS_SECONDS by every worker (0 = on the very next request) and at once by the worker
that made them; nothing is served past the certificate's not_after; the caches stay bounded."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certauth import authenticator
from certauth import registry as registry_module
from certauth.lru import MISSING, BoundedCache


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The registry's monotonic clock, moved by hand: ``clock[0] += 1.5``.  It starts a million seconds
    ahead of the real monotonic clock, never near it: code that compared the registry's windows with a clock
    of its own (``authorities.cached_trust_store`` did) then disagrees every time, not only on a machine up
    for less than the fake time (CI's, once: a fresh host's monotonic clock is its uptime)."""
    now = [time.monotonic() + 1_000_000.0]
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
    monkeypatch.setattr(authenticator, "_now", lambda tz: frozen[0])
    monkeypatch.setattr(authenticator, "_timestamp", lambda: frozen[0].timestamp())
    assert api.get("/api/whoami/", pki.client).status_code == 200  # cached: parsed, trusted, looked up

    frozen[0] = not_after
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_expired"


def test_a_registered_entry_is_never_served_past_its_own_not_after(api, pki, trusted_root, monkeypatch) -> None:
    from certauth.services import get_or_create_identity, register_thumbprint

    identity, _ = get_or_create_identity("typed")
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    register_thumbprint(identity, pki.client.thumbprint, not_after=ends)
    frozen = [ends - dt.timedelta(seconds=1)]
    monkeypatch.setattr(authenticator, "_now", lambda tz: frozen[0])
    monkeypatch.setattr(authenticator, "_timestamp", lambda: frozen[0].timestamp())
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


# --- the remembered acceptance (warm path) ---------------------------------------------------------------


def test_a_remembered_acceptance_is_not_served_when_the_proxy_verdict_changes(api, pki, register) -> None:
    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert api.get("/api/whoami/", pki.client).status_code == 200  # served from the remembered acceptance
    refused = api.get("/api/whoami/", pki.client, verify="FAILED:certificate revoked")
    assert reason(refused) == "crl_revoked"


def test_the_remembered_acceptance_answers_what_the_full_path_answered(pki, register, trusted_root) -> None:
    """Field by field, the warm path's Outcome is the one the full path gave (it is built positionally)."""
    import dataclasses

    from django.test import RequestFactory

    from tests.conftest import escaped

    register(pki.client)
    factory = RequestFactory()

    def request(client_ip: str) -> Any:
        return factory.get(
            "/api/whoami/",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_SSL_CLIENT_CERT=escaped(pki.client),
            HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
            HTTP_X_REAL_IP=client_ip,
        )

    full = authenticator.evaluate(request("203.0.113.7"))
    key = authenticator.accepted_key(escaped(pki.client), None)
    assert full.ok and isinstance(authenticator.config().accepted.get(key), authenticator._Accepted)
    warm = authenticator.evaluate(request("203.0.113.8"))
    assert warm is not full and warm.auth is full.auth
    assert dataclasses.asdict(warm) == {**dataclasses.asdict(full), "client_ip": "203.0.113.8", "_user": warm._user}
    assert warm.user.get_username() == full.user.get_username()


def test_a_remembered_acceptance_is_served_only_to_the_whole_value_not_to_one_sharing_its_tail(
    api, pki, register
) -> None:
    """Acceptances are filed under the value's last characters; another value with the same tail is decided
    on its own (here: refused), and the remembered one still answers its own value afterwards."""
    from tests.conftest import escaped

    register(pki.client)
    value = escaped(pki.client)
    assert api.get("/api/whoami/", value).status_code == 200
    tail = value[-authenticator.ACCEPTED_KEY_TAIL :]
    other = escaped(pki.client2)
    spliced = other[: len(other) - len(tail)] + tail
    assert spliced != value and authenticator.accepted_key(spliced, None) == authenticator.accepted_key(value, None)
    assert api.get("/api/whoami/", spliced).status_code == 401
    assert api.get("/api/whoami/", value).json()["thumbprint"] == pki.client.thumbprint


def test_a_remembered_acceptance_is_not_served_with_a_wrong_proxy_secret(api, pki, register, settings) -> None:
    """The proxy secret is compared on every request, the warm one too (not part of the remembered key)."""
    secret = "s" * 40
    settings.CERTAUTH = {**settings.CERTAUTH, "PROXY_SECRET": secret}
    register(pki.client)
    header = {"HTTP_X_CERTAUTH_PROXY_SECRET": secret}
    assert api.get("/api/whoami/", pki.client, **header).status_code == 200
    assert api.get("/api/whoami/", pki.client, **header).status_code == 200  # the remembered acceptance
    assert reason(api.get("/api/whoami/", pki.client, HTTP_X_CERTAUTH_PROXY_SECRET="t" * 40)) == "untrusted_proxy"
    assert reason(api.get("/api/whoami/", pki.client)) == "untrusted_proxy"


def test_a_settings_change_is_read_at_once_although_values_are_kept_as_attributes(settings) -> None:
    """certauth.conf keeps each value read as a plain attribute: a change of CERTAUTH drops them all, and the
    authenticator's derived config follows."""
    from certauth.conf import settings as certauth_settings

    settings.CERTAUTH = {**settings.CERTAUTH, "CACHE_SIZE": 7}
    assert certauth_settings.CACHE_SIZE == 7
    assert authenticator.config().accepted.maxsize == 7
    settings.CERTAUTH = {**settings.CERTAUTH, "CACHE_SIZE": 9}
    assert certauth_settings.CACHE_SIZE == 9
    assert authenticator.config().accepted.maxsize == 9
    settings.CERTAUTH = {key: value for key, value in settings.CERTAUTH.items() if key != "CACHE_SIZE"}
    assert certauth_settings.CACHE_SIZE == 2048  # the documented default again
    assert authenticator.config().tz is dt.UTC  # the zone timezone.now() would use
    settings.USE_TZ = False
    assert authenticator.config().tz is None


def test_a_receiver_connected_after_the_first_request_hears_the_warm_ones(api, pki, register) -> None:
    """The warm path skips the signal call only while nobody listens."""
    from certauth.signals import certificate_authenticated

    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    heard: list[str] = []

    def receiver(sender: Any, auth: Any, **kwargs: Any) -> None:
        heard.append(auth.identity.name)

    certificate_authenticated.connect(receiver, dispatch_uid="test-warm-receiver")
    try:
        assert api.get("/api/whoami/", pki.client).status_code == 200  # the remembered acceptance
    finally:
        certificate_authenticated.disconnect(dispatch_uid="test-warm-receiver")
    assert heard == [api.get("/api/whoami/", pki.client).json()["identity"]]


def test_a_remembered_acceptance_is_keyed_by_the_exact_header_value(api, pki, register) -> None:
    from tests.conftest import escaped

    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    # The same certificate spelled differently is a different key: parsed and decided again, same answer.
    respelled = escaped(pki.client).replace("%0A", "%0a")
    assert respelled != escaped(pki.client)
    assert api.get("/api/whoami/", respelled).json()["thumbprint"] == pki.client.thumbprint
    # Another certificate never rides on the first one's decision.
    assert reason(api.get("/api/whoami/", pki.client2)) == "unknown_certificate"


def test_a_remembered_acceptance_is_not_served_past_the_crl_next_update(
    api, pki, register, trusted_root, settings, monkeypatch
) -> None:
    from cryptography.hazmat.primitives import serialization

    from certauth import devpki
    from certauth.authorities import apply_crl

    staleness(settings, 3600, REVOCATION_MODE="crl")
    next_update = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    crl = devpki.make_crl(pki.root, [], next_update=next_update)
    apply_crl(trusted_root, crl.public_bytes(serialization.Encoding.DER))
    trusted_root.save()
    register(pki.client)
    frozen = [next_update - dt.timedelta(seconds=1)]
    monkeypatch.setattr(authenticator, "_now", lambda tz: frozen[0])
    monkeypatch.setattr(authenticator, "_timestamp", lambda: frozen[0].timestamp())
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert api.get("/api/whoami/", pki.client).status_code == 200

    frozen[0] = next_update  # the CRL is stale from now on: fail closed, cached acceptance or not
    assert reason(api.get("/api/whoami/", pki.client)) == "crl_unavailable"


def test_a_new_crl_revoking_a_remembered_certificate_is_seen_at_once_by_this_worker(
    api, pki, register, trusted_root, settings
) -> None:
    from cryptography.hazmat.primitives import serialization

    from certauth import devpki
    from certauth.authorities import apply_crl

    staleness(settings, 3600, REVOCATION_MODE="crl")
    apply_crl(trusted_root, devpki.make_crl(pki.root, []).public_bytes(serialization.Encoding.DER))
    trusted_root.save()
    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert api.get("/api/whoami/", pki.client).status_code == 200

    revoking = devpki.make_crl(pki.root, [pki.client.serial_number])
    apply_crl(trusted_root, revoking.public_bytes(serialization.Encoding.DER))
    trusted_root.save()
    assert reason(api.get("/api/whoami/", pki.client)) == "crl_revoked"


def test_a_scope_change_is_seen_at_once_by_the_worker_that_made_it(api, pki, register, settings) -> None:
    staleness(settings, 3600)
    entry = register(pki.client, scopes="orders:read")
    assert api.get("/api/whoami/", pki.client).json()["scopes"] == ["orders:read"]
    identity = entry.identity
    identity.scopes = "orders:read orders:write"
    identity.save()
    assert api.get("/api/whoami/", pki.client).json()["scopes"] == ["orders:read", "orders:write"]


@given(st.text(max_size=80))
def test_memoised_client_address_agrees_with_the_plain_function(header: str) -> None:
    from certauth.proxies import ProxyAllowList, client_address

    trusted = ProxyAllowList(["127.0.0.1", "10.0.0.0/8"])
    assert trusted.client_address(header) == client_address(header, trusted)
    assert trusted.client_address(header) == client_address(header, trusted)  # the memoised answer too


# --- the generation in a shared cache (SHARED_CACHE_ALIAS) ----------------------------------------------

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 11
#: Short socket timeouts: a cache that does not answer must never hold a request for long.
REDIS_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again on exit: nothing listens there


def use_shared_cache(settings: Any, location: str, staleness_seconds: float = 0) -> Any:
    from django.core.cache import caches

    settings.CACHES = {
        **settings.CACHES,
        "shared": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": f"certauth-test-{uuid.uuid4().hex}",
            "OPTIONS": REDIS_OPTIONS,
        },
    }
    staleness(settings, staleness_seconds, SHARED_CACHE_ALIAS="shared")
    return caches["shared"]


@pytest.fixture
def redis_cache(settings: Any) -> Iterator[Any]:
    if not _port_answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT}: the shared-cache tests need a real one")
    cache = use_shared_cache(settings, f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}")
    yield cache
    cache.delete(registry_module.generation_key())


def _generation_queries(captured: Any) -> list[str]:
    return [query["sql"] for query in captured if "registrystate" in query["sql"].lower()]


def test_strict_mode_reads_the_database_on_every_request_even_with_a_shared_cache(
    api, pki, register, redis_cache, clock
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        for _ in range(3):
            assert api.get("/api/whoami/", pki.client).status_code == 200
    assert len(_generation_queries(captured.captured_queries)) == 3  # the cache cannot vouch for freshness


def test_between_database_reads_the_shared_counter_is_read_instead(
    api, pki, register, redis_cache, settings, clock
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    staleness(settings, 5)
    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        for _ in range(3):
            clock[0] += 1
            assert api.get("/api/whoami/", pki.client).status_code == 200
    assert _generation_queries(captured.captured_queries) == []
    clock[0] += 2  # 5 s since the last database read: read it again, whatever the cache says
    with CaptureQueriesContext(connection) as captured:
        assert api.get("/api/whoami/", pki.client).status_code == 200
    assert len(_generation_queries(captured.captured_queries)) == 1


def test_a_change_written_through_the_shared_cache_is_seen_on_the_next_request(
    api, pki, register, redis_cache, settings, clock
) -> None:
    staleness(settings, 3600)  # sooner than the bound: the counter is read on every request
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    revoke_from_another_worker(entry.pk)
    # That worker's registry_changed() moves the shared counter after its commit:
    registry_module.shared_generation.publish("shared")
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"


def test_registry_changed_writes_the_generation_through_on_commit(
    pki, register, redis_cache, django_capture_on_commit_callbacks
) -> None:
    entry = register(pki.client)
    redis_cache.set(registry_module.generation_key(), 41, timeout=None)
    with django_capture_on_commit_callbacks(execute=True):
        entry.revoke()
    assert redis_cache.get(registry_module.generation_key()) == 42


def test_a_change_the_shared_cache_missed_is_seen_within_the_bound(
    api, pki, register, redis_cache, settings, clock
) -> None:
    staleness(settings, 2)
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    revoke_from_another_worker(entry.pk)  # ...and its write-through is lost (cache down at that moment)
    clock[0] += 1.9
    assert api.get("/api/whoami/", pki.client).status_code == 200  # within the bound; the cache says "unchanged"
    clock[0] += 0.1  # the bound: the database is read whatever the cache says
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"


def test_shared_cache_down_falls_back_to_the_database(
    api, pki, register, settings, clock, caplog, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from certauth import sharedcache

    use_shared_cache(settings, f"redis://127.0.0.1:{_closed_port()}/0", staleness_seconds=1)
    calls = []
    real_get_int = sharedcache.get_int

    def counting_get_int(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real_get_int(*args, **kwargs)

    monkeypatch.setattr(sharedcache, "get_int", counting_get_int)  # a spy: how often the dead cache is tried
    entry = register(pki.client)
    other = register(pki.client2, identity="other")
    with caplog.at_level(logging.WARNING, logger="certauth"):
        for _ in range(5):
            assert api.get("/api/whoami/", pki.client).status_code == 200
            assert api.get("/api/whoami/", pki.client2).status_code == 200
    assert len(calls) == 1  # tried once, then left alone for SHARED_CACHE_RETRY_SECONDS: no wait per request
    assert sum("shared cache" in record.getMessage() for record in caplog.records) == 1

    revoke_from_another_worker(entry.pk)
    clock[0] += 1  # the staleness bound: seen from the database
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"
    with django_capture_on_commit_callbacks(execute=True):
        other.revoke()  # the write-through fails quietly; the change itself stands
    assert reason(api.get("/api/whoami/", pki.client2)) == "certificate_revoked"

    clock[0] += registry_module.SHARED_CACHE_RETRY_SECONDS  # tried again after the back-off, still down
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"
    assert len(calls) == 2


def test_the_shared_counter_only_moves_forward(redis_cache) -> None:
    """Two publishers can never roll the counter back to a value a worker already holds (it is an INCR)."""
    key = registry_module.generation_key()
    redis_cache.delete(key)
    registry_module.shared_generation.publish("shared")  # no counter yet: started
    values = [redis_cache.get(key)]
    for _ in range(5):
        registry_module.shared_generation.publish("shared")
        values.append(redis_cache.get(key))
    assert values == sorted(set(values)) and len(values) == 6


def test_a_row_read_before_a_change_is_never_cached_after_it(pki, register, monkeypatch) -> None:
    """The lookup race: a row read before a revocation must not be filed after the cache was dropped for it."""
    from certauth.registry import registry

    entry = register(pki.client)
    registry.invalidate()
    real_load = registry_module.load_entry

    def load_then_change(thumbprint: str) -> Any:
        row = real_load(thumbprint)  # read before the revocation commits...
        entry.revoke("key_compromise")  # ...which drops this worker's cache (epoch moves)
        return row

    monkeypatch.setattr(registry_module, "load_entry", load_then_change)
    stale = registry.lookup(pki.client.thumbprint)
    assert not stale.revoked  # what was read
    monkeypatch.setattr(registry_module, "load_entry", real_load)
    assert registry.lookup(pki.client.thumbprint).revoked  # never served from the cache afterwards


# --- a shared cache that lies: data, never code; never past the bound --------------------------------------


class CreatesAFile:
    """A pickle payload: unpickling it creates ``path`` (what a planted ``os.system`` call would do)."""

    def __init__(self, path: Any) -> None:
        self.path = str(path)

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def plant(cache: Any, key: str, value: bytes) -> None:
    """Write raw bytes under a cache key, as anyone with write access to the Redis server can."""
    cache._cache.get_client(key, write=True).set(cache.make_and_validate_key(key), value)


@pytest.mark.parametrize("seconds", [0, 3600])
def test_a_pickle_payload_in_the_shared_counter_is_never_unpickled(
    api, pki, register, redis_cache, settings, clock, tmp_path, seconds
) -> None:
    import pickle

    staleness(settings, seconds)
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    marker = tmp_path / "code-ran"
    revoke_from_another_worker(entry.pk)
    plant(redis_cache, registry_module.generation_key(), pickle.dumps(CreatesAFile(marker)))
    # Garbage counts as "moved": answered from the database (even with an hour's staleness bound), no 500.
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"
    assert not marker.exists()


def test_a_pinned_counter_cannot_delay_revocation_in_strict_mode(api, pki, register, redis_cache) -> None:
    key, pinned = registry_module.generation_key(), 7
    redis_cache.set(key, pinned, timeout=None)
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    revoke_from_another_worker(entry.pk)
    redis_cache.set(key, pinned, timeout=None)  # the attacker keeps the counter where it was
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"


def test_a_pinned_counter_cannot_delay_revocation_past_the_bound(
    api, pki, register, redis_cache, settings, clock
) -> None:
    staleness(settings, 3)
    key, pinned = registry_module.generation_key(), 7
    redis_cache.set(key, pinned, timeout=None)
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    revoke_from_another_worker(entry.pk)
    for _ in range(2):
        clock[0] += 1.4
        redis_cache.set(key, pinned, timeout=None)
        assert api.get("/api/whoami/", pki.client).status_code == 200  # within the bound: allowed
    clock[0] += 0.2  # 3 s since the last database read
    redis_cache.set(key, pinned, timeout=None)
    assert reason(api.get("/api/whoami/", pki.client)) == "certificate_revoked"


def test_only_the_registry_reads_its_windows_against_a_clock() -> None:
    """The quiet window is judged by the registry's own clock (``Registry.is_quiet``): a module comparing
    ``quiet_until`` with a clock of its own made ``test_staleness_bound_is_honoured`` depend on the host's
    uptime (the faked clock was moved, the other was not)."""
    from pathlib import Path

    package = Path(registry_module.__file__).parent
    readers = sorted(
        path.name for path in package.rglob("*.py") if path.name != "registry.py" and "quiet_until" in path.read_text()
    )
    assert readers == []
