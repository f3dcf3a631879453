"""DRF exception handler: gives every authentication and scope refusal certauth's JSON body and
records the refusals that are only known once the view denies (no certificate, missing scope).

Set ``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "certauth.drf.exception_handler"`` (system check
``certauth.W004`` reminds you)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .authenticator import Outcome, evaluate, record_refusal, refusal_after_authentication
from .permissions import MISSING_SCOPES_ATTRIBUTE
from .reasons import Reason


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    request = context.get("request")
    if response is None or request is None:
        return response
    django_request = getattr(request, "_request", request)
    if isinstance(exc, exceptions.NotAuthenticated):
        outcome = evaluate(django_request)
        if outcome.reason is Reason.MISSING_CERTIFICATE:
            record_refusal(django_request, outcome)
            response.data = outcome.body()
    elif isinstance(exc, exceptions.PermissionDenied):
        scope_failure = getattr(django_request, MISSING_SCOPES_ATTRIBUTE, None)
        outcome = evaluate(django_request)
        if scope_failure is not None and outcome.ok and response.status_code == 403:
            response.data = scope_failure
            _record_scope_refusal(django_request, outcome, scope_failure["detail"])
    return response


def _record_scope_refusal(request: Any, outcome: Outcome, detail: str) -> None:
    record_refusal(request, refusal_after_authentication(outcome, Reason.INSUFFICIENT_SCOPE, detail))
