"""The refusal audit.

Every refusal becomes a ``RefusalEvent``.  ``record(event)`` writes one structured log line on logger
``certauth``, hands the event to the handler named by ``CERTAUTH["AUDIT_HANDLER"]`` and feeds the
optional flood alert (``certauth.alerts``).

The default database handler aggregates: identical refusals (reason, thumbprint, client IP, identity)
within one ``AUDIT_WINDOW_SECONDS`` window are one ``AuthenticationFailure`` row whose count is
incremented by a single atomic upsert, so a flood of identical failures costs O(1) rows and the counts
stay exact under concurrency.

A client can mint a new certificate (a new thumbprint) for every request, so the thumbprint cannot be
part of the key where the client chooses it freely.  Refusals decided before the registry step
(``ADDRESS_AGGREGATED_REASONS``: unreadable, untrusted, weak, expired, ... certificates) aggregate per
(reason, client address, window) whatever the certificate; the row keeps the first and the last thumbprint
seen.  An unknown certificate (``unknown_certificate``: trusted and valid, only not registered) is the one
an operator can act on, by registering it from the audit: it keeps its own row and its PEM, for at most
``AUDIT_CAPTURE_PER_ADDRESS`` distinct certificates per client address and window; beyond that the
address's further unknown certificates share one row, without PEM.  So a flood of distinct certificates
from one address costs O(1) rows and bounded bytes, and every row's count stays exact.  "One address" is
one IPv4 address, or one IPv6 network of ``AUDIT_IPV6_PREFIX`` bits (a /64 by default: one client holds at
least a whole /64 and can rotate through its 2**64 addresses at no cost); see ``client_network``.

Audit writes never ride in the request's transaction: when the connection is inside an atomic block
(``ATOMIC_REQUESTS``; DRF marks it for rollback on every handled exception) the write is deferred to
``request_finished``, after that transaction is over.  A failing audit write is logged, never raised.

What is stored is what the certificate and the request line say: never the request body, never a
private key (the captured certificate is re-serialised from the parsed public certificate).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.signals import request_finished
from django.db import connections, router, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from . import alerts
from .certificates import CertificateInfo, normalize_thumbprint
from .conf import settings
from .reasons import Reason

if TYPE_CHECKING:
    from .models import AuthenticationFailure

logger = logging.getLogger("certauth")


#: Refusals decided before the registry step, where the client chooses the certificate freely (a new
#: self-made one per request costs it nothing): one row per (reason, client address, window).
ADDRESS_AGGREGATED_REASONS = frozenset(
    {
        Reason.MALFORMED_CERTIFICATE,
        Reason.UNTRUSTED_PROXY,
        Reason.PROXY_VERIFICATION_FAILED,
        Reason.FORWARDED_HASH_MISMATCH,
        Reason.CERTIFICATE_EXPIRED,
        Reason.CERTIFICATE_NOT_YET_VALID,
        Reason.WRONG_USAGE,
        Reason.WEAK_CERTIFICATE,
        Reason.UNSUPPORTED_CERTIFICATE,
        Reason.UNTRUSTED_ISSUER,
        Reason.CHAIN_INVALID,
        Reason.SELF_SIGNED_NOT_ALLOWED,
        Reason.CHAINED_NOT_ALLOWED,
        Reason.CRL_REVOKED,
        Reason.CRL_UNAVAILABLE,
    }
)
#: The refusal whose certificate an operator can act on (register it from the audit): its PEM is kept,
#: within AUDIT_CAPTURE_PER_ADDRESS distinct certificates per client address and window.
CAPTURED_REASONS = frozenset({Reason.UNKNOWN_CERTIFICATE})


@dataclass(frozen=True)
class RefusalEvent:
    reason: Reason
    detail: str
    at: dt.datetime
    certificate: CertificateInfo | None = None
    identity_id: int | None = None
    identity_name: str = ""
    client_ip: str | None = None
    proxy_ip: str | None = None
    method: str = ""
    path: str = ""
    user_agent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_network(self) -> str:
        """The client this refusal is counted against: ``client_network(self.client_ip)``."""
        return client_network(self.client_ip)

    @property
    def by_address(self) -> bool:
        """Aggregated per client address whatever the certificate: a refusal before the registry step (an
        event that names an identity, e.g. a fail-open acceptance or an expired registry entry, is after it)."""
        return self.reason in ADDRESS_AGGREGATED_REASONS and self.identity_id is None

    @property
    def capturable(self) -> bool:
        """An unknown, otherwise valid certificate: one an operator may register from the audit."""
        return self.reason in CAPTURED_REASONS and self.certificate is not None and self.identity_id is None

    def aggregation_key(self, *, by_address: bool | None = None) -> str:
        """The row this refusal counts in (within its window).  ``by_address`` overrides the default
        (``self.by_address``): the overflow row of an address past its capture cap."""
        per_address = self.by_address if by_address is None else by_address
        parts = [
            str(self.reason),
            self.certificate.thumbprint_sha256 if self.certificate and not per_address else "",
            self.client_network,
            str(self.identity_id or ""),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def log_fields(self) -> dict[str, Any]:
        """The event as flat key/value pairs: the log line, ``extra={"certauth": ...}`` and alert mails."""
        cert = self.certificate
        return {
            "reason": str(self.reason),
            "thumbprint": cert.thumbprint_sha256 if cert else "",
            "subject": cert.subject if cert else "",
            "issuer": cert.issuer if cert else "",
            "serial": cert.serial_hex if cert else "",
            "identity": self.identity_name,
            "ip": self.client_ip or "",
            "proxy": self.proxy_ip or "",
            "method": self.method,
            "path": self.path,
        }


# --- the structured log line ------------------------------------------------------------------------

_BARE_VALUE = re.compile(r"\A[A-Za-z0-9_.:/@+\-]+\Z")


def logfmt(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs on one line (logfmt).  A value that is not a plain token is written as a JSON
    string: quotes, backslashes, control characters and any non-ASCII character are escaped, so a
    hostile subject or path can neither break the line nor forge a second one."""
    parts = []
    for key, value in fields.items():
        text = "" if value is None else str(value)
        parts.append(f"{key}={text if _BARE_VALUE.match(text) else json.dumps(text)}")
    return " ".join(parts)


