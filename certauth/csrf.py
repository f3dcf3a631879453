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


def is_cross_site(method: str, meta: Mapping[str, Any], host: str) -> bool:
    """True for an unsafe request that a browser sent from another site (see the module docstring)."""
    if method.upper() in SAFE_METHODS:
        return False
    fetch_site = str(meta.get("HTTP_SEC_FETCH_SITE", "")).strip().lower()
    if fetch_site and fetch_site not in {"same-origin", "none"}:
        return True
    origin = str(meta.get("HTTP_ORIGIN", "")).strip()
    if not origin:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != host.lower()
