"""The per-worker view of the registry.

Every decision that depends on the database (is this thumbprint registered, revoked, is the identity
active, which scopes does it have) is cached per worker and keyed by the certificate's thumbprint.  A
single shared counter, ``RegistryState.generation``, is bumped in the same transaction as every
registry change; a worker re-reads it at most every ``REGISTRY_MAX_STALENESS_SECONDS`` (0 = on every
request) and drops its cache when it moved.  The worker that makes a change drops its cache at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from .conf import settings
from .lru import MISSING, BoundedCache
from .queries import CompiledLookup, update_where_not_after


class RegistryUnavailable(Exception):
    """The registry could not be read (database down): callers fail closed with a 503."""


@dataclass(frozen=True, slots=True)
class IdentitySnapshot:
    id: int
    name: str
    is_active: bool
    scopes: frozenset[str]
    user_id: int | None

    def has_scope(self, scope: str) -> bool:
        return scope_granted(self.scopes, scope)


def scope_granted(granted: frozenset[str], required: str) -> bool:
    """Exact match, ``*`` for everything, or a ``prefix:*`` wildcard (``orders:*`` grants ``orders:read``)."""
    if required in granted or "*" in granted:
        return True
    head, sep, _ = required.rpartition(":")
    while sep:
        if f"{head}:*" in granted:
            return True
        head, sep, _ = head.rpartition(":")
    return False


@dataclass(frozen=True, slots=True)
class EntrySnapshot:
    entry_id: int
    identity: IdentitySnapshot
    revoked: bool
    revocation_reason: str
    not_before: dt.datetime | None
    not_after: dt.datetime
    source: str = "certificate"  # RegisteredCertificate.Source; "rule" entries are re-checked against their rule


class Registry:
    def __init__(self) -> None:
        self._entries: BoundedCache[str, EntrySnapshot | None] = BoundedCache(settings.CACHE_SIZE)
        self._generation: int | None = None
        self._checked_at = 0.0
        self._settings_generation = settings.generation
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def on_invalidate(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever this worker drops its registry cache (generation moved, settings
        changed, or ``invalidate()``), so caches derived from the registry (trust store, identity rules)
        follow the same freshness bound."""
        if callback not in self._listeners:
            self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # --- freshness ---------------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget everything; the next lookup re-reads the generation and the rows."""
        self._entries.clear()
        self._generation = None
        self._checked_at = 0.0
        self._notify()

    def ensure_fresh(self) -> None:
        if self._settings_generation != settings.generation:
            self._settings_generation = settings.generation
            self._entries = BoundedCache(settings.CACHE_SIZE)
            self._generation = None
            self._notify()
        now = time.monotonic()
        if self._generation is not None and now - self._checked_at < settings.REGISTRY_MAX_STALENESS_SECONDS:
            return
        generation = read_generation()
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation
                self._notify()
            self._checked_at = now

    # --- lookups -----------------------------------------------------------------------------------
    def lookup(self, thumbprint: str) -> EntrySnapshot | None:
        """The registered entry for a thumbprint, or None.  Raises ``RegistryUnavailable``."""
        self.ensure_fresh()
        cached = self._entries.get(thumbprint)
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        snapshot = load_entry(thumbprint)
        self._entries.set(thumbprint, snapshot)
        return snapshot


def read_generation() -> int:
    try:
        row = _GENERATION_QUERY.first()
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    return int(row["generation"] or 0) if row else 0


def load_entry(thumbprint: str) -> EntrySnapshot | None:
    from .models import parse_scopes

    try:
        row = _ENTRY_QUERY.first(thumbprint)
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    if row is None:
        return None
    identity = IdentitySnapshot(
        id=row["identity_id"],
        name=row["identity__name"],
        is_active=row["identity__is_active"],
        scopes=frozenset(parse_scopes(row["identity__scopes"])),
        user_id=row["identity__user_id"],
    )
    return EntrySnapshot(
        entry_id=row["id"],
        identity=identity,
        revoked=row["revoked_at"] is not None,
        revocation_reason=row["revocation_reason"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        source=row["source"],
    )


def _entry_queryset(thumbprint: str) -> Any:
    """The registry row for a thumbprint (compiled once by ``certauth.queries``, see ``_ENTRY_QUERY``)."""
    from .models import RegisteredCertificate

    return RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint).values(
        "id",
        "revoked_at",
        "revocation_reason",
        "not_before",
        "not_after",
        "source",
        "identity_id",
        "identity__name",
        "identity__is_active",
        "identity__scopes",
        "identity__user_id",
    )


def _model(name: str) -> Any:
    from django.apps import apps

    return lambda: apps.get_model("certauth", name)


def _generation_queryset(_: object) -> Any:
    from .models import RegistryState

    return RegistryState.objects.filter(pk=1).values("generation")


# Compiled once per database alias: the ORM's query building costs several times the query itself.
_ENTRY_QUERY = CompiledLookup(_model("RegisteredCertificate"), _entry_queryset)
_GENERATION_QUERY = CompiledLookup(_model("RegistryState"), _generation_queryset)

registry = Registry()


def registry_changed(using: str | None = None) -> None:
    """Record that the registry changed: bump the shared generation (inside the caller's transaction)
    and drop this worker's cache now and again after commit.  Call it after bulk ``update()``s, which
    send no model signals; saves and deletes of registry models call it automatically."""
    from .models import RegistryState

    updated = RegistryState.objects.using(using).filter(pk=1).update(generation=F("generation") + 1)
    if not updated:
        RegistryState.objects.using(using).get_or_create(pk=1, defaults={"generation": 1})
    registry.invalidate()
    transaction.on_commit(registry.invalidate, using=using)


# --- last used -------------------------------------------------------------------------------------
_last_touched: BoundedCache[int, float] = BoundedCache(65536)


def touch_last_used(entry_id: int, now: dt.datetime) -> None:
    """Record use of an entry at most once per ``LAST_USED_RESOLUTION_SECONDS`` per worker; the
    conditional UPDATE keeps it at most once per period across all workers and hosts too.  Never bumps
    the registry generation (it does not change any decision)."""
    from .models import RegisteredCertificate

    resolution = settings.LAST_USED_RESOLUTION_SECONDS
    mono = time.monotonic()
    last = _last_touched.get(entry_id)
    if last is not MISSING and mono - last < resolution:  # type: ignore[operator]
        return
    _last_touched.set(entry_id, mono)
    threshold = now - dt.timedelta(seconds=resolution)
    try:
        # == filter(pk=entry_id).exclude(last_used_at__gt=threshold).update(last_used_at=now), uncompiled
        update_where_not_after(RegisteredCertificate, entry_id, "last_used_at", now, threshold)
    except DatabaseError:
        _last_touched.pop(entry_id)  # try again on the next request; never fail the request for this


def reset_last_used_memory() -> None:
    _last_touched.clear()


# --- automatic change tracking -----------------------------------------------------------------------
def _on_registry_model_change(sender: Any, using: str | None = None, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_used_at"}:
        return
    registry_changed(using)


def connect_signals() -> None:
    from .models import CertificateIdentity, RegisteredCertificate, TrustedAuthority

    for model in (CertificateIdentity, RegisteredCertificate, TrustedAuthority):
        post_save.connect(
            _on_registry_model_change, sender=model, dispatch_uid=f"certauth-registry-save-{model.__name__}"
        )
        post_delete.connect(
            _on_registry_model_change, sender=model, dispatch_uid=f"certauth-registry-delete-{model.__name__}"
        )