def log_refusal(event: RefusalEvent) -> None:
    """``certauth refused reason=unknown_certificate thumbprint=... subject="CN=x" ip=... path=/api/``
    at WARNING on logger ``certauth``; the same fields ride in ``record.certauth`` (a dict) for JSON
    formatters."""
    fields = event.log_fields()
    logger.warning("certauth refused %s", logfmt(fields), extra={"certauth": fields})


# --- handlers -----------------------------------------------------------------------------------------


class AuditHandler:
    """Base class: receives every refusal.  Subclass and name it in ``CERTAUTH["AUDIT_HANDLER"]``."""

    def record(self, event: RefusalEvent) -> None:
        raise NotImplementedError


class NullAuditHandler(AuditHandler):
    """Stores nothing (the structured log line is still written)."""

    def record(self, event: RefusalEvent) -> None:
        return None


def client_network(address: str | None) -> str:
    """What a client address stands for in the audit: an IPv4 address itself (``"192.0.2.7"``), an IPv6
    address its network of ``AUDIT_IPV6_PREFIX`` bits (``"2001:db8:1:2::/64"``; an IPv4-mapped one its IPv4
    address).  An ISP hands a client at least a /64, so the exact IPv6 address is one of 2**64 it may rotate
    through; per address, a flood would cost a row per request.  "" when unknown, the text itself when not
    an address."""
    if not address:
        return ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(parsed)
    try:
        prefix = min(128, max(0, int(settings.AUDIT_IPV6_PREFIX)))
    except (TypeError, ValueError):  # a misconfiguration must not fail the request: the default
        prefix = 64
    return str(ipaddress.IPv6Network((parsed, prefix), strict=False))


def window_start(at: dt.datetime, seconds: int) -> dt.datetime:
    seconds = max(1, int(seconds))
    epoch = int(at.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=dt.UTC)


def _clip(value: str | None, length: int) -> str:
    return (value or "")[:length]


@dataclass
class _Pending:
    """Refusals of one aggregation key waiting for the request's transaction to end."""

    latest: RefusalEvent
    first_at: dt.datetime
    count: int = 1
    by_address: bool = False


