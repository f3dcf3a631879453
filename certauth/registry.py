"""The per-worker view of the registry.

Every decision that depends on the database (is this thumbprint registered, revoked, is the identity
active, which scopes does it have) is cached per worker and keyed by the certificate's thumbprint.  A
single shared counter, ``RegistryState.generation``, is bumped in the same transaction as every
registry change; a worker re-reads it at least every ``REGISTRY_MAX_STALENESS_SECONDS`` (0 = on every
request) and drops its cache when it moved.  The worker that makes a change drops its cache at once.

With ``SHARED_CACHE_ALIAS`` (e.g. Redis shared by several hosts) a second counter is kept in that cache,
incremented after every committed change and read on every request between the database reads, so a
change is normally seen on the next request everywhere.  The cache can only make a change arrive sooner,
never later: the database is still read at least every ``REGISTRY_MAX_STALENESS_SECONDS`` (and on every
request in strict mode, where the cache is not read at all), so a cache that lies, loses a write or is
down never delays a revocation past that bound.  The counter is read as a plain integer
(``certauth.sharedcache``), never unpickled; anything else under its key counts as "moved".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from . import sharedcache
from .certificates import CertificateInfo
from .conf import settings
from .lru import MISSING, BoundedCache
from .queries import CompiledLookup, update_where_not_after

logger = logging.getLogger("certauth")


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
    has_issuance_keys: bool = True  # False for a typed thumbprint whose certificate was never presented


class Registry:
    def __init__(self) -> None:
        self._entries: BoundedCache[str, EntrySnapshot | None] = BoundedCache(settings.CACHE_SIZE)
        #: (database generation, shared counter token or None), see ``ensure_fresh``.
        self._generation: tuple[int, Hashable] | None = None
        self._checked_at = 0.0
        #: The certauth settings generation the cache was built for (``ensure_fresh`` rebuilds it on a change).
        self.settings_generation = settings.generation
        self._staleness = float(settings.REGISTRY_MAX_STALENESS_SECONDS)
        # One lock orders "bump the epoch, then drop the rows" against "compare the epoch, then store a row":
        # a row read before a change can never be filed after the cache was dropped for that change.
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        #: Bumped every time this worker drops its registry cache: a decision derived from the registry may
        #: be reused only while the epoch it was computed in is still current.
        self.epoch = 0
        #: The monotonic instant before which ``ensure_fresh`` reads nothing and changes nothing (0.0 when it
        #: must: nothing read yet, after ``invalidate``, with a shared cache, or in strict mode).
        self.quiet_until = 0.0

    def on_invalidate(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever this worker drops its registry cache (generation moved, settings
        changed, or ``invalidate()``), so caches derived from the registry (trust store, identity rules)
        follow the same freshness bound."""
        if callback not in self._listeners:
            self._listeners.append(callback)

    def _notify(self) -> None:
        self.epoch += 1
        for callback in self._listeners:
            callback()

    # --- freshness ---------------------------------------------------------------------------------
    def is_quiet(self) -> bool:
        """Whether ``ensure_fresh`` would now return without reading anything: inside the quiet window, for the
        current settings.  Read by this module's clock, the one ``ensure_fresh`` sets the window by: a caller
        comparing ``quiet_until`` with a clock of its own would disagree with the registry whenever the two
        differ (a test moving one of them, or a clock other than ``time.monotonic``)."""
        return time.monotonic() < self.quiet_until and self.settings_generation == settings.generation

    def invalidate(self) -> None:
        """Forget everything; the next lookup re-reads the generation and the rows."""
        with self._lock:
            self._notify()
            self._entries.clear()
            self._generation = None
            self._checked_at = 0.0
            self.quiet_until = 0.0

    def ensure_fresh(self) -> None:
        if self.settings_generation != settings.generation:
            with self._lock:
                self._notify()
                self.settings_generation = settings.generation
                self._staleness = float(settings.REGISTRY_MAX_STALENESS_SECONDS)
                self._entries = BoundedCache(settings.CACHE_SIZE)
                self._generation = None
                self.quiet_until = 0.0
                shared_generation.reset()
        now = time.monotonic()
        # The database is the truth, read at least every REGISTRY_MAX_STALENESS_SECONDS (every request when
        # 0) whatever a shared cache says: a cache that lies can never hold a change back past that bound.
        previous = self._generation
        database_due = previous is None or now - self._checked_at >= self._staleness
        # Between database reads a shared counter may tell sooner that something changed (never later); in
        # strict mode the database is read on every request anyway, so the cache is not consulted.
        alias = settings.SHARED_CACHE_ALIAS if self._staleness > 0 else None
        if not database_due and not alias:
            return
        database = previous[0] if previous is not None and not database_due else read_database_generation()
        generation = (database, shared_generation.read(alias) if alias else None)
        with self._lock:
            if generation != self._generation:
                self._notify()
                self._entries.clear()
                self._generation = generation
            if database_due:
                self._checked_at = now
                self.quiet_until = now + self._staleness if not alias and self._staleness > 0 else 0.0

    # --- lookups -----------------------------------------------------------------------------------
    def lookup(self, thumbprint: str) -> EntrySnapshot | None:
        """The registered entry for a thumbprint, or None.  Raises ``RegistryUnavailable``."""
        self.ensure_fresh()
        cached = self._entries.get(thumbprint)
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        epoch = self.epoch
        snapshot = load_entry(thumbprint)
        with self._lock:
            if self.epoch == epoch:  # not if the cache was dropped meanwhile: the row may predate the change
                self._entries.set(thumbprint, snapshot)
        return snapshot


