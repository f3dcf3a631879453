"""OpenAPI (drf-spectacular) support: client-certificate authentication as an OpenAPI 3.1 ``mutualTLS``
security scheme, and certauth's refusals documented on every operation that uses it.

Loaded by ``CertauthConfig.ready()`` when drf-spectacular is installed.  Add the hook to your settings::

    SPECTACULAR_SETTINGS = {
        "OAS_VERSION": "3.1.0",  # mutualTLS exists from OpenAPI 3.1 on
        "POSTPROCESSING_HOOKS": [
            "drf_spectacular.hooks.postprocess_schema_enums",
            "certauth.openapi.add_refusal_responses",
        ],
    }
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.drainage import warn
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.settings import spectacular_settings

from .csrf import SAFE_METHODS
from .permissions import HasCertificateScope, required_scopes_for
from .reasons import Reason

SECURITY_SCHEME_NAME = "clientCertificate"
ERROR_COMPONENT = "CertauthError"
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}

SCHEME_DESCRIPTION = (
    "Mutual TLS: the client presents an X.509 client certificate in the TLS handshake.  The TLS-terminating "
    "proxy forwards it to the application, which maps its SHA-256 thumbprint to a registered identity.  "
    "Refusals answer 401 with a `WWW-Authenticate: ClientCertificate` header and a JSON body naming the "
    "reason code; an authenticated identity lacking a scope gets 403 `insufficient_scope`.  The scopes "
    "listed in an operation's security requirement are the identity scopes it needs."
)


class ClientCertificateScheme(OpenApiAuthenticationExtension):
    """``certauth.authentication.ClientCertificateAuthentication`` as ``{"type": "mutualTLS"}``."""

    target_class = "certauth.authentication.ClientCertificateAuthentication"
    match_subclasses = True
    name = SECURITY_SCHEME_NAME

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        if str(spectacular_settings.OAS_VERSION).startswith("3.0"):
            warn("certauth: the mutualTLS security scheme needs SPECTACULAR_SETTINGS['OAS_VERSION'] = '3.1.0'.")
        return {"type": "mutualTLS", "description": SCHEME_DESCRIPTION}


def reasons_for_status(status_code: int) -> list[str]:
    return [str(reason) for reason in Reason if reason.status_code == status_code]


def error_schema() -> dict[str, Any]:
    """The body of every certauth refusal (``Outcome.body()`` and ``HasCertificateScope``)."""
    string_list = {"type": "array", "items": {"type": "string"}}
    return {
        "type": "object",
        "description": "Why certauth refused the request.",
        "properties": {
            "reason": {
                "type": "string",
                "enum": [str(reason) for reason in Reason],
                "description": "Stable reason code (certauth.reasons.Reason); also in the audit log.",
            },
            "detail": {"type": "string", "description": "Human-readable explanation."},
            "missing_scopes": {**string_list, "description": "insufficient_scope only: scopes the identity lacks."},
            "required_scopes": {**string_list, "description": "insufficient_scope only: scopes the endpoint needs."},
        },
        "required": ["reason", "detail"],
    }


def _refusal(status_code: int, summary: str, extra: str = "", reasons: list[str] | None = None) -> dict[str, Any]:
    reasons = reasons if reasons is not None else reasons_for_status(status_code)
    narrowed = {"allOf": [_ERROR_REF, {"type": "object", "properties": {"reason": {"enum": reasons}}}]}
    description = f"{summary} Reason codes: {', '.join(f'`{r}`' for r in reasons)}.{extra}"
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": narrowed}},
    }
    if status_code == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": 'ClientCertificate realm="...", with error="<reason>" unless no certificate was sent.',
                "schema": {"type": "string"},
            }
        }
    return response


def _uses_scope_permission(permission: Any, depth: int = 0) -> bool:
    """Whether ``HasCertificateScope`` is anywhere in a (possibly ``&``/``|``/``~`` composed) permission."""
    if isinstance(permission, HasCertificateScope):
        return True
    if depth > 20:
        return False
    return any(
        _uses_scope_permission(getattr(permission, operand), depth + 1)
        for operand in ("op1", "op2")
        if getattr(permission, operand, None) is not None
    )


def _views_by_operation(generator: Any) -> dict[tuple[str, str], Any]:
    views: dict[tuple[str, str], Any] = {}
    for path, _regex, method, callback in getattr(generator, "endpoints", None) or ():
        try:
            view = generator.create_view(callback, method)
            views[(generator.coerce_path(path, method, view), method.lower())] = view
        except Exception:  # noqa: S112 - a view we cannot introspect simply gets no 403 entry
            continue
    return views


def _scope_requirements(view: Any, method: str) -> tuple[bool, list[str]]:
    declared = required_scopes_for(view, method)
    try:
        uses_scopes = any(_uses_scope_permission(permission) for permission in view.get_permissions())
    except Exception:
        uses_scopes = False
    return uses_scopes or declared is not None, sorted(declared or [])


def add_refusal_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the ``CertauthError`` component, and 401/503 (and 403 where
    the view checks scopes) on every operation secured by the client certificate.  The scopes a view
    requires become the role list of its ``clientCertificate`` security requirement (OpenAPI 3.1)."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = error_schema()
    views = _views_by_operation(generator)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            requirements = operation.get("security") or []
            if not any(SECURITY_SCHEME_NAME in requirement for requirement in requirements):
                continue
            responses = operation.setdefault("responses", {})
            responses["401"] = _refusal(401, "No acceptable client certificate.")
            responses["503"] = _refusal(503, "The certificate registry is unavailable; retry later.")
            forbidden: list[str] = []
            if method.upper() not in SAFE_METHODS:
                forbidden.append(str(Reason.CROSS_SITE_REQUEST))  # a browser's certificate used from another site
            view = views.get((path, method))
            checks_scopes, scopes = _scope_requirements(view, method) if view is not None else (False, [])
            if checks_scopes:
                forbidden.insert(0, str(Reason.INSUFFICIENT_SCOPE))
            if forbidden:
                needed = f" This operation requires: {', '.join(f'`{s}`' for s in scopes)}." if scopes else ""
                responses["403"] = _refusal(403, "Authenticated but not allowed.", needed, forbidden)
            if not checks_scopes:
                continue
            operation["security"] = [
                {**requirement, SECURITY_SCHEME_NAME: scopes} if SECURITY_SCHEME_NAME in requirement else requirement
                for requirement in requirements
            ]
    return result