class DatabaseAuditHandler(AuditHandler):
    """Aggregating upsert into ``AuthenticationFailure``.

    PostgreSQL and SQLite: one ``INSERT ... ON CONFLICT (key, window_start) DO UPDATE SET count = count + n``
    statement in autocommit, so concurrent workers never lose an increment and never hold a lock beyond
    that statement.  Other databases: ``select_for_update`` in a short transaction."""

    _pending = threading.local()

    def record(self, event: RefusalEvent) -> None:
        from .models import AuthenticationFailure

        alias = router.db_for_write(AuthenticationFailure)
        if connections[alias].in_atomic_block:
            self._defer(event, alias)
            return
        self.write(event, alias)

    def _defer(self, event: RefusalEvent, alias: str) -> None:
        # Aggregated in memory as well, so even a loop of refusals inside one transaction holds one
        # entry per key, not one per refusal.
        pending: dict[tuple[str, dt.datetime], _Pending] | None = getattr(self._pending, "events", None)
        if pending is None:
            pending = self._pending.events = {}
        if not pending:
            # Written as soon as the transaction commits; if it rolls back (DRF's set_rollback), at
            # request_finished.
            transaction.on_commit(self.flush_pending, using=alias, robust=True)
        window = window_start(event.at, settings.AUDIT_WINDOW_SECONDS)
        by_address = event.by_address
        slot = (event.aggregation_key(), window)
        if event.capturable and slot not in pending:
            # The capture cap applies in memory too: a loop of distinct certificates in one transaction
            # holds at most AUDIT_CAPTURE_PER_ADDRESS entries per address (the database applies it again).
            captured = sum(
                1
                for (_, at), entry in pending.items()
                if at == window
                and not entry.by_address
                and entry.latest.capturable
                and entry.latest.client_network == event.client_network
            )
            if captured >= max(0, int(settings.AUDIT_CAPTURE_PER_ADDRESS)):
                by_address = True
                slot = (event.aggregation_key(by_address=True), window)
        waiting = pending.get(slot)
        if waiting is None:
            pending[slot] = _Pending(latest=event, first_at=event.at, by_address=by_address)
            return
        waiting.count += 1
        waiting.first_at = min(waiting.first_at, event.at)
        if event.at >= waiting.latest.at:
            waiting.latest = event

    def flush_pending(self) -> None:
        from .models import AuthenticationFailure

        pending: dict[tuple[str, dt.datetime], _Pending] = getattr(self._pending, "events", None) or {}
        self._pending.events = {}
        if not pending:
            return
        alias = router.db_for_write(AuthenticationFailure)
        for waiting in pending.values():
            self.write(
                waiting.latest, alias, count=waiting.count, first_seen=waiting.first_at, by_address=waiting.by_address
            )

    def discard_pending(self) -> None:
        """Forget deferred refusals of this thread (tests: a test transaction is never committed)."""
        self._pending.events = {}

    def write(
        self,
        event: RefusalEvent,
        alias: str,
        *,
        count: int = 1,
        first_seen: dt.datetime | None = None,
        by_address: bool = False,
    ) -> None:
        try:
            by_address = by_address or event.by_address or self._over_capture_cap(event, alias)
            self._upsert(event, alias, count, first_seen or event.at, by_address)
        except Exception:
            # Never fail or slow the request for the audit; the log line already carries the event.
            logger.exception("certauth audit write failed", extra={"certauth": event.log_fields()})

    def _over_capture_cap(self, event: RefusalEvent, alias: str) -> bool:
        """Does this unknown certificate's address already have AUDIT_CAPTURE_PER_ADDRESS rows of their own in
        this window (and this certificate none)?  Two indexed queries, on refusals only.  Concurrent workers
        may each pass the check once: the cap can be exceeded by the number of workers, never more."""
        if not event.capturable:
            return False
        from .models import AuthenticationFailure

        window = window_start(event.at, settings.AUDIT_WINDOW_SECONDS)
        rows = AuthenticationFailure.objects.using(alias).filter(window_start=window, reason=str(event.reason))
        if rows.filter(key=event.aggregation_key()).exists():
            return False
        cap = max(0, int(settings.AUDIT_CAPTURE_PER_ADDRESS))
        own = rows.filter(aggregated_by_address=False, identity__isnull=True, client_network=event.client_network)
        return own[: cap + 1].count() >= cap

    def _row(self, event: RefusalEvent, count: int, first_seen: dt.datetime, by_address: bool) -> dict[str, Any]:
        cert = event.certificate
        capture = cert is not None and event.capturable and not by_address and settings.AUDIT_CAPTURE_CERTIFICATE
        return {
            "key": event.aggregation_key(by_address=by_address),
            "window_start": window_start(event.at, settings.AUDIT_WINDOW_SECONDS),
            "reason": str(event.reason),
            "detail": _clip(event.detail, 1000),
            "thumbprint_sha256": cert.thumbprint_sha256 if cert else "",
            "subject": _clip(cert.subject if cert else "", 2000),
            "subject_cn": _clip(cert.subject_cn if cert else "", 255),
            "issuer": _clip(cert.issuer if cert else "", 2000),
            "serial_number": _clip(cert.serial_hex if cert else "", 100),
            "not_after": cert.not_after if cert else None,
            "client_ip": event.client_ip or None,  # the first address seen: a row may count a whole IPv6 network
            "client_network": event.client_network,
            "proxy_ip": event.proxy_ip or None,
            "method": _clip(event.method, 10),
            "path": _clip(event.path, 500),
            "user_agent": _clip(event.user_agent, 300),
            "identity_id": event.identity_id,
            "certificate_pem": cert.pem() if capture and cert else "",
            "aggregated_by_address": by_address,
            "last_thumbprint_sha256": cert.thumbprint_sha256 if cert else "",
            "count": count,
            "first_seen": first_seen,
            "last_seen": event.at,
        }

    def _upsert(self, event: RefusalEvent, alias: str, count: int, first_seen: dt.datetime, by_address: bool) -> None:
        from .models import AuthenticationFailure

        row = self._row(event, count, first_seen, by_address)
        connection = connections[alias]
        if connection.vendor in {"postgresql", "sqlite"}:
            quote = connection.ops.quote_name
            table = quote(AuthenticationFailure._meta.db_table)
            columns = list(row)
            model_fields = {f.attname: f for f in AuthenticationFailure._meta.concrete_fields}
            values = [model_fields[c].get_db_prep_save(row[c], connection) for c in columns]
            newer = f"excluded.last_seen >= {table}.last_seen"
            # The request line of the latest refusal wins (path, method, user agent, detail, and the last
            # thumbprint of a row aggregated by address); the certificate facts stay the first one's; counts
            # add up; first/last seen widen.  Every right-hand side reads the row as it was before this update.
            latest = ", ".join(
                f"{quote(c)} = CASE WHEN {newer} THEN excluded.{quote(c)} ELSE {table}.{quote(c)} END"
                for c in ("detail", "method", "path", "user_agent", "last_thumbprint_sha256")
            )
            # Identifiers come from the model's own metadata, values are parameters.
            sql = (
                f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
                f"VALUES ({', '.join(['%s'] * len(columns))}) "
                f"ON CONFLICT (key, window_start) DO UPDATE SET "
                f"count = {table}.count + excluded.count, {latest}, "
                f"first_seen = CASE WHEN excluded.first_seen < {table}.first_seen "
                f"THEN excluded.first_seen ELSE {table}.first_seen END, "
                f"last_seen = CASE WHEN {newer} THEN excluded.last_seen ELSE {table}.last_seen END"
            )
            if connection.vendor == "postgresql":
                # The flooded row is hot: with a synchronous commit every writer queues on its row lock for a
                # WAL flush.  Audit increments may lose their last fraction of a second in a server crash
                # (never corrupt); in exchange the lock is held for microseconds.
                with transaction.atomic(using=alias), connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
                    cursor.execute(sql, values)
                return
            with connection.cursor() as cursor:
                cursor.execute(sql, values)
            return
        # Other databases: a row lock serialises the increment.
        from django.db.models import F
        from django.db.models.functions import Greatest, Least

        with transaction.atomic(using=alias):
            obj, created = (
                AuthenticationFailure.objects.using(alias)
                .select_for_update()
                .get_or_create(key=row["key"], window_start=row["window_start"], defaults=row)
            )
            if not created:
                AuthenticationFailure.objects.using(alias).filter(pk=obj.pk).update(
                    count=F("count") + count,
                    first_seen=Least("first_seen", first_seen),
                    last_seen=Greatest("last_seen", event.at),
                )


