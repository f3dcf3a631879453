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


def _refuse(request: HttpRequest, outcome: Outcome, reason: Reason, detail: str) -> JsonResponse:
    denied = refusal_after_authentication(outcome, reason, detail)
    record_refusal(request, denied)
    return refusal_response(denied)


def certificate_required(view: Callable[..., Any] | None = None, *, scopes: Iterable[str] = ()) -> Any:
    """Refuse (JSON 401, or 403 ``insufficient_scope``) unless the request authenticated by client
    certificate and its identity holds every scope in ``scopes``.  Sets ``request.certificate_auth``.
    Works on sync and async views (``async def``): an async view is decided with ``aevaluate`` and its
    refusals are audited from a thread, never from the event loop."""
    required = sorted(scopes)

    def check(request: HttpRequest, outcome: Outcome) -> tuple[Outcome, Reason, str] | None:
        """The refusal after authentication (cross-site, scope) as ``(outcome, reason, detail)``, else None."""
        assert outcome.auth is not None
        method = request.method or "GET"
        if method not in SAFE_METHODS and is_cross_site(method, request.META, request.get_host(), request.scheme):
            return outcome, Reason.CROSS_SITE_REQUEST, Reason.CROSS_SITE_REQUEST.message
        missing = [scope for scope in required if not outcome.auth.has_scope(scope)]
        if missing:
            return outcome, Reason.INSUFFICIENT_SCOPE, f"Missing scope: {', '.join(missing)}."
        return None

    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        if iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                outcome = await aevaluate(request)
                if not outcome.ok:
                    await arecord_refusal(request, outcome)
                    return refusal_response(outcome)
                refused = check(request, outcome)
                if refused is not None:
                    denied = refusal_after_authentication(*refused)
                    await arecord_refusal(request, denied)
                    return refusal_response(denied)
                request.certificate_auth = outcome.auth  # type: ignore[attr-defined]
                return await function(request, *args, **kwargs)  # type: ignore[no-any-return]

            return async_wrapper

        @functools.wraps(function)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            outcome = evaluate(request)
            if not outcome.ok:
                record_refusal(request, outcome)
                return refusal_response(outcome)
            refused = check(request, outcome)
            if refused is not None:
                return _refuse(request, *refused)
            request.certificate_auth = outcome.auth  # type: ignore[attr-defined]
            return function(request, *args, **kwargs)  # type: ignore[no-any-return]

        return wrapper

    return decorator(view) if view is not None else decorator
