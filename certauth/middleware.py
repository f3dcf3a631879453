"""Certificate authentication for plain Django views (stateless: nothing is stored in the session), under
WSGI and ASGI alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from .authenticator import aevaluate, evaluate
from .reasons import Reason


class ClientCertificateMiddleware:
    """Place after ``AuthenticationMiddleware``.  When the session has no authenticated user and the
    request carries a valid client certificate, ``request.user`` becomes the identity's user (or a
    ``CertificatePrincipal``) and ``request.certificate_auth`` its ``CertificateAuth``.  Views that
    *require* a certificate use ``certauth.decorators.certificate_required``, which answers refusals with
    JSON 401/403.

    Sync (WSGI, or a sync chain under ASGI): evaluated lazily, requests that never look at the user pay
    nothing.  Async (an async chain under ASGI, no thread for the middleware itself): a lazy object cannot
    await, so a request that carries a certificate is evaluated once up front (``aevaluate``: on the event
    loop when the answer is remembered, else in one thread hop) and ``request.user``, ``await
    request.auser()`` and ``request.certificate_auth`` are set from it; the session user, read with Django's
    ``auser()``, still comes first.  A request without a certificate keeps Django's ``user``/``auser`` as
    ``AuthenticationMiddleware`` set them."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
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

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        # Audited under the request line the client sent (the proxy's headers, from a trusted proxy only), as
        # certauth.views.refused would: this evaluation comes first, and a request is audited once.  That line is
        # worked out in the thread that writes the audit row, not on the loop for every request.
        outcome = await aevaluate(request, as_sent=True)  # no certificate, or remembered: answered at once
        if outcome.reason is Reason.MISSING_CERTIFICATE:
            request.certificate_auth = None  # type: ignore[attr-defined]
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        session_auser: Callable[[], Awaitable[Any]] | None = getattr(request, "auser", None)
        session_user = await session_auser() if session_auser is not None else None
        if session_user is not None and session_user.is_authenticated:
            user = session_user
        elif outcome.ok:
            user = outcome.user
        else:
            user = session_user if session_user is not None else _anonymous()

        async def auser() -> Any:
            return user

        request.user = user
        request.auser = auser  # type: ignore[attr-defined]
        request.certificate_auth = outcome.auth if outcome.ok else None  # type: ignore[attr-defined]
        return await self.get_response(request)  # type: ignore[no-any-return,misc]


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()
