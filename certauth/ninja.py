"""Client-certificate authentication for Django Ninja (``pip install django-ninja``), sync and async.

    from ninja import NinjaAPI
    from certauth.ninja import ClientCertificate, install

    api = NinjaAPI(auth=ClientCertificate())           # or per operation: auth=ClientCertificate(scopes=[...])
    install(api)                                       # certauth's JSON refusals: {"reason", "detail"}, 401/403/503

One object serves sync and async operations: Ninja awaits it on an ``async def`` operation (decided with
``aevaluate``: a remembered certificate on the event loop, anything that reads or writes in one thread hop)
and calls it directly on a sync one (``evaluate``).  On success ``request.auth`` (and
``request.certificate_auth``) is the ``CertificateAuth``.  Every refusal, a missing certificate included, is
audited and raised as ``CertificateRefusal`` (a Ninja ``HttpError`` with the reason's status): without
``install`` Ninja answers ``{"detail": ...}``, with it certauth's body and ``WWW-Authenticate``.  Because it
raises, list it last when combining it with other ``auth=`` callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja.errors import HttpError

from .authenticator import Outcome, aevaluate, arecord_refusal, evaluate, record_refusal
from .decorators import authorization_refusal, refusal_response, scope_list
from .principal import CertificateAuth


class CertificateRefusal(HttpError):
    """A refusal, already audited; ``outcome`` carries the reason code and detail."""

    def __init__(self, outcome: Outcome) -> None:
        assert outcome.reason is not None
        super().__init__(outcome.reason.status_code, outcome.detail or outcome.reason.message)
        self.outcome = outcome


class ClientCertificate:
    """Ninja ``auth=``: the request's certificate, optionally with every scope in ``scopes``."""

    #: Ninja then calls it on async operations and awaits what it returns; on sync ones it takes the value.
    is_async = True

    def __init__(self, scopes: Iterable[str] = ()) -> None:
        self.scopes = scope_list(scopes)

    def __call__(self, request: HttpRequest) -> CertificateAuth | Coroutine[Any, Any, CertificateAuth]:
        if _on_event_loop():
            return self._acall(request)
        outcome = evaluate(request)  # a sync operation (WSGI, or Ninja's thread under ASGI)
        refusal = self._refusal(request, outcome)
        if refusal is not None:
            record_refusal(request, refusal)
            raise CertificateRefusal(refusal)
        return self._accept(request, outcome)

    async def _acall(self, request: HttpRequest) -> CertificateAuth:
        outcome = await aevaluate(request)
        refusal = self._refusal(request, outcome)
        if refusal is not None:
            await arecord_refusal(request, refusal)
            raise CertificateRefusal(refusal)
        return self._accept(request, outcome)

    def _refusal(self, request: HttpRequest, outcome: Outcome) -> Outcome | None:
        return authorization_refusal(request, outcome, self.scopes) if outcome.ok else outcome

    @staticmethod
    def _accept(request: HttpRequest, outcome: Outcome) -> CertificateAuth:
        assert outcome.auth is not None
        request.certificate_auth = outcome.auth  # type: ignore[attr-defined]
        return outcome.auth


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def refusal_handler(request: HttpRequest, exc: CertificateRefusal) -> HttpResponse:
    return refusal_response(exc.outcome)


def install(api: Any) -> None:
    """Answer ``CertificateRefusal`` with certauth's JSON body (reason code, detail, ``WWW-Authenticate``)."""
    api.add_exception_handler(CertificateRefusal, refusal_handler)
