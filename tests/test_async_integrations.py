"""Django Ninja (``certauth.ninja``) and adrf (certauth's DRF classes) on async and sync endpoints, through
Django's ASGI handler with real certificates.  Needs ``django-ninja`` and ``adrf`` (dev dependencies);
skipped with that reason when they are not installed."""

from __future__ import annotations

import pytest

pytest.importorskip("ninja", reason="django-ninja is not installed (a dev dependency: pip install django-ninja)")
pytest.importorskip("adrf", reason="adrf is not installed (a dev dependency: pip install adrf)")

from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from .conftest import escaped, failures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.integrations_urls")]


def headers(cert=None) -> dict[str, str]:
    found = {"X-Real-IP": "203.0.113.7"}
    if cert is not None:
        found |= {"X-SSL-Client-Cert": escaped(cert), "X-SSL-Client-Verify": "SUCCESS"}
    return found


def aget(path: str, cert=None):
    return async_to_sync(AsyncClient().get)(path, headers=headers(cert))


def test_ninja_async_and_sync_operations_authenticate(pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    assert aget("/ninja/async/whoami", pki.client).json() == {"identity": "billing", "same": True}
    assert aget("/ninja/sync/whoami", pki.client).json() == {"identity": "billing"}  # Ninja's thread under ASGI
    wsgi = Client().get("/ninja/sync/whoami", headers=headers(pki.client))
    assert wsgi.json() == {"identity": "billing"}


@pytest.mark.parametrize("path", ["/ninja/async/whoami", "/ninja/sync/whoami"])
@pytest.mark.parametrize(
    ("certificate", "reason"), [(None, "missing_certificate"), ("stranger", "unknown_certificate")]
)
def test_ninja_refusals_are_certauths_json_and_audited(pki, register, path, certificate, reason) -> None:
    register(pki.client, identity="billing")
    response = aget(path, getattr(pki, certificate) if certificate else None)
    assert response.status_code == 401
    assert response.json()["reason"] == reason and response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("ClientCertificate")
    assert len(failures(reason=reason)) == 1


def test_ninja_scopes_on_an_async_operation(pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    register(pki.client2, identity="writer", scopes="orders:write")
    client = AsyncClient()
    denied = async_to_sync(client.post)("/ninja/async/orders", headers=headers(pki.client))
    assert denied.status_code == 403 and denied.json()["reason"] == "insufficient_scope"
    assert len(failures(reason="insufficient_scope")) == 1
    allowed = async_to_sync(client.post)("/ninja/async/orders", headers=headers(pki.client2))
    assert allowed.status_code == 200 and allowed.json() == {"created": True, "by": "writer"}


def test_adrf_async_view_with_certauths_drf_classes(pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    register(pki.client2, identity="other", scopes="reports:read")
    response = aget("/adrf/orders/", pki.client)
    assert response.status_code == 200, response.content
    assert response.json() == {"identity": "billing", "user": "billing"}
    denied = aget("/adrf/orders/", pki.client2)
    assert denied.status_code == 403 and denied.json()["reason"] == "insufficient_scope"
    missing = aget("/adrf/orders/")
    assert missing.status_code == 401 and missing.json()["reason"] == "missing_certificate"
