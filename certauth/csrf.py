"""Cross-site request refusal for certificate-authenticated requests.

A browser that holds a client certificate presents it automatically, so a page on another site could
make the browser POST to the API with the certificate's identity (DRF views are CSRF-exempt).  Machine
clients send neither ``Origin`` nor ``Sec-Fetch-Site``; browsers send at least one of them on every
cross-origin unsafe request.  So an unsafe request that a browser marks as cross-site, or whose
``Origin`` is not this host, is refused (``cross_site_request``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = -1  # unparsable: never equal to a real origin
    return scheme.lower(), (parts.hostname or "").lower(), port if port is not None else DEFAULT_PORTS.get(scheme)


def is_cross_site(method: str, meta: Mapping[str, Any], host: str, scheme: str | None = "https") -> bool:
    """True for an unsafe request that a browser sent from another site (see the module docstring).
    ``host`` and ``scheme`` are the request's own (``request.get_host()``, ``request.scheme``)."""
    if method.upper() in SAFE_METHODS:
        return False
    fetch_site = str(meta.get("HTTP_SEC_FETCH_SITE", "")).strip().lower()
    if fetch_site in {"same-origin", "none"}:
        return False  # the browser itself vouches for the origin
    if fetch_site:
        return True  # same-site or cross-site: another origin
    origin = str(meta.get("HTTP_ORIGIN", "")).strip()
    if not origin:
        return False
    if origin == "null":
        return True
    parts = urlsplit(origin)
    return _origin_tuple(parts.scheme, parts.netloc) != _origin_tuple(scheme or "https", host)
