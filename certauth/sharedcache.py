"""Integers in a Django cache shared with other processes and hosts: read as data, never as code.

Django's cache backends pickle what they store and unpickle what they read, so whoever can write to a
shared cache server (Redis) could run code in every worker that reads a key.  certauth keeps only integers
in shared caches (the registry's change counter, the flood-alert counters and markers), so it reads and
writes them here with the backend's raw commands (Redis ``GET``/``INCR``/``SET``) and never hands a stored
value to a deserialiser: anything but the decimal digits of an integer is ``NotAnInteger``.

Supported backends: Django's ``RedisCache`` (raw commands on the same keys Django would use, so an integer
written here reads back through ``cache.get`` too) and ``LocMemCache`` (process-private memory that nothing
outside the process can write to).  Any other backend raises ``UnsupportedCache``; the system check
``certauth.E011`` reports it at start-up.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache


class SharedCacheError(Exception):
    """The shared value could not be used; callers fall back (the database, no alert) and never raise."""


class UnsupportedCache(SharedCacheError):
    """A backend certauth cannot read without unpickling (Memcached, database, file, third-party)."""


class NotAnInteger(SharedCacheError):
    """The key holds something else than an integer: garbage, or someone else's payload (never unpickled)."""


#: What a counter looks like on the wire: a decimal integer that fits in Redis' signed 64 bits.
_INTEGER = re.compile(rb"-?[0-9]{1,19}")


def is_supported(backend: type[BaseCache] | BaseCache) -> bool:
    """Whether certauth can keep shared integers in this backend (class or instance) without pickle."""
    cls = backend if isinstance(backend, type) else type(backend)
    return issubclass(cls, (RedisCache, LocMemCache))


def get_int(cache: BaseCache, key: str) -> int | None:
    """The integer under ``key``, or None when there is none.  Raises ``NotAnInteger`` for anything else,
    ``UnsupportedCache``, or the backend's own errors (connection refused, timeout)."""
    if isinstance(cache, RedisCache):
        client, raw_key = _redis(cache, key, write=False)
        return _parse(client.get(raw_key))
    if isinstance(cache, LocMemCache):
        value = cache.get(key)
        if value is None or type(value) is int:
            return value
        raise NotAnInteger(f"{key!r} does not hold an integer")
    raise UnsupportedCache(_unsupported(cache))


def increment(cache: BaseCache, key: str, *, timeout: int | None = None) -> int:
    """Add one to the counter under ``key`` atomically and return the new value.  A missing counter starts
    at 1 (with ``timeout`` seconds to live; None = kept); one that holds anything but a positive count (a
    string that is no integer, another Redis type such as a hash or list: WRONGTYPE, an integer at the edge
    of 64 bits, a negative one planted to stay below any threshold) is replaced by 1 with the same lifetime:
    a planted value must not stop the counting.  Only the backend's own failures (connection, permission)
    raise."""
    if isinstance(cache, RedisCache):
        client, raw_key = _redis(cache, key, write=True)
        pipeline = client.pipeline(transaction=True)
        if timeout is not None:
            pipeline.set(raw_key, 0, ex=max(1, int(timeout)), nx=True)  # the lifetime starts with the counter
        pipeline.incr(raw_key)
        results = pipeline.execute(raise_on_error=False)
        value = results[-1]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        # INCR answered an error about the value (not an integer, WRONGTYPE, overflow) or a count no INCR from
        # 0 gives: replace the key, whatever type it holds (SET overwrites any type).  A connection or ACL
        # failure raises from execute() or from this SET, never silently.
        client.set(raw_key, 1, ex=None if timeout is None else max(1, int(timeout)))
        return 1
    if isinstance(cache, LocMemCache):
        if not cache.add(key, 0, timeout) and type(cache.get(key)) is not int:
            cache.set(key, 0, timeout)
        try:
            return int(cache.incr(key))
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout)
            return 1
    raise UnsupportedCache(_unsupported(cache))


def add_flag(cache: BaseCache, key: str, timeout: int) -> bool:
    """Set ``key`` to 1 for ``timeout`` seconds unless it exists; True when this call set it (atomic)."""
    if isinstance(cache, RedisCache):
        client, raw_key = _redis(cache, key, write=True)
        return bool(client.set(raw_key, 1, ex=max(1, int(timeout)), nx=True))
    if isinstance(cache, LocMemCache):
        return bool(cache.add(key, 1, timeout))
    raise UnsupportedCache(_unsupported(cache))


def _redis(cache: RedisCache, key: str, *, write: bool) -> tuple[Any, str]:
    """Django's own redis-py client and the key exactly as Django's RedisCache would store it
    (``KEY_PREFIX``, version, ``KEY_FUNCTION``), but without its pickle serializer."""
    raw_key = cache.make_and_validate_key(key)
    return cache._cache.get_client(raw_key, write=write), raw_key


def _parse(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # a client configured with decode_responses
        raw = raw.encode("ascii", "replace")
    if isinstance(raw, bytes | bytearray) and _INTEGER.fullmatch(raw):
        return int(raw)
    raise NotAnInteger("the shared cache holds something else than an integer under a certauth key")


def _unsupported(cache: BaseCache) -> str:
    cls = type(cache)
    return (
        f"{cls.__module__}.{cls.__qualname__} is not supported for certauth's shared values: it would unpickle "
        "what it reads. Use django.core.cache.backends.redis.RedisCache."
    )