def read_database_generation(using: str | None = None) -> int:
    try:
        row = _GENERATION_QUERY.first(using=using)
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
    _remember_last_used(row["id"], row["last_used_at"])
    return EntrySnapshot(
        entry_id=row["id"],
        identity=identity,
        revoked=row["revoked_at"] is not None,
        revocation_reason=row["revocation_reason"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        source=row["source"],
        has_issuance_keys=row["tbs_sha256"] is not None,
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
        "last_used_at",
        "tbs_sha256",
        "identity_id",
        "identity__name",
        "identity__is_active",
        "identity__scopes",
        "identity__user_id",
    )


# --- the same certificate in another encoding ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RelatedEntry:
    """Another entry that stands for the presented certificate: the same issuance (issuer and serial, or the
    signed TBS) under another thumbprint, or a certificate whose key was revoked as compromised."""

    thumbprint: str
    identity_id: int
    identity_name: str
    revoked: bool
    revocation_reason: str
    same_issuance: bool  # False: only the key is shared (and it was revoked as compromised)


def related_entry(info: CertificateInfo) -> RelatedEntry | None:
    """For a presented certificate (``CertificateInfo``), another entry that is the same issuance (a revoked
    one first), or that revoked its key as compromised; None when there is none.  Cached per worker by
    thumbprint like ``Registry.lookup``.  Raises ``RegistryUnavailable``."""
    if not info.tbs_sha256:
        return None
    registry.ensure_fresh()
    thumbprint = info.thumbprint_sha256
    cached = _related.get(thumbprint)
    if cached is not MISSING:
        return cached  # type: ignore[return-value]
    epoch = registry.epoch
    try:
        row = _RELATED_QUERY.first(thumbprint, info.issuer_serial_sha256, info.tbs_sha256, info.spki_sha256)
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    related = None
    if row is not None:
        related = RelatedEntry(
            thumbprint=row["thumbprint_sha256"],
            identity_id=row["identity_id"],
            identity_name=row["identity__name"],
            revoked=row["revoked_at"] is not None,
            revocation_reason=row["revocation_reason"],
            same_issuance=row["issuer_serial_sha256"] == info.issuer_serial_sha256
            or row["tbs_sha256"] == info.tbs_sha256,
        )
    with registry._lock:
        if registry.epoch == epoch:  # as in Registry.lookup: never file a row read before a change after it
            _related.set(thumbprint, related)
    return related


def _related_queryset(thumbprint: str, issuer_serial: str, tbs: str, spki: str) -> Any:
    """Entries other than ``thumbprint`` that share its issuance, or its key when that was revoked as
    compromised; revoked ones first (compiled once, see ``_RELATED_QUERY``)."""
    from django.db.models import Case, IntegerField, Q, Value, When

    from .models import RegisteredCertificate, RevocationReason

    same_issuance = Q(issuer_serial_sha256=issuer_serial) | Q(tbs_sha256=tbs)
    compromised_key = Q(
        spki_sha256=spki, revoked_at__isnull=False, revocation_reason=RevocationReason.KEY_COMPROMISE.value
    )
    # A CASE, not revoked_at: no index serves it, so the database selects through the three key indexes.
    revoked_first = Case(When(revoked_at__isnull=True, then=Value(1)), default=Value(0), output_field=IntegerField())
    return (
        RegisteredCertificate.objects.filter(same_issuance | compromised_key)
        .exclude(thumbprint_sha256=thumbprint)
        .order_by(revoked_first)
        .values(
            "thumbprint_sha256",
            "revoked_at",
            "revocation_reason",
            "issuer_serial_sha256",
            "tbs_sha256",
            "identity_id",
            "identity__name",
        )
    )


def record_issuance_keys(entry: EntrySnapshot, info: CertificateInfo) -> None:
    """Fill the issuance keys of a typed-thumbprint entry from the certificate just presented under that very
    thumbprint (its exact bytes), so that its revocation also reaches re-encodings.  At most once per entry and
    worker.  For a revoked entry this is a registry change (other workers may hold a "no revoked relative"
    answer for a re-encoding); a live entry's keys change no answer until it is revoked, which is one."""
    from .models import RegisteredCertificate

    if not info.tbs_sha256 or _keys_recorded.get(entry.entry_id) is not MISSING:
        return
    _keys_recorded.set(entry.entry_id, True)
    try:
        # A savepoint: with ATOMIC_REQUESTS this runs inside the view's transaction, and a failed UPDATE must
        # not leave that transaction aborted (PostgreSQL) for the rest of the request.
        with transaction.atomic():
            changed = RegisteredCertificate.objects.filter(
                pk=entry.entry_id, thumbprint_sha256=info.thumbprint_sha256, tbs_sha256__isnull=True
            ).update(
                issuer_serial_sha256=info.issuer_serial_sha256,
                tbs_sha256=info.tbs_sha256,
                spki_sha256=info.spki_sha256,
            )
            if changed and entry.revoked:
                registry_changed()
    except DatabaseError:
        _keys_recorded.pop(entry.entry_id)  # try again on a later request; never fail the request for this
        logger.warning("certauth could not record the issuance keys of entry %s", entry.entry_id, exc_info=True)


def _model(name: str) -> Any:
    from django.apps import apps

    return lambda: apps.get_model("certauth", name)


def _generation_queryset(_: object) -> Any:
    from .models import RegistryState

    return RegistryState.objects.filter(pk=1).values("generation")


# Compiled once per database alias: the ORM's query building costs several times the query itself.
_ENTRY_QUERY = CompiledLookup(_model("RegisteredCertificate"), _entry_queryset)
_GENERATION_QUERY = CompiledLookup(_model("RegistryState"), _generation_queryset)
_RELATED_QUERY = CompiledLookup(_model("RegisteredCertificate"), _related_queryset, parameters=4)

registry = Registry()
# related_entry's answers, dropped with the registry cache (same generation counter, same moments)
_related: BoundedCache[str, RelatedEntry | None] = BoundedCache(settings.CACHE_SIZE)
registry.on_invalidate(_related.clear)
# entries whose keys this worker wrote since its registry cache was last dropped (then re-read with them)
_keys_recorded: BoundedCache[int, bool] = BoundedCache(65536)
registry.on_invalidate(_keys_recorded.clear)


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
    if settings.SHARED_CACHE_ALIAS:
        alias = settings.SHARED_CACHE_ALIAS
        transaction.on_commit(lambda: shared_generation.publish(alias, using), using=using)


# --- the generation in a shared cache ----------------------------------------------------------------
#: After a shared-cache error (or a value that is not an integer), the cache is left alone (database only)
#: for this long: a cache that is down costs one failed call per worker per period, never one per request.
SHARED_CACHE_RETRY_SECONDS = 5.0
#: The token while the shared cache is not consulted (after an error, for SHARED_CACHE_RETRY_SECONDS).
_NOT_CONSULTED = "not consulted"
#: The token of a counter that does not exist (yet, or evicted); the first publish creates it.
_NO_COUNTER = "no counter"


class SharedGeneration:
    """A change counter in a Django cache shared by workers and hosts (``SHARED_CACHE_ALIAS``).

    * ``publish`` (after a committed change): ``INCR`` — atomic in Redis, so the counter only ever moves
      forward and no race between two publishers can roll it back to a value a worker already holds.
    * ``read``: a token that changes whenever the counter does.  The counter is read as a plain integer
      (``certauth.sharedcache``), never unpickled.  An error or a value that is not an integer returns a
      token equal to no other ("moved": the worker drops its cache and reloads from the database), is
      logged, and the cache is then skipped for ``SHARED_CACHE_RETRY_SECONDS``.
    * Freshness never depends on it: ``Registry.ensure_fresh`` reads the database within the staleness
      bound whatever this says.
    """

    def __init__(self) -> None:
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def read(self, alias: str) -> Hashable:
        if time.monotonic() < self._skip_until:
            return _NOT_CONSULTED
        try:
            counter = sharedcache.get_int(_cache(alias), generation_key())
        except Exception as exc:  # backend error, timeout, bad alias, NotAnInteger, UnsupportedCache
            self._failed(alias, "read", exc)
            return object()  # moved: equal to no token a worker holds
        return _NO_COUNTER if counter is None else counter

    def publish(self, alias: str, using: str | None = None) -> None:
        """Move the shared counter forward (``registry_changed``, on commit)."""
        try:
            sharedcache.increment(_cache(alias), generation_key(using))
        except Exception as exc:
            self._failed(alias, "write", exc)

    def reset(self) -> None:
        """Forget the error back-off (tests, settings changes)."""
        self._skip_until = 0.0

    def _failed(self, alias: str, action: str, exc: Exception) -> None:
        with self._lock:
            first = time.monotonic() >= self._skip_until
            self._skip_until = time.monotonic() + SHARED_CACHE_RETRY_SECONDS
        if first:
            logger.warning(
                "certauth shared cache %r failed (%s: %s); using the database alone for %.0f s",
                alias,
                action,
                exc.__class__.__name__,
                SHARED_CACHE_RETRY_SECONDS,
            )


def _cache(alias: str) -> Any:
    from django.core.cache import caches

    return caches[alias]


def generation_key(using: str | None = None) -> str:
    """The cache key of the generation: one per database (by name), so test databases or two registries
    sharing a Redis never read each other's counter.  Deployments sharing a Redis and a database name
    should also set distinct ``KEY_PREFIX`` es on the cache."""
    from .models import RegistryState

    alias = using or router.db_for_read(RegistryState)
    return _generation_key(str(connections[alias].settings_dict.get("NAME")))


@lru_cache(maxsize=16)
def _generation_key(database_name: str) -> str:
    return "certauth:registry-generation:" + hashlib.sha256(database_name.encode()).hexdigest()[:16]


shared_generation = SharedGeneration()


# --- last used -------------------------------------------------------------------------------------
_last_touched: BoundedCache[int, float] = BoundedCache(65536)


def touch_last_used(entry_id: int, now: dt.datetime) -> None:
    """Record use of an entry at most once per ``LAST_USED_RESOLUTION_SECONDS`` per worker; the
    conditional UPDATE keeps it at most once per period across all workers and hosts too.  Never bumps
    the registry generation (it does not change any decision)."""
    resolution = settings.LAST_USED_RESOLUTION_SECONDS
    mono = time.monotonic()
    last = _last_touched.get(entry_id)
    if last is not MISSING and mono - last < resolution:  # type: ignore[operator]
        return
    from .models import RegisteredCertificate

    _last_touched.set(entry_id, mono)
    threshold = now - dt.timedelta(seconds=resolution)
    alias = router.db_for_write(RegisteredCertificate)
    # Inside the request's transaction (ATOMIC_REQUESTS) a savepoint: a failed write must not leave that
    # transaction aborted (PostgreSQL) for the view.  Outside one, the single UPDATE needs none.
    guard = transaction.atomic(using=alias) if connections[alias].in_atomic_block else contextlib.nullcontext()
    try:
        with guard:
            # == filter(pk=entry_id).exclude(last_used_at__gt=threshold).update(last_used_at=now), uncompiled
            update_where_not_after(RegisteredCertificate, entry_id, "last_used_at", now, threshold, using=alias)
    except DatabaseError:
        _last_touched.pop(entry_id)  # try again on the next request; never fail the request for this


def last_used_due(entry_id: int) -> bool:
    """Would ``touch_last_used`` write now?  (Async code then makes the call in a thread.)"""
    last = _last_touched.peek(entry_id)
    return last is None or time.monotonic() - last >= settings.LAST_USED_RESOLUTION_SECONDS  # type: ignore[operator]


def reset_last_used_memory() -> None:
    _last_touched.clear()


def _remember_last_used(entry_id: int, last_used_at: dt.datetime | None) -> None:
    """Seed the rate limit from the row just read: an entry another worker touched recently is not
    written again by this one (the conditional UPDATE would change nothing anyway)."""
    if last_used_at is None or last_used_at.tzinfo is None:
        return
    age = (dt.datetime.now(dt.UTC) - last_used_at).total_seconds()
    if 0 <= age < settings.LAST_USED_RESOLUTION_SECONDS:
        _last_touched.set(entry_id, time.monotonic() - age)


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