_handler_cache: dict[int, AuditHandler] = {}


def get_handler() -> AuditHandler:
    key = settings.generation
    handler = _handler_cache.get(key)
    if handler is None:
        _handler_cache.clear()
        handler = _handler_cache[key] = settings.AUDIT_HANDLER()
    return handler


def record(event: RefusalEvent) -> None:
    """Log, store and (when configured) alert on one refusal.  Never raises."""
    log_refusal(event)
    try:
        get_handler().record(event)
    except Exception:
        logger.exception("certauth audit handler failed", extra={"certauth": event.log_fields()})
    alerts.note_refusal(event)


def flush_pending(**kwargs: Any) -> None:
    handler = get_handler()
    flush = getattr(handler, "flush_pending", None)
    if flush is not None:
        try:
            flush()
        except Exception:
            logger.exception("certauth audit flush failed")


request_finished.connect(flush_pending, dispatch_uid="certauth-audit-flush")


def discard_pending() -> None:
    """Drop refusals deferred by this thread and not yet written (for test isolation)."""
    discard = getattr(get_handler(), "discard_pending", None)
    if discard is not None:
        discard()


def now() -> dt.datetime:
    return timezone.now()


# --- reading and pruning the audit (shared by the admin, the prune command and tests) -------------------

MIN_THUMBPRINT_PREFIX = 8
_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = re.compile(r"\A[0-9a-f]+\Z")


