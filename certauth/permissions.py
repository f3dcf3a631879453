"""DRF permissions for certificate-authenticated requests.  Compose with ``&``, ``|`` and ``~``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .principal import CertificateAuth
from .reasons import Reason

MISSING_SCOPES_ATTRIBUTE = "_certauth_missing_scopes"


class IsCertificateAuthenticated(BasePermission):
    """Allows requests authenticated by a client certificate, and only those."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, CertificateAuth)


def required_scopes_for(view: Any, method: str) -> list[str] | None:
    """The view's ``required_scopes``: a list (every method) or a mapping of method -> list, with
    ``"*"`` as the fallback.  None when the view declares nothing for this method."""
    declared = getattr(view, "required_scopes", None)
    if declared is None:
        return None
    if isinstance(declared, Mapping):
        scopes = declared.get(method.upper(), declared.get("*"))
        return None if scopes is None else list(scopes)
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, Iterable):
        return list(declared)
    return None


class HasCertificateScope(BasePermission):
    """Allows a certificate-authenticated request whose identity holds every scope in the view's
    ``required_scopes`` (see ``required_scopes_for``).  A view that declares no scopes for the method is
    refused: deny unless proven.  Refusals answer 403 ``insufficient_scope`` naming the missing scopes."""

    code = str(Reason.INSUFFICIENT_SCOPE)

    def has_permission(self, request: Request, view: Any) -> bool:
        auth = request.auth
        if not isinstance(auth, CertificateAuth):
            return False
        required = required_scopes_for(view, request.method or "GET")
        if required is None:
            self._deny(request, [], "This endpoint declares no required_scopes for this method.")
            return False
        missing = sorted(scope for scope in required if not auth.has_scope(scope))
        if missing:
            self._deny(request, missing, f"Missing scope: {', '.join(missing)}.", required)
            return False
        return True

    def _deny(self, request: Request, missing: list[str], detail: str, required: list[str] | None = None) -> None:
        self.message = {
            "reason": str(Reason.INSUFFICIENT_SCOPE),
            "detail": detail,
            "missing_scopes": missing,
            "required_scopes": sorted(required or []),
        }
        setattr(request._request, MISSING_SCOPES_ATTRIBUTE, self.message)
