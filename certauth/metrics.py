"""Prometheus metrics (``CERTAUTH["METRICS_ENABLED"]``; ``pip install 'django-certauth[metrics]'``).

Counted where the decision is made (``certauth.authenticator``): every decided request adds to
``certauth_accepted_total`` or, once it is recorded as a refusal, to ``certauth_refused_total{reason}``, and its
decision time to the histogram ``certauth_authentication_seconds``.  The only label is the reason code, one of
``certauth.reasons.Reason`` (never a thumbprint, an address or a name a client chooses): at most
``len(Reason)`` series, all present from the start at 0.

What needs the database is read when scraped, never per request (``RegistryCollector``): certificates expiring
within ``EXPIRY_WARNING_DAYS``, each active identity's soonest expiry, each CRL's age, the registry's size.
Those gauges carry the identity's or the authority's name: names an operator created in the admin, bounded by
the registry, not by clients.

With several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) before the
workers start: the counters of every worker are then summed in each scrape (docs/metrics.md).  Without
prometheus-client installed, and with ``METRICS_ENABLED`` off, nothing here imports it and requests pay one
settings-generation comparison.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .conf import settings
from .reasons import Reason

#: The histogram's buckets (seconds): a remembered acceptance takes microseconds, a first sight milliseconds,
#: an OCSP call up to ``OCSP_TIMEOUT_SECONDS``.
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0)

#: Every series certauth exports (the alert rules in docs/metrics.md may name only these; a test checks it).
SERIES = (
    "certauth_accepted_total",
    "certauth_refused_total",
    "certauth_authentication_seconds_bucket",
    "certauth_authentication_seconds_count",
    "certauth_authentication_seconds_sum",
    "certauth_certificates_expiring",
    "certauth_expiry_warning_days",
    "certauth_identity_expiry_seconds",
    "certauth_authority_crl_age_seconds",
    "certauth_registry_identities",
    "certauth_registry_certificates",
    "certauth_registry_up",
)

INSTALL_HINT = "pip install 'django-certauth[metrics]' (prometheus-client)"

logger = logging.getLogger("certauth")


class Unavailable(RuntimeError):
    """The counters cannot be kept or read: ``PROMETHEUS_MULTIPROC_DIR`` names no directory this process can use
    (``certauth.W022``).  The message says how to fix it."""


def multiprocess_problem() -> str | None:
    """Why ``PROMETHEUS_MULTIPROC_DIR`` cannot hold the counters, or None (unset, or a usable directory)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not directory or (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        return None
    return (
        f"PROMETHEUS_MULTIPROC_DIR={directory!r} is not a directory this user can write to (certauth.W022): create "
        "it (empty, owned by the workers' user, mode 0700) before the workers start (docs/metrics.md)"
    )


def allow_mode() -> str | None:
    """``METRICS_ALLOW`` when it admits someone: ``"loopback"``, or ``"scope"`` with ``METRICS_SCOPE`` one
    scope an identity can hold (``SCOPE_RE``: not empty, no space, so never two); None otherwise (every scrape
    refused, ``certauth.W021``)."""
    from .models import SCOPE_RE

    allow, scope = settings.METRICS_ALLOW, settings.METRICS_SCOPE
    if allow == "loopback" or (allow == "scope" and isinstance(scope, str) and SCOPE_RE.match(scope)):
        return str(allow)
    return None


def available() -> bool:
    """Is prometheus-client importable?"""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class Instruments:
    """The process's counters and histogram, created once (prometheus-client allows one of each name)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "certauth_accepted", "Requests authenticated by client certificate.", registry=self.registry
        )
        refused = Counter(
            "certauth_refused",
            "Requests refused, by certauth reason code.",
            ["reason"],
            registry=self.registry,
        )
        # Every reason present from the start (rate() of a series that appears with its first event misses it),
        # and looked up per refusal in a plain dict rather than through labels().
        self.refused = {reason: refused.labels(str(reason)) for reason in Reason}
        self.seconds = Histogram(
            "certauth_authentication_seconds",
            "Time certauth took to decide a request (remembered acceptances included).",
            buckets=BUCKETS,
            registry=self.registry,
        )

    def decided(self, accepted: bool, seconds: float) -> None:
        if accepted:
            self.accepted.inc()
        self.seconds.observe(seconds)

    def refused_for(self, reason: Reason) -> None:
        counter = self.refused.get(reason)
        if counter is not None:  # always, for a Reason: never an error on the refusal path
            counter.inc()


_instruments: Instruments | None = None
_generation = -1
_active: Instruments | None = None


_creating = threading.Lock()


def instruments() -> Instruments:
    """The process's instruments (imports prometheus-client: raises ImportError without it)."""
    global _instruments
    if _instruments is None:
        with _creating:  # two threads of an ASGI server must not each count into their own
            if _instruments is None:
                _instruments = Instruments()
    return _instruments


def active() -> Instruments | None:
    """The instruments when ``METRICS_ENABLED`` and prometheus-client is installed, else None; decided once per
    settings generation (the request path's whole cost when metrics are off)."""
    global _generation, _active
    if _generation != settings.generation:
        enabled = bool(settings.METRICS_ENABLED) and available()
        _active = None
        if enabled:
            try:
                _active = instruments()
            except OSError as exc:  # multiprocess mode without its directory: no counting, never a 500
                logger.error(
                    "certauth metrics: nothing is counted in this process: %s (%s).", multiprocess_problem(), exc
                )
        _generation = settings.generation
    return _active


# --- scrape time ------------------------------------------------------------------------------------------
def label_value(text: str) -> str:
    """An operator-chosen name as a label value: characters that are not printable (C0/C1 controls, bidi
    overrides, line breaks) written as ``\\uXXXX`` (``\\UXXXXXXXX`` beyond U+FFFF) so no dashboard shows them
    raw; the exposition format escapes backslashes and quotes itself.  A backslash is written ``\\u005c`` too:
    two names never give one label value (a duplicate series, whose second sample Prometheus drops)."""
    return "".join(
        ch if ch.isprintable() and ch != "\\" else (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        for ch in text
    )


class RegistryCollector:
    """The gauges read from the database at scrape time (a custom prometheus-client collector).  ``now``: a
    callable giving the instant to measure against (``timezone.now`` by default; tests pass a fixed one).  A
    database that cannot be read gives ``certauth_registry_up 0`` and no other gauge, never an error."""

    def __init__(self, now: Callable[[], dt.datetime] | None = None) -> None:
        self._now = now

    def describe(self) -> list[Any]:
        return []  # nothing read at registration time

    def collect(self) -> Iterator[Any]:
        from django.db import DatabaseError
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("certauth_registry_up", "1 when the registry could be read for this scrape.")
        try:
            families = self._read()
        except DatabaseError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Any]:
        from django.db.models import Count, Max, Min, Q
        from django.utils import timezone
        from prometheus_client.core import GaugeMetricFamily

        from .models import CertificateIdentity, RegisteredCertificate, TrustedAuthority

        now = (self._now or timezone.now)()
        days = settings.EXPIRY_WARNING_DAYS
        warning = GaugeMetricFamily("certauth_expiry_warning_days", "CERTAUTH EXPIRY_WARNING_DAYS.")
        warning.add_metric([], days)
        expiring = GaugeMetricFamily(
            "certauth_certificates_expiring",
            "Live certificates of active identities expiring within EXPIRY_WARNING_DAYS (certauth expiring).",
        )
        # What `certauth expiring` lists (certauth.cli.expiring.expiring_entries), counted rather than loaded.
        expiring.add_metric(
            [], RegisteredCertificate.objects.expiring_within(days, now).filter(identity__is_active=True).count()
        )

        per_identity = GaugeMetricFamily(
            "certauth_identity_expiry_seconds",
            "Seconds until the soonest expiry among the identity's live certificates; with none live, since its "
            "last one expired (negative). Active identities with an unrevoked certificate.",
            labels=["identity"],
        )
        unrevoked = Q(certificates__revoked_at__isnull=True)
        rows = (
            CertificateIdentity.objects.filter(is_active=True)
            .annotate(
                soonest=Min("certificates__not_after", filter=unrevoked & Q(certificates__not_after__gt=now)),
                latest=Max("certificates__not_after", filter=unrevoked),
            )
            .filter(latest__isnull=False)
            .order_by("name")
            .values_list("name", "soonest", "latest")
        )
        for name, soonest, latest in rows:
            per_identity.add_metric([label_value(name)], ((soonest or latest) - now).total_seconds())

        crl_age = GaugeMetricFamily(
            "certauth_authority_crl_age_seconds",
            "Seconds since the enabled authority's CRL was last refreshed (+Inf: none held). After a failed "
            "refresh, the age of the CRL held (since its thisUpdate).",
            labels=["authority"],
        )
        authorities = (
            TrustedAuthority.objects.filter(is_enabled=True)
            .filter(~Q(crl_url="") | Q(crl_der__isnull=False))
            .order_by("name")
            .values_list("name", "crl_fetched_at", "crl_last_update", "crl_error", "crl_der")
        )
        for name, fetched_at, this_update, error, der in authorities:
            since = this_update if error else fetched_at
            age = math.inf if der is None or since is None else (now - since).total_seconds()
            crl_age.add_metric([label_value(name)], age)

        identities = GaugeMetricFamily(
            "certauth_registry_identities", "Registered identities by state.", labels=["state"]
        )
        counts = CertificateIdentity.objects.aggregate(
            active=Count("pk", filter=Q(is_active=True)), disabled=Count("pk", filter=Q(is_active=False))
        )
        for state in ("active", "disabled"):
            identities.add_metric([state], counts[state])
        certificates = GaugeMetricFamily(
            "certauth_registry_certificates", "Registered certificates by state.", labels=["state"]
        )
        entries = RegisteredCertificate.objects.aggregate(
            live=Count("pk", filter=Q(revoked_at__isnull=True, not_after__gt=now)),
            expired=Count("pk", filter=Q(revoked_at__isnull=True, not_after__lte=now)),
            revoked=Count("pk", filter=Q(revoked_at__isnull=False)),
        )
        for state in ("live", "expired", "revoked"):
            certificates.add_metric([state], entries[state])
        return [expiring, warning, per_identity, crl_age, identities, certificates]


class _Scrape:
    """What one scrape exposes: the request counters (this process's, or every worker's from
    ``PROMETHEUS_MULTIPROC_DIR``) and the registry gauges."""

    def __init__(self, now: Callable[[], dt.datetime] | None) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.parts: list[Any] = []
        problem = multiprocess_problem()
        if problem is not None:
            raise Unavailable(problem)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            counters = CollectorRegistry()
            MultiProcessCollector(counters)
            self.parts.append(counters)
        else:
            self.parts.append(instruments().registry)
        self.parts.append(RegistryCollector(now))

    def collect(self) -> Iterator[Any]:
        for part in self.parts:
            yield from part.collect()


def exposition(now: Callable[[], dt.datetime] | None = None) -> bytes:
    """The Prometheus text exposition of everything certauth exports (raises ImportError without
    prometheus-client, ``Unavailable`` when ``PROMETHEUS_MULTIPROC_DIR`` is unusable)."""
    from prometheus_client import generate_latest

    return generate_latest(_Scrape(now))  # type: ignore[arg-type]


def write_textfile(path: str, now: Callable[[], dt.datetime] | None = None) -> None:
    """``exposition()`` into ``path`` for node_exporter's textfile collector: written beside it and renamed
    over it, so node_exporter never reads half a file."""
    from prometheus_client import write_to_textfile

    write_to_textfile(path, _Scrape(now))  # type: ignore[arg-type]


# --- who may scrape ---------------------------------------------------------------------------------------
#: Headers a proxy adds (certauth's own, and the usual forwarding ones): a request carrying any came through
#: a proxy, so its loopback peer address says nothing about the client.
FORWARDING_KEYS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def direct_loopback(meta: dict[str, Any], proxy_keys: tuple[str | None, ...]) -> bool:
    """Did this request come straight from this host, not through a proxy?  The peer is a loopback address
    and none of the headers a proxy adds is present (``FORWARDING_KEYS`` and ``proxy_keys``: certauth's
    certificate, verdict, client-address and proxy-secret headers)."""
    try:
        peer = ipaddress.ip_address(str(meta.get("REMOTE_ADDR", "")).split("%", 1)[0])
    except ValueError:
        return False  # a unix socket (the proxy's), or no address
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    if not peer.is_loopback:
        return False
    return not any(key and key in meta for key in (*FORWARDING_KEYS, *proxy_keys))