def failures() -> QuerySet[AuthenticationFailure]:
    from .models import AuthenticationFailure

    return AuthenticationFailure.objects.all()


def reason_counts(since: dt.datetime, queryset: QuerySet[AuthenticationFailure] | None = None) -> list[dict[str, Any]]:
    """Refusals per reason among rows last seen at or after ``since``, most frequent first:
    ``[{"reason": "unknown_certificate", "refusals": 10000, "rows": 2}, ...]``.  A row counts whole, so
    the figure can include refusals up to one audit window older than ``since``."""
    queryset = failures() if queryset is None else queryset
    rows = (
        queryset.filter(last_seen__gte=since)
        .order_by()
        .values("reason")
        .annotate(refusals=Sum("count"), rows=Count("pk"))
        .order_by("-refusals", "reason")
    )
    return [dict(row) for row in rows]


def refusals_since(since: dt.datetime, queryset: QuerySet[AuthenticationFailure] | None = None) -> int:
    """Refusals in rows last seen at or after ``since`` (counted whole, as ``reason_counts``)."""
    queryset = failures() if queryset is None else queryset
    return int(queryset.filter(last_seen__gte=since).aggregate(total=Sum("count"))["total"] or 0)


def registration_obstacle(failure: AuthenticationFailure, at: dt.datetime, *, registered: bool | None = None) -> str:
    """Why registering this row's certificate would not help, or ``""`` when it would: an unknown certificate
    (refused ``unknown_certificate``: valid and trusted when refused), captured with its PEM, not expired at
    ``at``, not registered since.  ``registered`` is what the caller already knows (an annotation), else asked."""
    if failure.reason != Reason.UNKNOWN_CERTIFICATE:
        return f"Refused as {failure.reason}: registering the certificate would not change that."
    if not failure.certificate_pem:
        return (
            "No certificate was kept for this row (AUDIT_CAPTURE_CERTIFICATE, or past AUDIT_CAPTURE_PER_ADDRESS "
            "certificates from this address in one window): register it from the client's PEM file."
        )
    if failure.not_after is not None and failure.not_after <= at:
        return f"The certificate expired on {failure.not_after:%Y-%m-%d %H:%M} UTC: register its renewal instead."
    if registered is None:
        from .models import RegisteredCertificate

        registered = RegisteredCertificate.objects.filter(thumbprint_sha256=failure.thumbprint_sha256).exists()
    if registered:
        return "This certificate is already registered."
    return ""


def search_filter(term: str) -> Q | None:
    """What an admin search term means, as an indexed lookup when it can be one:

    * a full thumbprint in any spelling (``AB:CD:..``, spaces, ``sha256:`` prefix) -> exact thumbprint;
    * an IP address -> exact client IP;
    * at least ``MIN_THUMBPRINT_PREFIX`` hex digits (separators allowed) -> thumbprint prefix.

    None for anything else (the admin falls back to its ``search_fields``: subject, common name, IP)."""
    term = term.strip()
    if not term:
        return None
    try:
        return Q(thumbprint_sha256=normalize_thumbprint(term))
    except ValueError:
        pass
    import ipaddress

    try:
        return Q(client_ip=str(ipaddress.ip_address(term)))
    except ValueError:
        pass
    hexdigits = _SEPARATORS.sub("", term.lower())
    if len(hexdigits) >= MIN_THUMBPRINT_PREFIX and _HEX.match(hexdigits):
        return Q(thumbprint_sha256__startswith=hexdigits)
    return None


def prune(before: dt.datetime, *, batch_size: int = 5000, dry_run: bool = False) -> int:
    """Delete audit rows last seen before ``before``, ``batch_size`` rows per statement (each its own
    short transaction, so writers are never blocked for long).  Returns how many rows were (or, with
    ``dry_run``, would be) deleted."""
    old = failures().filter(last_seen__lt=before)
    if dry_run:
        return old.count()
    deleted = 0
    while True:
        batch = list(old.order_by().values_list("pk", flat=True)[:batch_size])
        if not batch:
            return deleted
        deleted += failures().filter(pk__in=batch).delete()[0]
