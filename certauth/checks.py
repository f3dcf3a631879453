"""System checks with stable ids: misconfigurations an operator must hear about at start-up."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register

from .conf import settings
from .forwarding import PARSERS
from .proxies import ProxyAllowList

#: Dialects whose proxies forward no verdict header (certauth's own trust policy must do the checking).
NO_VERDICT_FORMATS = frozenset({"envoy_xfcc", "envoy", "xfcc", "traefik", "aws_alb", "alb", "iis", "arr", "rfc9440"})


@register(Tags.security)
def check_certauth_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = []
    try:
        proxies = ProxyAllowList(settings.TRUSTED_PROXIES)
    except ValueError as exc:
        return [Error(f"CERTAUTH['TRUSTED_PROXIES'] has an invalid entry: {exc}", id="certauth.E001")]
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
    if settings.REVOCATION_MODE not in {"registry", "crl"}:
        messages.append(Error("CERTAUTH['REVOCATION_MODE'] must be registry or crl.", id="certauth.E005"))
    if settings.REGISTRY_MAX_STALENESS_SECONDS < 0:
        messages.append(Error("CERTAUTH['REGISTRY_MAX_STALENESS_SECONDS'] must be >= 0.", id="certauth.E006"))
    return messages
