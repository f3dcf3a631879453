"""``certificate_required`` for plain Django views, sync and async."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from .authenticator import (
    Outcome,
    aevaluate,
    arecord_refusal,
    evaluate,
    record_refusal,
    refusal_after_authentication,
    www_authenticate,
)
from .csrf import SAFE_METHODS, is_cross_site
from .reasons import Reason


def refusal_response(outcome: Outcome) -> JsonResponse:
    assert outcome.reason is not None
    response = JsonResponse(outcome.body(), status=outcome.reason.status_code)
    if outcome.reason.status_code == 401:
        response["WWW-Authenticate"] = www_authenticate(outcome.reason)
    return response


def authorization_refusal(request: HttpRequest, outcome: Outcome, required: Iterable[str]) -> Outcome | None:
    """For an accepted certificate: the refusal owed by the request (a cross-site unsafe method:
    ``cross_site_request``; a missing scope: ``insufficient_scope``), not yet recorded; None when allowed."""
    assert outcome.auth is not None
    method = request.method or "GET"
    if method not in SAFE_METHODS and is_cross_site(method, request.META, request.get_host(), request.scheme):
        return refusal_after_authentication(outcome, Reason.CROSS_SITE_REQUEST, Reason.CROSS_SITE_REQUEST.message)
    missing = [scope for scope in required if not outcome.auth.has_scope(scope)]
    if missing:
        return refusal_after_authentication(outcome, Reason.INSUFFICIENT_SCOPE, f"Missing scope: {', '.join(missing)}.")
    return None


def scope_list(scopes: Iterable[str]) -> list[str]:
    """``scopes`` as a list; a single string is one scope (as DRF's ``required_scopes``), not its letters."""
    return [scopes] if isinstance(scopes, str) else sorted(scopes)


def certificate_required(view: Callable[..., Any] | None = None, *, scopes: Iterable[str] = ()) -> Any:
    """Refuse (JSON 401, or 403 ``insufficient_scope``) unless the request authenticated by client
    certificate and its identity holds every scope in ``scopes``.  Sets ``request.certificate_auth``.
    Works on sync and async views (``async def``): an async view is decided with ``aevaluate`` and its
    refusals are audited from a thread, never from the event loop."""
    required = scope_list(scopes)

    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        if iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                outcome = await aevaluate(request)
                refusal = authorization_refusal(request, outcome, required) if outcome.ok else outcome
                if refusal is not None:
                    await arecord_refusal(request, refusal)
                    return refusal_response(refusal)
                request.certificate_auth = outcome.auth  # type: ignore[attr-defined]
                return await function(request, *args, **kwargs)  # type: ignore[no-any-return]

            return async_wrapper

        @functools.wraps(function)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            outcome = evaluate(request)
            refusal = authorization_refusal(request, outcome, required) if outcome.ok else outcome
            if refusal is not None:
                record_refusal(request, refusal)
                return refusal_response(refusal)
            request.certificate_auth = outcome.auth  # type: ignore[attr-defined]
            return function(request, *args, **kwargs)  # type: ignore[no-any-return]

        return wrapper

    return decorator(view) if view is not None else decorator
