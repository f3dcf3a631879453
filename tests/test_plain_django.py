"""The Django entry points without DRF: the middleware (request.user), the decorator (refusals as JSON) and
the authentication backend (``django.contrib.auth.authenticate(request)``)."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.test import RequestFactory

from certauth.principal import CertificatePrincipal

from .conftest import escaped, failures

pytestmark = pytest.mark.django_db


def test_decorated_view_with_a_valid_certificate(api, pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    response = api.get("/plain/orders/", pki.client)
    assert response.status_code == 200, response.content
    assert response.json()["identity"] == "billing"
    assert response.json()["user"] == "billing"  # the middleware's CertificatePrincipal


@pytest.mark.parametrize(
    ("certificate", "reason", "status"),
    [
        (None, "missing_certificate", 401),
        ("stranger", "unknown_certificate", 401),
        ("client", "insufficient_scope", 403),
    ],
)
def test_decorated_view_refusals_are_json_and_audited(api, pki, register, certificate, reason, status) -> None:
    register(pki.client, identity="billing", scopes="reports:read")
    response = api.get("/plain/orders/", getattr(pki, certificate) if certificate else None)
    assert response.status_code == status
    assert response.json()["reason"] == reason
    if status == 401:
        assert response["WWW-Authenticate"].startswith("ClientCertificate")
    assert len(failures(reason=reason)) == 1


def test_decorated_view_refuses_cross_site_posts(api, pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    response = api.post("/plain/orders/", pki.client, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403 and response.json()["reason"] == "cross_site_request"


def test_backend_authenticates_a_credential_less_call_only(pki, register, trusted_root) -> None:
    register(pki.client, identity="billing")
    request = RequestFactory().get(
        "/", HTTP_X_SSL_CLIENT_CERT=escaped(pki.client), HTTP_X_SSL_CLIENT_VERIFY="SUCCESS", REMOTE_ADDR="127.0.0.1"
    )
    user = authenticate(request)
    assert isinstance(user, CertificatePrincipal) and user.get_username() == "billing"
    # A username/password login is never answered by whatever certificate header rides on the request.
    assert authenticate(request, username="billing", password="anything") is None


def test_middleware_keeps_a_session_user_and_never_audits_unrequested_checks(api, pki, admin_user) -> None:
    api.client.force_login(admin_user)
    response = api.get("/admin/", pki.stranger)  # an unknown certificate on an admin page
    assert response.status_code == 200  # the session's staff user, not the certificate
    assert failures() == []  # nothing asked for the certificate: nothing was refused
