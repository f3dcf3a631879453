"""A shared cache is data, never code: certauth's shared values (the registry counter, the alert counters)
are plain integers read raw from a real Redis, never unpickled; a planted value is refused or replaced, and
a backend that can only be read through pickle is refused.  (The registry's use of the counter, and the
staleness bound against a lying cache, are in tests/test_registry_cache.py.)"""

from __future__ import annotations

import datetime as dt
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.cache import caches

from certauth import alerts, audit, sharedcache
from tests.test_audit import event
from tests.test_registry_cache import REDIS_HOST, REDIS_OPTIONS, REDIS_PORT, CreatesAFile, _port_answers, plant

REDIS_DB = 12  # not the registry tests' 11: helpers running at the same time never share keys


def certauth_settings(settings: Any, **values: Any) -> None:
    settings.CERTAUTH = {**settings.CERTAUTH, **values}


@pytest.fixture
def redis(settings: Any) -> Iterator[Any]:
    """A Django RedisCache on the real Redis, under a key prefix of its own."""
    if not _port_answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT}: these tests need a real one")
    settings.CACHES = {
        **settings.CACHES,
        "shared": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "KEY_PREFIX": f"certauth-test-{uuid.uuid4().hex}",
            "OPTIONS": REDIS_OPTIONS,
        },
    }
    cache = caches["shared"]
    yield cache
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{settings.CACHES['shared']['KEY_PREFIX']}:*"):  # never FLUSHDB
        client.delete(key)


def test_shared_integers_are_read_raw_and_a_pickle_payload_is_refused_unread(redis, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    assert sharedcache.get_int(redis, "counter") is None
    assert [sharedcache.increment(redis, "counter") for _ in range(3)] == [1, 2, 3]
    assert sharedcache.get_int(redis, "counter") == 3
    assert redis.get("counter") == 3  # the same key Django's own API uses

    plant(redis, "counter", pickle.dumps(CreatesAFile(marker)))
    with pytest.raises(sharedcache.NotAnInteger):
        sharedcache.get_int(redis, "counter")
    for garbage in (b"", b"12abc", b" 7", b"9" * 30, b"\x80\x04K\x07."):  # the last: pickle of 7
        plant(redis, "counter", garbage)
        with pytest.raises(sharedcache.NotAnInteger):
            sharedcache.get_int(redis, "counter")
    plant(redis, "counter", pickle.dumps(CreatesAFile(marker)))
    assert sharedcache.increment(redis, "counter") == 1  # a planted value is replaced, never obeyed
    assert sharedcache.get_int(redis, "counter") == 1
    assert not marker.exists()


def test_a_counter_with_a_lifetime_expires_with_its_window(redis) -> None:
    assert sharedcache.increment(redis, "window", timeout=60) == 1
    assert sharedcache.increment(redis, "window", timeout=60) == 2
    client = redis._cache.get_client(write=False)
    assert 0 < client.ttl(redis.make_and_validate_key("window")) <= 60
    assert sharedcache.add_flag(redis, "flag", 60) is True
    assert sharedcache.add_flag(redis, "flag", 60) is False


@pytest.mark.django_db
def test_a_planted_alert_counter_neither_runs_code_nor_silences_the_alert(
    redis, pki, settings, caplog, tmp_path
) -> None:
    settings.ADMINS = [("Ops", "ops@example.com")]
    certauth_settings(settings, AUDIT_ALERT_THRESHOLD=3, AUDIT_ALERT_CACHE_ALIAS="shared")
    marker = tmp_path / "code-ran"
    at = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=dt.UTC)
    key = f"{alerts.KEY_PREFIX}:thumbprint:{pki.stranger.thumbprint}:{int(at.timestamp()) // 300}"
    plant(redis, key, pickle.dumps(CreatesAFile(marker)))
    for i in range(4):
        audit.record(event(at=at + dt.timedelta(seconds=i), issued=pki.stranger))
    fired = [r.certauth_alert for r in caplog.records if r.name == "certauth.alerts" and hasattr(r, "certauth_alert")]
    assert any(alert.get("thumbprint") == pki.stranger.thumbprint for alert in fired)
    assert len(mail.outbox) == 1
    assert not marker.exists()


@pytest.mark.django_db
def test_a_cache_that_can_only_be_read_through_pickle_is_never_read(pki, settings, caplog, tmp_path) -> None:
    """A file-based cache unpickles what it reads, so whoever can write its files could run code: certauth
    refuses it (certauth.E011 at start-up; at run time the alert is lost, never the request)."""
    settings.CACHES = {
        **settings.CACHES,
        "files": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path / "c")},
    }
    certauth_settings(settings, AUDIT_ALERT_THRESHOLD=3, AUDIT_ALERT_CACHE_ALIAS="files")
    marker = tmp_path / "code-ran"
    at = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=dt.UTC)
    key = f"{alerts.KEY_PREFIX}:thumbprint:{pki.stranger.thumbprint}:{int(at.timestamp()) // 300}"
    caches["files"].set(key, CreatesAFile(marker), 600)  # a planted payload in the cache's files
    audit.record(event(at=at, issued=pki.stranger))
    assert not marker.exists()
    assert any(r.getMessage() == "certauth alert counting failed" for r in caplog.records)
    with pytest.raises(sharedcache.UnsupportedCache):
        sharedcache.get_int(caches["files"], key)
