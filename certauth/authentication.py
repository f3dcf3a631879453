"""DRF authentication by client certificate."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from .authenticator import Outcome, evaluate, record_refusal, refusal_after_authentication, www_authenticate
from .csrf import SAFE_METHODS, is_cross_site
from .reasons import Reason


class CertificateAuthenticationFailed(exceptions.AuthenticationFailed):
    """401 whose body names the reason code: ``{"reason": "...", "detail": "..."}``."""

    def __init__(self, outcome: Outcome) -> None:
        assert outcome.reason is not None
        super().__init__(detail=outcome.body(), code=str(outcome.reason))
        self.reason = outcome.reason


class RegistryUnavailableError(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = str(Reason.REGISTRY_UNAVAILABLE)

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(detail=outcome.body(), code=self.default_code)


class ClientCertificateAuthentication(BaseAuthentication):
    """Authenticates a request by the client certificate the trusted TLS proxy forwarded.

    No certificate: returns None (other authenticators may try; a view that needs authentication
    then answers 401 ``missing_certificate``).  Any other refusal raises a 401 naming the reason.
    On success ``request.user`` is the identity's Django user or a ``CertificatePrincipal`` and
    ``request.auth`` a ``CertificateAuth``.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        outcome = evaluate(request._request)
        if outcome.ok:
            django_request = request._request
            # request.method without DRF's __getattr__ proxy (an AttributeError raised and caught per request);
            # a clone_request() copy carries its own method attribute.
            method = request.__dict__.get("method") or django_request.method or "GET"
            if method not in SAFE_METHODS and is_cross_site(
                method, request.META, django_request.get_host(), django_request.scheme
            ):
                refusal = refusal_after_authentication(
                    outcome, Reason.CROSS_SITE_REQUEST, Reason.CROSS_SITE_REQUEST.message
                )
                record_refusal(request._request, refusal)
                raise exceptions.PermissionDenied(detail=refusal.body(), code=str(Reason.CROSS_SITE_REQUEST))
            return outcome.user, outcome.auth
        if outcome.reason is Reason.MISSING_CERTIFICATE:
            return None
        if outcome.reason is Reason.REGISTRY_UNAVAILABLE:
            raise RegistryUnavailableError(outcome)
        raise CertificateAuthenticationFailed(outcome)

    def authenticate_header(self, request: Request) -> str:
        outcome = evaluate(request._request)
        return www_authenticate(outcome.reason)
