"""The OpenAPI document served at /api/schema/: OpenAPI 3.1, client certificates as a ``mutualTLS``
security scheme, and certauth's refusals (reason codes) on 401/403/503."""

from __future__ import annotations

from typing import Any

import pytest

from certauth.openapi import ERROR_COMPONENT, SECURITY_SCHEME_NAME
from certauth.reasons import Reason

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client: Any) -> dict[str, Any]:
    """Fetched anonymously, without any certificate: the schema is public."""
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def reason_enum(document: dict[str, Any], response: dict[str, Any]) -> list[str]:
    """The reason codes a documented response allows: the narrowed enum of its ``allOf``."""
    schema = response["content"]["application/json"]["schema"]
    enums = [
        part["properties"]["reason"]["enum"]
        for part in (resolve(document, item) for item in schema["allOf"])
        if "enum" in part.get("properties", {}).get("reason", {})
    ]
    # the shared component allows every code; the response narrows it
    return min(enums, key=len)


def test_openapi_3_1_with_a_mutual_tls_scheme(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.1.")
    scheme = schema["components"]["securitySchemes"][SECURITY_SCHEME_NAME]
    assert scheme["type"] == "mutualTLS"
    assert "client certificate" in scheme["description"]


def test_error_component_lists_every_reason(schema: dict[str, Any]) -> None:
    component = schema["components"]["schemas"][ERROR_COMPONENT]
    assert component["properties"]["reason"]["enum"] == [str(reason) for reason in Reason]
    assert set(component["required"]) == {"reason", "detail"}
    assert {"missing_scopes", "required_scopes"} <= set(component["properties"])


def test_whoami_is_secured_and_documents_401_reasons(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/api/whoami/"]["get"]
    assert operation["security"] == [{SECURITY_SCHEME_NAME: []}]
    unauthorized = operation["responses"]["401"]
    reasons = reason_enum(schema, unauthorized)
    assert {"unknown_certificate", "missing_certificate", "untrusted_proxy", "forwarded_hash_mismatch"} <= set(reasons)
    assert "insufficient_scope" not in reasons
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert reason_enum(schema, operation["responses"]["503"]) == ["registry_unavailable"]
    assert "403" not in operation["responses"]  # whoami checks no scope


def test_orders_post_documents_403_insufficient_scope(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/api/orders/"]["post"]
    assert operation["security"] == [{SECURITY_SCHEME_NAME: ["orders:write"]}]
    forbidden = operation["responses"]["403"]
    assert reason_enum(schema, forbidden) == ["insufficient_scope", "cross_site_request"]
    assert "orders:write" in forbidden["description"]
    assert schema["paths"]["/api/orders/"]["get"]["security"] == [{SECURITY_SCHEME_NAME: ["orders:read"]}]
    # A safe method cannot be refused as cross-site; the scope refusal remains.
    assert reason_enum(schema, schema["paths"]["/api/orders/"]["get"]["responses"]["403"]) == ["insufficient_scope"]
    assert "403" not in schema["paths"]["/api/whoami/"]["get"]["responses"]  # no scopes, safe method


def test_unsecured_operations_get_no_certauth_responses(schema: dict[str, Any]) -> None:
    for path in ("/api/ping/", "/api/schema/"):
        responses = schema["paths"][path]["get"]["responses"]
        assert not {"401", "403", "503"} & set(responses), path


def test_documented_reasons_match_what_the_api_answers(schema: dict[str, Any]) -> None:
    """Every reason the enumeration knows is documented under the status code the API answers with."""
    operation = schema["paths"]["/api/orders/"]["post"]["responses"]
    for reason in Reason:
        assert str(reason) in reason_enum(schema, operation[str(reason.status_code)]), reason


def test_document_is_valid_openapi_3_1(schema: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator

    validator.validate(schema, cls=OpenAPIV31SpecValidator)
