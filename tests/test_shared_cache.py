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
from tests.conftest import admins
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
    settings.ADMINS = admins("ops@example.com")
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


def _plant_as(redis: Any, key: str, redis_type: str) -> None:
    """What a Redis writer can put under a certauth counter's key instead of an integer string."""
    client = redis._cache.get_client(write=True)
    raw_key = redis.make_and_validate_key(key)
    client.delete(raw_key)
    if redis_type == "hash":
        client.hset(raw_key, "planted", "by a Redis writer")
    elif redis_type == "list":
        client.rpush(raw_key, "planted")
    elif redis_type == "set":
        client.sadd(raw_key, "planted")
    elif redis_type == "zset":
        client.zadd(raw_key, {"planted": 1})
    elif redis_type == "stream":
        client.xadd(raw_key, {"planted": "1"})
    elif redis_type == "negative":  # an integer, counting up from far below any threshold
        client.set(raw_key, -(2**63) + 5)
    elif redis_type == "at-the-edge":  # INCR would overflow
        client.set(raw_key, 2**63 - 1)
    else:
        raise AssertionError(redis_type)


PLANTED_TYPES = ["hash", "list", "set", "zset", "stream", "negative", "at-the-edge"]


@pytest.mark.parametrize("redis_type", PLANTED_TYPES)
def test_a_counter_planted_as_another_redis_type_is_replaced(redis, redis_type: str) -> None:
    """``increment`` replaced only a string that is "not an integer"; a hash or list (WRONGTYPE), an
    overflow or a huge negative count were re-raised or obeyed.  Now each is replaced by 1, lifetime kept."""
    _plant_as(redis, "counter", redis_type)
    assert sharedcache.increment(redis, "counter", timeout=60) == 1
    assert sharedcache.increment(redis, "counter", timeout=60) == 2
    assert sharedcache.get_int(redis, "counter") == 2
    client = redis._cache.get_client(write=False)
    assert 0 < client.ttl(redis.make_and_validate_key("counter")) <= 60


@pytest.mark.django_db
@pytest.mark.parametrize("redis_type", PLANTED_TYPES)
def test_an_alert_counter_planted_as_another_redis_type_does_not_silence_the_alert(
    redis, pki, settings, caplog, redis_type: str
) -> None:
    """Attack review 2: a thumbprint's counter planted as a hash (keys are predictable: thumbprint or IP and
    ``timestamp // window``, so future windows can be planted in advance) answered WRONGTYPE, which
    ``increment`` re-raised: ``count_refusal`` aborted, for the IP counter too, on every refusal; no alert."""
    settings.ADMINS = admins("ops@example.com")
    certauth_settings(settings, AUDIT_ALERT_THRESHOLD=3, AUDIT_ALERT_CACHE_ALIAS="shared")
    at = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=dt.UTC)
    key = f"{alerts.KEY_PREFIX}:thumbprint:{pki.stranger.thumbprint}:{int(at.timestamp()) // 300}"
    _plant_as(redis, key, redis_type)
    for i in range(4):
        audit.record(event(at=at + dt.timedelta(seconds=i), issued=pki.stranger))
    fired = [r.certauth_alert for r in caplog.records if r.name == "certauth.alerts" and hasattr(r, "certauth_alert")]
    assert any(alert.get("thumbprint") == pki.stranger.thumbprint for alert in fired), "the alert was silenced"
    assert len(mail.outbox) == 1
    assert not any(r.getMessage() == "certauth alert counting failed" for r in caplog.records)


@pytest.mark.django_db
def test_one_alert_counter_failing_never_stops_the_other(redis, pki, settings, caplog, monkeypatch) -> None:
    """When the thumbprint's counter cannot be counted at all (the cache fails for that key), the client
    address is still counted and its alert still fires.  The backend failure is simulated for one key only
    (a real Redis cannot be made to fail for one key); the counting code is the product's."""
    certauth_settings(settings, AUDIT_ALERT_THRESHOLD=3, AUDIT_ALERT_CACHE_ALIAS="shared")
    real_increment = sharedcache.increment

    def failing_for_thumbprints(cache: Any, key: str, **kwargs: Any) -> int:
        if ":thumbprint:" in key:
            raise ConnectionError("the cache failed for this key")
        return real_increment(cache, key, **kwargs)

    monkeypatch.setattr(sharedcache, "increment", failing_for_thumbprints)
    at = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=dt.UTC)
    for i in range(4):
        audit.record(event(at=at + dt.timedelta(seconds=i), issued=pki.stranger, client_ip="203.0.113.7"))
    fired = [r.certauth_alert for r in caplog.records if r.name == "certauth.alerts" and hasattr(r, "certauth_alert")]
    address_alerts = [alert for alert in fired if "thumbprint" not in alert]  # the address's own alert
    assert [alert["ip"] for alert in address_alerts] == ["203.0.113.7"], fired
    assert any(r.getMessage() == "certauth alert counting failed" for r in caplog.records)


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
