"""System checks with stable ids: misconfigurations an operator must hear about at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register

from .conf import DEFAULTS, settings
from .forwarding import PARSERS
from .proxies import ProxyAllowList
from .trust import REVOCATION_MODES

#: Dialects whose proxies forward no verdict header (certauth's own trust policy must do the checking).
NO_VERDICT_FORMATS = frozenset({"envoy_xfcc", "envoy", "xfcc", "traefik", "aws_alb", "alb", "iis", "arr", "rfc9440"})


@register(Tags.security)
def check_certauth_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = []
    unknown = sorted(set(settings.user_settings) - set(DEFAULTS))
    if unknown:
        # A misspelt key (e.g. TRUSTED_PROXY) would otherwise be ignored in favour of the default.
        messages.append(
            Error(
                f"CERTAUTH has unknown setting(s): {', '.join(unknown)}.",
                hint="See certauth/conf.py (DEFAULTS) or the README's settings table for the valid names.",
                id="certauth.E008",
            )
        )
    if not django_settings.USE_TZ:
        # Certificates carry aware instants (UTC); with naive ones the decision cannot compare them (every
        # certificate request would be a 500) and the stored last-used and audit times would lose their zone.
        messages.append(
            Error(
                "certauth needs USE_TZ = True: certificate validity, CRL and OCSP times are instants in UTC.",
                hint="Set USE_TZ = True (Django's default since 5.0); see Django's time zones documentation "
                "for migrating stored naive datetimes.",
                id="certauth.E014",
            )
        )
    try:
        proxies = ProxyAllowList(settings.TRUSTED_PROXIES)
    except ValueError as exc:
        return [*messages, Error(f"CERTAUTH['TRUSTED_PROXIES'] has an invalid entry: {exc}", id="certauth.E001")]
    if not proxies:
        messages.append(
            Warning(
                "CERTAUTH['TRUSTED_PROXIES'] is empty: every forwarded certificate is refused (untrusted_proxy).",
                hint="List the addresses of your TLS-terminating proxies, e.g. ['127.0.0.1'].",
                id="certauth.W001",
            )
        )
    elif django_settings.DEBUG and not proxies.loopback_only:
        messages.append(
            Warning(
                "CERTAUTH['TRUSTED_PROXIES'] trusts non-loopback addresses while DEBUG is on.",
                hint="Anyone at those addresses can forge a client certificate header.",
                id="certauth.W002",
            )
        )
    for name in ("CERTIFICATE_HEADER", "VERIFY_HEADER", "CLIENT_IP_HEADER", "CHAIN_HEADER"):
        value = getattr(settings, name)
        if value and (value.upper().startswith("HTTP_") or "_" in value):
            messages.append(
                Error(
                    f"CERTAUTH['{name}'] = {value!r} looks like a META key; give the header as sent, "
                    "e.g. 'X-SSL-Client-Cert'.",
                    hint="Header names with underscores are dropped by nginx and gunicorn and can be aliased.",
                    id="certauth.E002",
                )
            )
    if settings.FORWARDING_FORMAT not in PARSERS:
        messages.append(
            Error(
                f"CERTAUTH['FORWARDING_FORMAT'] = {settings.FORWARDING_FORMAT!r} is unknown.",
                hint=f"One of: {', '.join(sorted(PARSERS))}.",
                id="certauth.E003",
            )
        )
    elif settings.FORWARDING_FORMAT in NO_VERDICT_FORMATS and settings.PROXY_VERIFIES_CERTIFICATE:
        messages.append(
            Warning(
                f"CERTAUTH['FORWARDING_FORMAT'] = {settings.FORWARDING_FORMAT!r} comes from a proxy that sends no "
                "verification verdict, but PROXY_VERIFIES_CERTIFICATE is True.",
                hint="Every request would be refused with proxy_verification_failed: set "
                "PROXY_VERIFIES_CERTIFICATE = False and register your CA as a trusted authority.",
                id="certauth.W005",
            )
        )
    allowed_types = settings.ALLOWED_CERTIFICATE_TYPES
    if allowed_types not in {"chained", "self_signed", "all"}:
        messages.append(
            Error("CERTAUTH['ALLOWED_CERTIFICATE_TYPES'] must be chained, self_signed or all.", id="certauth.E004")
        )
    elif allowed_types == "all" and not django_settings.DEBUG:
        messages.append(
            Warning(
                "CERTAUTH['ALLOWED_CERTIFICATE_TYPES'] is 'all' with DEBUG off.",
                hint="Accept only certificates chained to your internal CA in production ('chained').",
                id="certauth.W003",
            )
        )
    rest = getattr(django_settings, "REST_FRAMEWORK", {})
    if (
        "rest_framework" in django_settings.INSTALLED_APPS
        and rest.get("EXCEPTION_HANDLER") != "certauth.drf.exception_handler"
    ):
        messages.append(
            Warning(
                "REST_FRAMEWORK['EXCEPTION_HANDLER'] is not certauth.drf.exception_handler.",
                hint="Without it, 401 for a missing certificate and 403 for a missing scope carry no reason "
                "code and are not audited.",
                id="certauth.W004",
            )
        )
    if settings.REVOCATION_MODE not in REVOCATION_MODES:
        messages.append(
            Error("CERTAUTH['REVOCATION_MODE'] must be registry, crl, ocsp or crl+ocsp.", id="certauth.E005")
        )
    for name in ("CRL_FETCH_TIMEOUT_SECONDS", "CRL_REFRESH_SECONDS", "OCSP_TIMEOUT_SECONDS", "OCSP_MAX_AGE_SECONDS"):
        if not getattr(settings, name) > 0:
            messages.append(Error(f"CERTAUTH['{name}'] must be a positive number of seconds.", id="certauth.E007"))
    if settings.REGISTRY_MAX_STALENESS_SECONDS < 0:
        messages.append(Error("CERTAUTH['REGISTRY_MAX_STALENESS_SECONDS'] must be >= 0.", id="certauth.E006"))
    return messages


#: Cache backends that keep their data inside one process: every gunicorn worker has its own copy.
PER_PROCESS_CACHES = frozenset(
    {"django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache"}
)
#: A staleness bound above this makes a revocation wait longer than operators expect (minutes, not seconds).
MAX_REASONABLE_STALENESS_SECONDS = 60


def _cache_aliases_in_use() -> list[tuple[str, str]]:
    """(setting name, alias) of the caches certauth shares between workers."""
    aliases = []
    if settings.SHARED_CACHE_ALIAS:
        aliases.append(("SHARED_CACHE_ALIAS", settings.SHARED_CACHE_ALIAS))
    if settings.AUDIT_ALERT_THRESHOLD is not None:
        aliases.append(("AUDIT_ALERT_CACHE_ALIAS", settings.AUDIT_ALERT_CACHE_ALIAS))
    return aliases


def _backend_is_supported(backend: str) -> bool:
    """Whether certauth can read its shared integers from this cache backend without unpickling."""
    from django.utils.module_loading import import_string

    from .sharedcache import is_supported

    try:
        return is_supported(import_string(backend))
    except (ImportError, TypeError):
        return False


@register(Tags.security, Tags.caches)
def check_certauth_deployment(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Deployment hazards: per-process caches where certauth needs a shared one, proxies trusted for every
    address, revocation or validity checks switched off in production, an audit handler that cannot load."""
    messages: list[Any] = []
    caches = getattr(django_settings, "CACHES", {}) or {}
    for setting, alias in _cache_aliases_in_use():
        if alias not in caches:
            messages.append(
                Error(
                    f"CERTAUTH['{setting}'] = {alias!r} is not a configured cache alias.",
                    hint=f"Add CACHES[{alias!r}] (e.g. a Redis cache) or change the setting.",
                    id="certauth.E009",
                )
            )
        elif not _backend_is_supported(caches[alias].get("BACKEND", "")):
            messages.append(
                Error(
                    f"CERTAUTH['{setting}'] = {alias!r} uses {caches[alias].get('BACKEND')}, which certauth cannot "
                    "read as plain integers (most backends unpickle what they read: whoever can write to the cache "
                    "could run code in every worker).",
                    hint="certauth keeps only integers in shared caches and reads them raw from "
                    "django.core.cache.backends.redis.RedisCache (or a per-process LocMemCache).",
                    id="certauth.E011",
                )
            )
        elif caches[alias].get("BACKEND") in PER_PROCESS_CACHES:
            messages.append(
                Warning(
                    f"CERTAUTH['{setting}'] = {alias!r} is a per-process cache ({caches[alias]['BACKEND']}): "
                    "each worker and host keeps its own counters and entries.",
                    hint="Point it at a cache all workers share (Redis), or leave "
                    "SHARED_CACHE_ALIAS unset and AUDIT_ALERT_THRESHOLD None.",
                    id="certauth.W006",
                )
            )
    try:
        networks = ProxyAllowList(settings.TRUSTED_PROXIES).networks
    except ValueError:
        networks = ()  # certauth.E001 reports it
    everyone = [str(net) for net in networks if net.prefixlen == 0]
    if everyone:
        messages.append(
            Warning(
                f"CERTAUTH['TRUSTED_PROXIES'] contains {', '.join(everyone)}: every address may forward a client "
                "certificate header.",
                hint="Anyone who can reach Django directly can then claim any certificate. List only your proxies.",
                id="certauth.W007",
            )
        )
    messages += _proxy_secret_messages()
    if not django_settings.DEBUG:
        if settings.REVOCATION_MODE != "registry" and settings.REVOCATION_FAIL_OPEN:
            messages.append(
                Warning(
                    "CERTAUTH['REVOCATION_FAIL_OPEN'] is True with DEBUG off: a missing or stale CRL, or an OCSP "
                    "responder that is down, accepts certificates that may be revoked.",
                    hint="Keep CRLs fresh with `certauth crl-refresh`, OCSP responders reachable, and leave "
                    "REVOCATION_FAIL_OPEN False.",
                    id="certauth.W008",
                )
            )
        checks = ("VALIDATE_VALIDITY_PERIOD", "VALIDATE_CERTIFICATE_USE")
        disabled = [name for name in checks if not getattr(settings, name)]
        if disabled:
            messages.append(
                Warning(
                    f"CERTAUTH {' and '.join(disabled)} off with DEBUG off: expired or not-yet-valid certificates, or "
                    "certificates not meant for client authentication, are accepted.",
                    hint="Leave VALIDATE_VALIDITY_PERIOD and VALIDATE_CERTIFICATE_USE on in production.",
                    id="certauth.W009",
                )
            )
    staleness = settings.REGISTRY_MAX_STALENESS_SECONDS
    if isinstance(staleness, int | float) and staleness > MAX_REASONABLE_STALENESS_SECONDS:
        messages.append(
            Warning(
                f"CERTAUTH['REGISTRY_MAX_STALENESS_SECONDS'] = {staleness}: a revocation can take that long to "
                "reach every worker.",
                hint=f"Keep it at most {MAX_REASONABLE_STALENESS_SECONDS} s (the default is 1 s; 0 = every request).",
                id="certauth.W010",
            )
        )
    try:
        handler = settings.AUDIT_HANDLER
    except ImportError as exc:
        messages.append(
            Error(
                f"CERTAUTH['AUDIT_HANDLER'] cannot be imported: {exc}",
                hint="Name a certauth.audit.AuditHandler subclass, e.g. 'certauth.audit.DatabaseAuditHandler'.",
                id="certauth.E010",
            )
        )
    else:
        if not (isinstance(handler, type) and callable(getattr(handler, "record", None))):
            messages.append(
                Error(
                    f"CERTAUTH['AUDIT_HANDLER'] = {handler!r} is not an audit handler class (with a record method).",
                    hint="Subclass certauth.audit.AuditHandler.",
                    id="certauth.E010",
                )
            )
    return messages


