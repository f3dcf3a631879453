"""``certificate_required`` for plain Django views."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from .authenticator import Outcome, evaluate, record_refusal, www_authenticate
from .reasons import Reason


def refusal_response(outcome: Outcome) -> JsonResponse:
    assert outcome.reason is not None
    response = JsonResponse(outcome.body(), status=outcome.reason.status_code)
    if outcome.reason.status_code == 401:
        response["WWW-Authenticate"] = www_authenticate(outcome.reason)
    return response


def certificate_required(view: Callable[..., HttpResponse] | None = None, *, scopes: Iterable[str] = ()) -> Any:
    """Refuse (JSON 401, or 403 ``insufficient_scope``) unless the request authenticated by client
    certificate and its identity holds every scope in ``scopes``.  Sets ``request.certificate_auth``."""
    required = sorted(scopes)

    def decorator(function: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(function)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            outcome = evaluate(request)
            if not outcome.ok:
                record_refusal(request, outcome)
                return refusal_response(outcome)
            assert outcome.auth is not None
            missing = [scope for scope in required if not outcome.auth.has_scope(scope)]
            if missing:
                denied = Outcome(
                    Reason.INSUFFICIENT_SCOPE,
                    f"Missing scope: {', '.join(missing)}.",
                    certificate=outcome.certificate,
                    identity_id=outcome.identity_id,
                    identity_name=outcome.identity_name,
                    client_ip=outcome.client_ip,
                    proxy_ip=outcome.proxy_ip,
                )
                record_refusal(request, denied)
                response = refusal_response(denied)
                return response
            request.certificate_auth = outcome.auth  # type: ignore[attr-defined]
            return function(request, *args, **kwargs)

        return wrapper

    return decorator(view) if view is not None else decorator
