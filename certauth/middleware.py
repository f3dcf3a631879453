"""Certificate authentication for plain Django views (stateless: nothing is stored in the session)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from .authenticator import evaluate


class ClientCertificateMiddleware:
    """Place after ``AuthenticationMiddleware``.  When the session has no authenticated user and the
    request carries a valid client certificate, ``request.user`` becomes the identity's user (or a
    ``CertificatePrincipal``) and ``request.certificate_auth`` its ``CertificateAuth``.  Evaluated
    lazily: requests that never look at the user pay nothing.  Views that *require* a certificate use
    ``certauth.decorators.certificate_required``, which answers refusals with JSON 401/403."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session_user = getattr(request, "user", None)

        def resolve_user() -> Any:
            if session_user is not None and session_user.is_authenticated:
                return session_user
            outcome = evaluate(request)
            if outcome.ok:
                return outcome.user
            return session_user if session_user is not None else _anonymous()

        def resolve_auth() -> Any:
            outcome = evaluate(request)
            return outcome.auth if outcome.ok else None

        request.user = SimpleLazyObject(resolve_user)  # type: ignore[assignment]
        request.certificate_auth = SimpleLazyObject(resolve_auth)  # type: ignore[attr-defined]
        return self.get_response(request)


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()
