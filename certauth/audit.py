"""The refusal audit.

Every refusal becomes a ``RefusalEvent``; the handler named by ``CERTAUTH["AUDIT_HANDLER"]`` stores it.
The default database handler aggregates: identical refusals (reason, thumbprint, client IP, identity)
within one ``AUDIT_WINDOW_SECONDS`` window are one ``AuthenticationFailure`` row whose count is
incremented by a single atomic upsert, so a flood of identical failures costs O(1) rows and the counts
stay exact under concurrency.

Audit writes never ride in the request's transaction: when the connection is inside an atomic block
(``ATOMIC_REQUESTS``; DRF marks it for rollback on every handled exception) the write is deferred to
``request_finished``, after that transaction is over.  A failing audit write is logged, never raised.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import request_finished
from django.db import connections, router
from django.utils import timezone

from .certificates import CertificateInfo
from .conf import settings
from .reasons import Reason

logger = logging.getLogger("certauth")


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

    def aggregation_key(self) -> str:
        parts = [
            str(self.reason),
            self.certificate.thumbprint_sha256 if self.certificate else "",
            self.client_ip or "",
            str(self.identity_id or ""),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def log_fields(self) -> dict[str, Any]:
        cert = self.certificate
        return {
            "reason": str(self.reason),
            "thumbprint": cert.thumbprint_sha256 if cert else "",
            "subject": cert.subject if cert else "",
            "issuer": cert.issuer if cert else "",
            "identity": self.identity_name,
            "ip": self.client_ip or "",
            "method": self.method,
            "path": self.path,
        }


class AuditHandler:
    """Base class: receives every refusal.  Subclass and name it in ``CERTAUTH["AUDIT_HANDLER"]``."""

    def record(self, event: RefusalEvent) -> None:
        raise NotImplementedError


class NullAuditHandler(AuditHandler):
    """Stores nothing (the structured log line is still written)."""

    def record(self, event: RefusalEvent) -> None:
        return None


def window_start(at: dt.datetime, seconds: int) -> dt.datetime:
    seconds = max(1, int(seconds))
    epoch = int(at.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=dt.UTC)


def _clip(value: str | None, length: int) -> str:
    return (value or "")[:length]


class DatabaseAuditHandler(AuditHandler):
    """Aggregating upsert into ``AuthenticationFailure``."""

    _pending = threading.local()

    def record(self, event: RefusalEvent) -> None:
        from .models import AuthenticationFailure

        alias = router.db_for_write(AuthenticationFailure)
        if connections[alias].in_atomic_block:
            pending = getattr(self._pending, "events", None)
            if pending is None:
                pending = self._pending.events = []
            pending.append(event)
            return
        self.write(event, alias)

    def flush_pending(self) -> None:
        from .models import AuthenticationFailure

        events = getattr(self._pending, "events", None) or []
        self._pending.events = []
        alias = router.db_for_write(AuthenticationFailure)
        for event in events:
            self.write(event, alias)

    def write(self, event: RefusalEvent, alias: str) -> None:
        try:
            self._upsert(event, alias)
        except Exception:
            # Never fail or slow the request for the audit; the log line below still carries the event.
            logger.exception("certauth audit write failed", extra={"certauth": event.log_fields()})

    def _upsert(self, event: RefusalEvent, alias: str) -> None:
        from .models import AuthenticationFailure

        cert = event.certificate
        row = {
            "key": event.aggregation_key(),
            "window_start": window_start(event.at, settings.AUDIT_WINDOW_SECONDS),
            "reason": str(event.reason),
            "detail": _clip(event.detail, 1000),
            "thumbprint_sha256": cert.thumbprint_sha256 if cert else "",
            "subject": _clip(cert.subject if cert else "", 2000),
            "subject_cn": _clip(cert.subject_cn if cert else "", 255),
            "issuer": _clip(cert.issuer if cert else "", 2000),
            "serial_number": _clip(cert.serial_hex if cert else "", 100),
            "not_after": cert.not_after if cert else None,
            "client_ip": event.client_ip or None,
            "proxy_ip": event.proxy_ip or None,
            "method": _clip(event.method, 10),
            "path": _clip(event.path, 500),
            "user_agent": _clip(event.user_agent, 300),
            "identity_id": event.identity_id,
            "certificate_pem": cert.pem() if cert and settings.AUDIT_CAPTURE_CERTIFICATE else "",
            "count": 1,
            "first_seen": event.at,
            "last_seen": event.at,
        }
        connection = connections[alias]
        if connection.vendor in {"postgresql", "sqlite"}:
            table = connection.ops.quote_name(AuthenticationFailure._meta.db_table)
            columns = list(row)
            model_fields = {f.attname: f for f in AuthenticationFailure._meta.concrete_fields}
            values = [model_fields[c].get_db_prep_save(row[c], connection) for c in columns]
            quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
            placeholders = ", ".join(["%s"] * len(columns))
            # Identifiers come from the model's own metadata, values are parameters.
            sql = (
                f"INSERT INTO {table} ({quoted}) VALUES ({placeholders}) "  # noqa: S608
                f"ON CONFLICT (key, window_start) DO UPDATE SET "
                f"count = {table}.count + 1, "
                f"last_seen = CASE WHEN excluded.last_seen > {table}.last_seen "
                f"THEN excluded.last_seen ELSE {table}.last_seen END"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, values)
            return
        # Other databases: a row lock serialises the increment.
        from django.db import transaction
        from django.db.models import F
        from django.db.models.functions import Greatest

        with transaction.atomic(using=alias):
            obj, created = (
                AuthenticationFailure.objects.using(alias)
                .select_for_update()
                .get_or_create(key=row["key"], window_start=row["window_start"], defaults=row)
            )
            if not created:
                AuthenticationFailure.objects.using(alias).filter(pk=obj.pk).update(
                    count=F("count") + 1, last_seen=Greatest("last_seen", event.at)
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
    """Store and log one refusal.  Never raises."""
    logger.warning(
        "certauth refused reason=%s thumbprint=%s subject=%r ip=%s path=%s identity=%s",
        event.reason,
        event.log_fields()["thumbprint"],
        event.log_fields()["subject"],
        event.client_ip or "-",
        event.path,
        event.identity_name or "-",
        extra={"certauth": event.log_fields()},
    )
    try:
        get_handler().record(event)
    except Exception:
        logger.exception("certauth audit handler failed", extra={"certauth": event.log_fields()})


def flush_pending(**kwargs: Any) -> None:
    handler = get_handler()
    flush = getattr(handler, "flush_pending", None)
    if flush is not None:
        try:
            flush()
        except Exception:
            logger.exception("certauth audit flush failed")


request_finished.connect(flush_pending, dispatch_uid="certauth-audit-flush")


def now() -> dt.datetime:
    return timezone.now()
