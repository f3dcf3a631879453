"""Optional flood alert on refusals.

When ``CERTAUTH["AUDIT_ALERT_THRESHOLD"]`` is a number N, every refusal counts against its certificate
thumbprint and against its client IP in fixed windows of ``AUDIT_ALERT_WINDOW_SECONDS`` (aligned to the
epoch).  The refusal that takes a thumbprint or IP past N in a window writes one WARNING line on logger
``certauth.alerts``; that happens at most once per window for each thumbprint or IP.  ``mail_admins`` is
sent with the first such alert of a window and not again until the next window, so an attack from many
addresses cannot turn into a mail storm (the log lines and the audit list the rest).

The counters live in the Django cache ``AUDIT_ALERT_CACHE_ALIAS`` (``"default"``).  With the per-process
local-memory cache each worker counts alone; share a Redis cache between workers and hosts
for one count per deployment.  Counting never raises: a cache outage costs the alert, never the request.
The counters are plain integers read and written by ``certauth.sharedcache`` (never unpickled; a planted
value is replaced, not obeyed), so the cache must be Redis or local memory (``certauth.E011``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.core.cache import caches
from django.core.mail import mail_admins

from . import sharedcache
from .conf import settings

if TYPE_CHECKING:
    from .audit import RefusalEvent

logger = logging.getLogger("certauth.alerts")

KEY_PREFIX = "certauth:alert"


@dataclass(frozen=True)
class Alert:
    kind: str  # "thumbprint" | "ip"
    value: str
    refusals: int
    window_seconds: int
    threshold: int

    def fields(self, event: RefusalEvent) -> dict[str, object]:
        return {
            self.kind: self.value,
            "refusals": self.refusals,
            "threshold": self.threshold,
            "window_seconds": self.window_seconds,
            "latest_reason": str(event.reason),
            "subject": event.certificate.subject if event.certificate else "",
            "ip": event.client_ip or "",
            "path": event.path,
        }


def tracked_values(event: RefusalEvent) -> list[tuple[str, str]]:
    """What a refusal counts against: its thumbprint (when a certificate was read) and its client address (an
    IPv6 one by its network, ``certauth.audit.client_network``: one client rotates through a whole /64)."""
    values = []
    if event.certificate is not None:
        values.append(("thumbprint", event.certificate.thumbprint_sha256))
    if event.client_ip:
        values.append(("ip", event.client_network))
    return values


def count_refusal(event: RefusalEvent) -> list[Alert]:
    """Count the refusal; return the alerts it trips (each at most once per window and value)."""
    threshold = settings.AUDIT_ALERT_THRESHOLD
    if threshold is None:
        return []
    window = max(1, int(settings.AUDIT_ALERT_WINDOW_SECONDS))
    cache = caches[settings.AUDIT_ALERT_CACHE_ALIAS]
    bucket = int(event.at.timestamp()) // window
    timeout = window + 60  # outlive the window a little so a late increment still finds its counter
    alerts = []
    for kind, value in tracked_values(event):
        key = f"{KEY_PREFIX}:{kind}:{value}:{bucket}"
        try:
            refusals = sharedcache.increment(cache, key, timeout=timeout)
            # add_flag is atomic (SET NX): one worker wins.
            if refusals > threshold and sharedcache.add_flag(cache, f"{key}:alerted", timeout):
                alerts.append(Alert(kind, value, refusals, window, int(threshold)))
        except Exception:
            # One counter failing (a broken or hostile cache) never stops the others: the client address is
            # still counted when the thumbprint's counter cannot be.
            logger.exception("certauth alert counting failed", extra={"certauth_alert_kind": kind})
    return alerts


def note_refusal(event: RefusalEvent) -> None:
    """Called by ``certauth.audit.record`` for every refusal.  Never raises."""
    if settings.AUDIT_ALERT_THRESHOLD is None:
        return
    try:
        alerts = count_refusal(event)
    except Exception:
        logger.exception("certauth alert counting failed")
        return
    for alert in alerts:
        send_alert(alert, event)


def send_alert(alert: Alert, event: RefusalEvent) -> None:
    from .audit import logfmt

    fields = alert.fields(event)
    line = logfmt(fields)
    logger.warning("certauth alert %s", line, extra={"certauth_alert": fields})
    window = int(event.at.timestamp()) // alert.window_seconds
    try:
        cache = caches[settings.AUDIT_ALERT_CACHE_ALIAS]
        if not sharedcache.add_flag(cache, f"{KEY_PREFIX}:mailed:{window}", alert.window_seconds + 60):
            return
        mail_admins(
            f"certauth: more than {alert.threshold} refusals for {alert.kind} {alert.value} "
            f"within {alert.window_seconds} s",
            "certauth refused one client certificate or client address more often than the alert threshold.\n\n"
            + "\n".join(f"{key}: {value}" for key, value in fields.items())
            + "\n\nThe Django admin's authentication failures list shows every refusal; further alerts in this "
            "window are written to the log (logger certauth.alerts) only.",
        )
    except Exception:  # not fail_silently (deprecated in Django 6.1): a mail that fails is logged, never raised
        logger.exception("certauth alert mail failed")