def _proxy_secret_messages() -> list[Any]:
    """A configured proxy secret certauth cannot use (fail closed) or that others may read.  (Whether one is
    needed at all is ``check --deploy``'s question: ``check_proxy_identity_for_deployment``.)"""
    from .authenticator import load_proxy_secret, proxy_secret_file_warning  # needs the apps: at check time

    _, problem = load_proxy_secret()
    if problem:
        return [
            Error(
                f"CERTAUTH proxy secret unusable: {problem}. Every forwarded certificate is refused (untrusted_proxy).",
                hint="PROXY_SECRET_FILE: a file of at least 16 random characters, owned by the workers' user, "
                "mode 0600, that nginx's config repeats (certauth nginx-config --proxy-secret-file).",
                id="certauth.E012",
            )
        ]
    exposure = proxy_secret_file_warning()
    if exposure:
        return [
            Warning(
                f"CERTAUTH's PROXY_SECRET_FILE {settings.PROXY_SECRET_FILE} {exposure}: whoever can read it can "
                "pass as the proxy.",
                hint="chown it to the workers' user and chmod 600 it; keep it group-readable only if that group "
                "holds the workers' user alone (then silence certauth.W012).",
                id="certauth.W012",
            )
        ]
    return []


@register(Tags.database)
def check_identity_rule_patterns(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """Stored identity-rule patterns the strict pattern language reads differently from the shell globs of
    earlier versions.  Reads the database, so it runs with ``migrate`` and ``check --database default``."""
    if not databases:
        return []
    from django.db import DatabaseError

    from .matching import WILDCARD, PatternError, validate_pattern
    from .models import CertificateIdentity

    messages: list[Any] = []
    for alias in databases:
        try:
            rules = list(
                CertificateIdentity.objects.using(alias)
                .exclude(match_field="")
                .exclude(match_pattern="")
                .values_list("name", "match_field", "match_pattern")
            )
        except DatabaseError:
            continue  # not migrated yet: nothing stored to check
        for name, field, pattern in rules:
            try:
                validate_pattern(field, pattern)
            except PatternError as exc:
                messages.append(
                    Warning(
                        f"The identity rule of {name!r} ({field} {pattern!r}) is not a valid pattern: {exc} "
                        "It admits no certificate until it is corrected.",
                        hint="Edit the identity's rule in the admin; docs/trust.md (Identity rules) gives the "
                        "pattern language.",
                        id="certauth.W013",
                    )
                )
                continue
            if WILDCARD in pattern:
                messages.append(
                    Warning(
                        f"The identity rule of {name!r} ({field} {pattern!r}) uses '*', which no longer crosses "
                        "'.' in a DNS name or host, '/' in a URI path, '@' in an email, or '.', '/', '@' in a CN.",
                        hint="Check it still admits the names you mean (a trailing /** or a leading **. matches "
                        "any depth), then silence this with SILENCED_SYSTEM_CHECKS = ['certauth.W014'].",
                        id="certauth.W014",
                    )
                )
    return messages


@register(Tags.security, deploy=True)
def check_proxy_identity_for_deployment(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``check --deploy``: TCP proxies trusted without a proxy secret.  A deployment warning, like Django's own
    security checks: the reference settings trust loopback for the shell and the tests, and ``make run``
    serves gunicorn on a private unix socket with a secret, so every plain ``manage.py`` command would
    otherwise repeat a warning about a server it does not run."""
    from .authenticator import load_proxy_secret  # needs the apps: at check time

    try:
        networks = ProxyAllowList(settings.TRUSTED_PROXIES).networks
    except ValueError:
        return []  # certauth.E001 reports it
    secret, problem = load_proxy_secret()
    if problem:
        return []  # certauth.E012 reports it
    if not django_settings.DEBUG and secret is None and networks:
        return [
            Warning(
                "CERTAUTH believes forwarded certificates from TCP addresses without a proxy secret: any process "
                "that can connect to the application server from there (another local user, too) can claim any "
                "certificate.",
                hint="Set PROXY_SECRET_FILE (and proxy_set_header it in nginx: certauth nginx-config "
                "--proxy-secret-file), or serve gunicorn on a unix socket only the proxy can open and set "
                "TRUSTED_PROXIES = ['unix:'].",
                id="certauth.W011",
            )
        ]
    return []


#: The distribution name of this app on PyPI; ``certauth`` there is an unrelated project with the same
#: import package (a CA for MITM proxies), which ``pip install certauth`` would lay over this one.
DISTRIBUTION = "django-certauth"


def _foreign_certauth_distributions() -> list[Any]:
    """Installed distributions named ``certauth`` that are not this app.  This app, under any name it was
    installed by (``django-certauth``, or ``certauth`` from a checkout before 0.2.0), requires Django; the
    unrelated ``certauth`` does not."""
    from importlib.metadata import distributions

    foreign = []
    for dist in distributions(name="certauth"):
        requires = [re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0] for line in dist.requires or []]
        if not any(name.lower() == "django" for name in requires):
            foreign.append(dist)
    return foreign


@register(Tags.compatibility)
def check_distribution_clash(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The unrelated ``certauth`` distribution installed next to this app: both write the ``certauth``
    package, so whichever was installed last decides what ``import certauth`` runs."""
    return [
        Error(
            f"The unrelated distribution 'certauth' {dist.version} ({dist.metadata['Summary'] or 'no summary'}) is "
            f"installed: it ships its own 'certauth' package, which replaces or mixes with this app's files "
            f"({DISTRIBUTION}).",
            hint=f"pip uninstall certauth && pip install --force-reinstall {DISTRIBUTION}  "
            "(the uninstall removes the shared files too; the reinstall puts this app's back).",
            id="certauth.E013",
        )
        for dist in _foreign_certauth_distributions()
    ]


#: What uvicorn trusts with proxy headers when neither --forwarded-allow-ips nor $FORWARDED_ALLOW_IPS says.
UVICORN_DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
_CLICK_FALSE = {"0", "false", "f", "no", "n", "off"}


def _is_uvicorn_cli(argv: Sequence[str]) -> bool:
    """Was this process started as uvicorn's command line (``uvicorn ...``, ``python -m uvicorn ...``; its
    ``--workers`` children see the same ``sys.argv``)?"""
    if not argv:
        return False
    program = PurePath(argv[0])
    return program.name == "uvicorn" or (program.name == "__main__.py" and program.parent.name == "uvicorn")


def _last_option(argv: Sequence[str], name: str) -> str | None:
    """The last value of ``--name VALUE`` / ``--name=VALUE`` in ``argv`` (click: the last one wins)."""
    value = None
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith(name + "="):
            value = word[len(name) + 1 :]
    return value


def _all_options(argv: Sequence[str], name: str) -> list[str]:
    """Every value of ``NAME VALUE`` / ``--name=VALUE`` / ``-xVALUE`` (a short option glued to its value)."""
    values = []
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            values.append(argv[index + 1])
        elif name.startswith("--") and word.startswith(name + "="):
            values.append(word[len(name) + 1 :])
        elif not name.startswith("--") and word.startswith(name) and len(word) > len(name):
            values.append(word[len(name) :])
    return values


def _is_gunicorn_with_uvicorn_worker(argv: Sequence[str]) -> bool:
    """gunicorn's command line with uvicorn's worker class (``-k uvicorn.workers.UvicornWorker``, or the
    ``uvicorn-worker`` package's).  A worker class set only in a gunicorn configuration file is not seen."""
    if not argv:
        return False
    program = PurePath(argv[0])
    if not (program.name == "gunicorn" or (program.name == "__main__.py" and program.parent.name == "gunicorn")):
        return False
    classes = _all_options(argv, "-k") + _all_options(argv, "--worker-class")
    return any("uvicorn" in value.lower() for value in classes)


def uvicorn_rewrites_trusted_proxy(
    argv: Sequence[str], environ: Mapping[str, str], trusted: ProxyAllowList
) -> str | None:
    """Will the uvicorn started as ``argv`` (with ``environ``) replace any peer's address with an X-Forwarded-For
    entry?  For a trusted proxy every client is then ``untrusted_proxy``; for any other peer it is worse: that
    peer writes a trusted proxy's address in X-Forwarded-For and is believed as the proxy (any certificate,
    unless the proxy secret is set).  Returns the forwarded-allow-ips value that does it, or None (no: not
    uvicorn's command line, proxy headers off, or no peer address it rewrites).  uvicorn's rules
    (0.30 to 0.55): proxy headers are on unless ``--no-proxy-headers``; they apply to peers in
    ``--forwarded-allow-ips``, else ``$FORWARDED_ALLOW_IPS``, else 127.0.0.1 and ::1 (``*``: every peer);
    a unix-socket peer has no address, so only ``*`` rewrites it.  Options may come from ``UVICORN_*``."""
    if _is_gunicorn_with_uvicorn_worker(argv):
        # uvicorn's worker for gunicorn: proxy headers always on (no flag turns them off), for gunicorn's
        # --forwarded-allow-ips, else $FORWARDED_ALLOW_IPS, else 127.0.0.1 and ::1; unix sockets via --bind unix:.
        allowed = _last_option(argv, "--forwarded-allow-ips")
        if allowed is None:
            allowed = environ.get("FORWARDED_ALLOW_IPS", UVICORN_DEFAULT_FORWARDED_ALLOW_IPS)
        binds = [value for flag in ("-b", "--bind") for value in _all_options(argv, flag)]
        on_unix_socket = bool(binds) and all(value.startswith(("unix:", "fd://")) for value in binds)
    elif _is_uvicorn_cli(argv):
        proxy_headers = (environ.get("UVICORN_PROXY_HEADERS") or "true").strip().lower() not in _CLICK_FALSE
        for word in argv:
            if word in ("--proxy-headers", "--no-proxy-headers"):
                proxy_headers = word == "--proxy-headers"
        if not proxy_headers:
            return None
        allowed = _last_option(argv, "--forwarded-allow-ips")  # "" is a value: trust no peer
        for source in (environ.get("UVICORN_FORWARDED_ALLOW_IPS"), environ.get("FORWARDED_ALLOW_IPS")):
            allowed = source if allowed is None else allowed
        if allowed is None:
            allowed = UVICORN_DEFAULT_FORWARDED_ALLOW_IPS
        on_unix_socket = bool(_last_option(argv, "--uds") or _last_option(argv, "--fd") or environ.get("UVICORN_UDS"))
    else:
        return None
    entries = [entry.strip() for entry in allowed.split(",") if entry.strip()]
    if "*" in entries:
        return allowed if trusted else None
    if on_unix_socket:
        return None  # no peer address there to rewrite, unless "*"
    # Any peer address rewritten is wrong for certauth: a trusted proxy rewritten refuses every certificate, and
    # any other peer in the list names its own address in X-Forwarded-For (a trusted proxy's included) and is
    # believed as that proxy.  A literal (a socket path) never matches a TCP peer.
    return allowed if any(_is_network(entry) for entry in entries) else None


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


@register(Tags.security)
def check_asgi_server_proxy_headers(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``certauth.W015`` in a process started as uvicorn (``CertauthConfig.ready`` logs it there at start-up,
    as no one runs ``manage.py check`` inside the server): its proxy headers would rewrite a peer's address.
    Silent anywhere else, where the server's flags cannot be seen."""
    try:
        trusted = ProxyAllowList(settings.TRUSTED_PROXIES)
    except ValueError:
        return []  # certauth.E001 reports it
    allowed = uvicorn_rewrites_trusted_proxy(sys.argv, os.environ, trusted)
    if allowed is None:
        return []
    return [
        Warning(
            f"uvicorn runs with proxy headers for {allowed}: it puts an X-Forwarded-For address in REMOTE_ADDR. "
            f"For a proxy certauth trusts (TRUSTED_PROXIES {list(settings.TRUSTED_PROXIES)}) every forwarded "
            "certificate is then untrusted_proxy; any other peer in that list can write a trusted proxy's address "
            "there and be believed as the proxy (any certificate, unless PROXY_SECRET is set).",
            hint="Run uvicorn with --no-proxy-headers (certauth checks the real peer and reads the client address "
            "itself; Django's SECURE_PROXY_SSL_HEADER gives the scheme). docs/deployment.md, Running under ASGI.",
            id="certauth.W015",
        )
    ]


@register(Tags.database)
def check_trusted_authorities(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """``certauth.W016``: an enabled trusted authority that ``certauth.trust.lint_authority`` refuses (stored
    before that check existed, or expired since): no chain can be built through it, so every client under it is
    refused.  Reads the database, so it runs with ``migrate`` and ``check --database default``."""
    if not databases:
        return []
    from django.db import DatabaseError
    from django.utils import timezone

    from .models import TrustedAuthority
    from .reasons import CertificateRefused
    from .trust import lint_authority, load_authority_certificate

    messages: list[Any] = []
    now = timezone.now()
    for alias in databases:
        try:
            rows = list(
                TrustedAuthority.objects.using(alias).filter(is_enabled=True).values_list("name", "certificate_pem")
            )
        except DatabaseError:
            continue  # not migrated yet: nothing stored to check
        for name, pem in rows:
            try:
                refusals = [
                    p.text
                    for p in lint_authority(load_authority_certificate(pem.encode()), now)
                    if p.severity == "refuse"
                ]
            except CertificateRefused as refused:
                refusals = [refused.detail]
            if refusals:
                messages.append(
                    Warning(
                        f"The trusted authority {name!r} can anchor no chain: {' '.join(refusals)}",
                        hint="Replace its certificate (admin: Trusted authorities), or disable it to say so.",
                        id="certauth.W016",
                    )
                )
    return messages


@register(Tags.database)
def check_proxy_ca_bundle(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """``certauth.W019``: ``PROXY_CA_BUNDLE`` is set and misses an enabled trusted authority (or cannot be
    read), so the proxy refuses clients the admin says are trusted.  Reads the database, so, like W013, it
    runs with ``migrate`` and ``check --database default`` (never at import or on every management command);
    ``certauth doctor`` reports the other direction too (a CA the proxy trusts but certauth does not)."""
    if not databases or not settings.PROXY_CA_BUNDLE:
        return []
    from django.db import DatabaseError

    from .authorities import enabled_bundle_authorities
    from .proxybundle import BundleReport, compare, describe_report

    messages: list[Any] = []
    for alias in databases:
        try:
            authorities = enabled_bundle_authorities(alias)
        except DatabaseError:
            continue  # not migrated yet: no authority to miss
        report = compare(settings.PROXY_CA_BUNDLE, authorities)
        lacking = BundleReport(report.path, missing=report.missing, unreadable=report.unreadable)
        for line in describe_report(lacking):
            messages.append(
                Warning(
                    f"CERTAUTH['PROXY_CA_BUNDLE']: {line}.",
                    hint="`manage.py certauth doctor` lists every difference; docs/proxies.md, When the proxy's "
                    "CA bundle and certauth's registry disagree.",
                    id="certauth.W019",
                )
            )
    return messages


def gunicorn_workers(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """How many workers the gunicorn started as ``argv`` (with ``environ``) runs: ``-w``/``--workers``, else
    ``$GUNICORN_CMD_ARGS``, else ``$WEB_CONCURRENCY``, else 1.  None when ``argv`` is not gunicorn's command line
    (a count set only in a gunicorn configuration file is not seen)."""
    if not argv:
        return None
    program = PurePath(argv[0])
    if not (program.name == "gunicorn" or (program.name == "__main__.py" and program.parent.name == "gunicorn")):
        return None
    import shlex

    try:
        from_environment = shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))
    except ValueError:
        from_environment = []
    for words in (list(argv), from_environment):
        value = _last_option(words, "--workers")
        short = _all_options(words, "-w")
        value = short[-1] if value is None and short else value
        if value is not None:
            return int(value) if value.strip().isdigit() else None
    concurrency = environ.get("WEB_CONCURRENCY", "").strip()
    return int(concurrency) if concurrency.isdigit() else 1


@register(Tags.security)
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``certauth.W021``: metrics switched on but unusable (prometheus-client missing: the scrape URL answers
    503) or ``METRICS_ALLOW`` / ``METRICS_SCOPE`` that admit no one (every scrape refused: deny by default).
    ``certauth.W022``: several workers without a usable ``PROMETHEUS_MULTIPROC_DIR`` (each scrape would see one
    worker's counts), seen when this process is gunicorn (``CertauthConfig.ready`` logs it there)."""
    if not settings.METRICS_ENABLED:
        return []
    from .metrics import INSTALL_HINT, allow_mode, available

    messages: list[Any] = []
    if not available():
        messages.append(
            Warning(
                "CERTAUTH METRICS_ENABLED is on but prometheus-client is not installed: nothing is counted and "
                "/-/certauth/metrics answers 503.",
                hint=f"{INSTALL_HINT}, or set METRICS_ENABLED False.",
                id="certauth.W021",
            )
        )
    allow, scope = settings.METRICS_ALLOW, settings.METRICS_SCOPE
    if allow_mode() is None:
        messages.append(
            Warning(
                f"CERTAUTH METRICS_ALLOW = {allow!r} with METRICS_SCOPE = {scope!r} admits no scraper: every "
                "request to /-/certauth/metrics is refused.",
                hint="METRICS_ALLOW 'loopback' (scrape from this host, straight to the application server) or "
                "'scope' with METRICS_SCOPE a scope (e.g. 'metrics:read') held by the scraper's identity.",
                id="certauth.W021",
            )
        )
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    workers = gunicorn_workers(sys.argv, os.environ)
    if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        messages.append(
            Warning(
                f"PROMETHEUS_MULTIPROC_DIR={directory!r} is not a directory this user can write to: the workers "
                "cannot record their counts.",
                hint="Create it (empty, owned by the workers' user, mode 0700) before the workers start, and empty "
                "it at each start (docs/metrics.md).",
                id="certauth.W022",
            )
        )
    elif not directory and workers is not None and workers > 1:
        messages.append(
            Warning(
                f"gunicorn runs {workers} workers without PROMETHEUS_MULTIPROC_DIR: each scrape reaches one worker "
                "and sees only its counts.",
                hint="Set PROMETHEUS_MULTIPROC_DIR to an empty directory in the environment gunicorn starts with, "
                "and call prometheus_client.multiprocess.mark_process_dead in gunicorn's child_exit hook "
                "(docs/metrics.md).",
                id="certauth.W022",
            )
        )
    return messages
