"""certauth's settings: one namespaced dict, ``CERTAUTH = {...}`` in Django settings, read through
``certauth.conf.settings`` with the documented defaults below.  Reloaded on ``setting_changed`` so
``override_settings(CERTAUTH=...)`` works in tests."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # --- where the certificate comes from -------------------------------------------------------
    # Addresses (IPs or CIDRs) whose forwarded certificate header is believed.  Anyone else's is
    # ignored and the attempt is refused (untrusted_proxy) and audited.  "unix:" trusts connections on
    # a unix socket (gunicorn --bind unix:PATH), which only the proxy's user should be able to open.
    "TRUSTED_PROXIES": ["127.0.0.1", "::1"],
    # A random value the proxy adds to every request (proxy_set_header, see certauth.nginxconf) and
    # certauth then requires, besides the address, before believing any forwarded certificate: other
    # local users reach 127.0.0.1 too.  PROXY_SECRET_FILE (a path; the file's content, stripped) keeps it
    # out of settings.py; set one of the two.  None: no secret required.
    "PROXY_SECRET": None,
    "PROXY_SECRET_FILE": None,
    "PROXY_SECRET_HEADER": "X-Certauth-Proxy-Secret",
    # The header the proxy puts the certificate in, as sent on the wire.
    "CERTIFICATE_HEADER": "X-SSL-Client-Cert",
    # Its dialect: nginx_escaped (default), nginx_legacy / pem, base64_der / iis / haproxy, rfc9440,
    # envoy_xfcc, traefik, aws_alb (certauth.forwarding.PARSERS; the header each proxy uses:
    # certauth.forwarding.RECOMMENDED_HEADERS).
    "FORWARDING_FORMAT": "nginx_escaped",
    # envoy_xfcc: the last element must carry Hash (Envoy always writes it) or the request is refused
    # (malformed_certificate).  False only for an XFCC writer that cannot.
    "XFCC_REQUIRE_HASH": True,
    # Optional header with the rest of the chain (RFC 9440 Client-Cert-Chain and similar).
    "CHAIN_HEADER": None,
    # True when the proxy verifies the client certificate itself (nginx `ssl_verify_client on` or
    # `optional`): then its verdict header must say SUCCESS.  False for `optional_no_ca`, where
    # certauth's own trust policy is the only check.
    "PROXY_VERIFIES_CERTIFICATE": True,
    "VERIFY_HEADER": "X-SSL-Client-Verify",
    # Header with the real client address, believed from trusted proxies only (for the audit).  A list
    # (X-Forwarded-For) is read from the right: the right-most address that is not a trusted proxy.
    "CLIENT_IP_HEADER": "X-Real-IP",
    # The CA file the proxy verifies client certificates against (nginx ssl_client_certificate, HAProxy
    # ca-file, Apache SSLCACertificateFile, Caddy trusted_ca_cert_file), as a path this process can read.
    # Set, `certauth doctor`, the system check certauth.W019 and the admin compare it with the enabled trusted
    # authorities: a CA trusted here but missing there is refused by the proxy (untrusted_issuer), a CA there
    # but not enabled here still passes the TLS handshake.  `certauth authority bundle --output PATH` writes
    # it from the registry.  None: not checked.
    "PROXY_CA_BUNDLE": None,
    # --- policy -----------------------------------------------------------------------------------
    # chained | self_signed | all.  None: "chained" unless DEBUG is on, then "all".
    "ALLOWED_CERTIFICATE_TYPES": None,
    "VALIDATE_VALIDITY_PERIOD": True,
    "VALIDATE_CERTIFICATE_USE": True,
    # registry | crl | ocsp | crl+ocsp (both checked, each must answer; a revocation in either refuses).
    "REVOCATION_MODE": "registry",
    # With a CRL or OCSP mode: a missing or stale CRL (crl_unavailable), or an OCSP responder that is down,
    # slow, or answers stale or badly signed (ocsp_unavailable), refuses unless this is True; a fail-open
    # acceptance is still audited (reason crl_unavailable / ocsp_unavailable, detail "Accepted ...").
    "REVOCATION_FAIL_OPEN": False,
    # cryptography's webpki profile demands a subjectAltName on the leaf; many internal CAs issue client
    # certificates with a CN only.  True enforces it (chain_invalid without one).
    "REQUIRE_SUBJECT_ALTERNATIVE_NAME": False,
    # CRL download from TrustedAuthority.crl_url (`certauth crl-refresh`, cron or --loop): timeout per
    # fetch, how often a CRL is re-fetched (also at its nextUpdate), and the largest CRL accepted.
    "CRL_FETCH_TIMEOUT_SECONDS": 5.0,
    "CRL_REFRESH_SECONDS": 3600,
    "CRL_MAX_BYTES": 32 * 1024 * 1024,
    # OCSP (REVOCATION_MODE "ocsp" / "crl+ocsp"), asked on a certificate's first sight in a worker: total
    # deadline per responder call; how long an answer is reused at most (never past its nextUpdate, and
    # the cap for answers without one); allowed clock difference with the responder; how long a failure
    # is remembered before the responder is asked again.
    "OCSP_TIMEOUT_SECONDS": 3.0,
    "OCSP_MAX_AGE_SECONDS": 3600,
    "OCSP_CLOCK_SKEW_SECONDS": 60,
    "OCSP_RETRY_SECONDS": 30,
    # --- registry and caches ----------------------------------------------------------------------
    # How long a worker may serve a registry decision without re-checking the shared generation
    # counter.  0 = checked on every request (strict).  The worker that makes a change sees it at once.
    "REGISTRY_MAX_STALENESS_SECONDS": 1.0,
    # Entries in each per-worker cache (parsed certificates, registry lookups).
    "CACHE_SIZE": 2048,
    # Optional Django cache alias shared by several hosts (e.g. a Redis cache); None = per worker only.
    # It holds the registry generation, so checking it costs no database query (docs/performance.md).
    "SHARED_CACHE_ALIAS": None,
    # last_used_at is written at most this often per certificate entry.
    "LAST_USED_RESOLUTION_SECONDS": 60,
    # --- audit ------------------------------------------------------------------------------------
    "AUDIT_HANDLER": "certauth.audit.DatabaseAuditHandler",
    "AUDIT_WINDOW_SECONDS": 300,
    "AUDIT_RETENTION_DAYS": 90,
    # Keep the refused certificate itself (public data) so an operator can register it from the log: only
    # for unknown_certificate (trusted and valid, not registered), the one refusal an operator can act on.
    "AUDIT_CAPTURE_CERTIFICATE": True,
    # Distinct unknown certificates per client address and audit window that get a row (and PEM) of their
    # own; further ones from that address share one row without PEM, so a flood of self-made certificates
    # costs O(1) rows.  Refusals before the registry step always aggregate per (reason, address, window).
    "AUDIT_CAPTURE_PER_ADDRESS": 20,
    # "A client address" above, for IPv6: the network of this many leading bits (one client holds a whole
    # /64 and rotates through it for free).  IPv4 addresses count one by one.
    "AUDIT_IPV6_PREFIX": 64,
    # Alert (warning log line on "certauth.alerts" + mail_admins) when one thumbprint or one client IP is
    # refused more than this many times within AUDIT_ALERT_WINDOW_SECONDS; at most once per window.
    # None = off.  Counters live in the cache AUDIT_ALERT_CACHE_ALIAS: share it (Redis) between workers.
    "AUDIT_ALERT_THRESHOLD": None,
    "AUDIT_ALERT_WINDOW_SECONDS": 300,
    "AUDIT_ALERT_CACHE_ALIAS": "default",
    # --- operator experience ----------------------------------------------------------------------
    "EXPIRY_WARNING_DAYS": 30,
    "WWW_AUTHENTICATE_REALM": "api",
    # --- metrics (docs/metrics.md) --------------------------------------------------------------------
    # Prometheus counters and a histogram on every decision, and the scrape URL /-/certauth/metrics (404 while
    # off).  Needs prometheus-client (pip install 'django-certauth[metrics]'; certauth.W021 without it).
    "METRICS_ENABLED": False,
    # Who may scrape: "loopback" (a client on this host talking to Django directly, never through the proxy)
    # or "scope" (a client certificate whose identity holds METRICS_SCOPE, through the proxy).  Anything else
    # refuses every scrape (certauth.W021).
    "METRICS_ALLOW": "loopback",
    "METRICS_SCOPE": "metrics:read",
}

IMPORT_STRINGS = {"AUDIT_HANDLER"}


class CertauthSettings:
    """Attribute access to ``CERTAUTH`` with defaults: ``settings.TRUSTED_PROXIES``.  A value, once read, is
    kept as a plain instance attribute (later reads cost an attribute lookup, no ``__getattr__`` call) until
    ``reload()`` drops them all."""

    def __init__(self) -> None:
        #: Bumped on every reload, so derived objects (allow-lists, caches) know to rebuild.
        self.generation = 0

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(django_settings, "CERTAUTH", {}) or {}

    def __getattr__(self, name: str) -> Any:
        # Only reached for a name not read since the last reload (or not a setting at all).
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Invalid certauth setting: {name!r}")
        value = self.user_settings.get(name, DEFAULTS[name])
        if name == "ALLOWED_CERTIFICATE_TYPES" and value is None:
            value = "all" if django_settings.DEBUG else "chained"
        if name in IMPORT_STRINGS and isinstance(value, str):
            value = import_string(value)
        self.__dict__[name] = value
        return value

    def reload(self) -> None:
        for name in DEFAULTS:
            self.__dict__.pop(name, None)
        self.generation += 1


settings = CertauthSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in {"CERTAUTH", "DEBUG", "USE_TZ"}:
        settings.reload()
