"""The authentication matrix through DRF, as nginx would call it."""

from __future__ import annotations

import pytest
from django.test import override_settings

from certauth.models import AuthenticationFailure, CertificateIdentity
from certauth.reasons import Reason

from .conftest import escaped, failures

pytestmark = pytest.mark.django_db


def assert_refused(response, reason: Reason, status: int = 401) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["reason"] == str(reason), body
    assert body["detail"]
    if status == 401:
        assert response["WWW-Authenticate"].startswith('ClientCertificate realm="api"')


def test_valid_registered_certificate(api, pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    response = api.get("/api/whoami/", pki.client)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["identity"] == "billing"
    assert body["thumbprint"] == pki.client.thumbprint
    assert "CN=billing-service" in body["subject"]
    assert body["scopes"] == ["orders:read"]
    assert body["not_after"].startswith(str(pki.client.certificate.not_valid_after_utc.year))
    assert not AuthenticationFailure.objects.exists()


def test_no_certificate(api) -> None:
    response = api.get("/api/whoami/")
    assert_refused(response, Reason.MISSING_CERTIFICATE)
    assert response["WWW-Authenticate"] == 'ClientCertificate realm="api"'
    [row] = failures(reason="missing_certificate")
    assert row.path == "/api/whoami/"
    assert row.client_ip == "203.0.113.7"  # no certificate: X-Real-IP from the proxy is still believed


def test_garbage_certificate(api) -> None:
    assert_refused(api.get("/api/whoami/", "this-is-not-a-certificate"), Reason.MALFORMED_CERTIFICATE)
    assert len(failures(reason="malformed_certificate")) == 1


def test_unregistered_certificate(api, pki) -> None:
    response = api.get("/api/whoami/", pki.stranger)
    assert_refused(response, Reason.UNKNOWN_CERTIFICATE)
    assert 'error="unknown_certificate"' in response["WWW-Authenticate"]
    [row] = failures(reason="unknown_certificate")
    assert row.thumbprint_sha256 == pki.stranger.thumbprint
    assert row.subject_cn == "stranger"
    assert row.client_ip == "203.0.113.7"
    assert row.proxy_ip == "127.0.0.1"
    assert "BEGIN CERTIFICATE" in row.certificate_pem


def test_expired_certificate(api, pki, register) -> None:
    register(pki.expired)
    assert_refused(api.get("/api/whoami/", pki.expired), Reason.CERTIFICATE_EXPIRED)
    assert len(failures(reason="certificate_expired")) == 1


def test_not_yet_valid_certificate(api, pki, register) -> None:
    register(pki.not_yet_valid)
    assert_refused(api.get("/api/whoami/", pki.not_yet_valid), Reason.CERTIFICATE_NOT_YET_VALID)
    assert len(failures(reason="certificate_not_yet_valid")) == 1


def test_revoked_entry(api, pki, register) -> None:
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    entry.revoke("key_compromise")
    response = api.get("/api/whoami/", pki.client)
    assert_refused(response, Reason.CERTIFICATE_REVOKED)
    [row] = failures(reason="certificate_revoked")
    assert row.identity.name == "billing"


def test_disabled_identity(api, pki, register) -> None:
    register(pki.client)
    CertificateIdentity.objects.get(name="billing").disable()
    assert_refused(api.get("/api/whoami/", pki.client), Reason.IDENTITY_DISABLED)
    assert failures(reason="identity_disabled")[0].identity.name == "billing"


def test_header_from_untrusted_address(api, pki, register) -> None:
    register(pki.client)
    response = api.get("/api/whoami/", pki.client, remote="198.51.100.9")
    assert_refused(response, Reason.UNTRUSTED_PROXY)
    [row] = failures(reason="untrusted_proxy")
    assert row.client_ip == "198.51.100.9"  # X-Real-IP is not believed from a non-proxy


def test_proxy_verdict_must_be_success(api, pki, register) -> None:
    register(pki.client)
    assert_refused(api.get("/api/whoami/", pki.client, verify=None), Reason.PROXY_VERIFICATION_FAILED)
    assert_refused(
        api.get("/api/whoami/", pki.client, verify="FAILED:certificate has expired"), Reason.CERTIFICATE_EXPIRED
    )


@override_settings(CERTAUTH={"PROXY_VERIFIES_CERTIFICATE": False})
def test_optional_no_ca_mode_relies_on_certauth(api, pki, register) -> None:
    register(pki.client)
    response = api.get("/api/whoami/", pki.client, verify="FAILED:unable to verify the first certificate")
    assert response.status_code == 200


def test_scopes(api, pki, register) -> None:
    register(pki.client, scopes="orders:read")
    assert api.get("/api/orders/", pki.client).status_code == 200
    response = api.post("/api/orders/", pki.client, data={"item": "widget", "quantity": 2})
    assert response.status_code == 403
    body = response.json()
    assert body["reason"] == "insufficient_scope"
    assert body["missing_scopes"] == ["orders:write"]
    [row] = failures(reason="insufficient_scope")
    assert row.identity.name == "billing"
    assert row.method == "POST"


def test_wildcard_scope(api, pki, register) -> None:
    register(pki.client, scopes="orders:*")
    response = api.post("/api/orders/", pki.client, data={"item": "widget", "quantity": 2})
    assert response.status_code == 201, response.content
    assert response.json()["item"] == "widget"


def test_each_refusal_one_row_aggregated(api, pki) -> None:
    for _ in range(5):
        assert api.get("/api/whoami/", pki.stranger).status_code == 401
    [row] = failures(reason="unknown_certificate")
    assert row.count == 5


def test_request_user_is_linked_user_or_principal(api, pki, register, django_user_model) -> None:
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from certauth.authentication import ClientCertificateAuthentication
    from certauth.principal import CertificatePrincipal

    entry = register(pki.client)
    factory = APIRequestFactory()

    def authenticate():
        request = factory.get(
            "/", HTTP_X_SSL_CLIENT_CERT=escaped(pki.client), HTTP_X_SSL_CLIENT_VERIFY="SUCCESS", REMOTE_ADDR="127.0.0.1"
        )

        return ClientCertificateAuthentication().authenticate(Request(request))

    user, auth = authenticate()
    assert isinstance(user, CertificatePrincipal)
    assert user.is_authenticated and not user.is_staff and not user.has_perm("anything")
    assert auth.identity.name == "billing" and auth.entry_id == entry.pk
    linked = django_user_model.objects.create_user("billing-bot")
    entry.identity.user = linked
    entry.identity.save()
    user, auth = authenticate()
    assert user.pk == linked.pk


def test_healthz_needs_nothing(api) -> None:
    assert api.get("/healthz").status_code == 200
    assert not AuthenticationFailure.objects.exists()


def test_audit_survives_atomic_requests_rollback(pki, transactional_db, trusted_root, settings) -> None:
    """DRF marks the request transaction for rollback on a handled exception; the audit row must stay."""
    from django.db import connection

    from .conftest import CertClient

    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = True
    connection.settings_dict["ATOMIC_REQUESTS"] = True
    try:
        response = CertClient().get("/api/whoami/", pki.stranger)
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
        settings.DATABASES["default"]["ATOMIC_REQUESTS"] = False
    assert response.status_code == 401
    assert AuthenticationFailure.objects.filter(reason="unknown_certificate").count() == 1


def test_registry_unavailable_is_503_not_500(api, pki, register, monkeypatch) -> None:
    from django.db import OperationalError
    from django.db.backends.utils import CursorWrapper

    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200

    def database_down(self, *args, **kwargs):
        raise OperationalError("connection refused")

    # The database itself failing (not certauth code): every statement raises, as with a dead server.
    from certauth.registry import registry

    registry.invalidate()
    monkeypatch.setattr(CursorWrapper, "execute", database_down)
    response = api.get("/api/whoami/", pki.client)
    monkeypatch.undo()
    assert response.status_code == 503, response.content
    assert response.json()["reason"] == "registry_unavailable"


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ORIGIN": "https://evil.example"},
        {"HTTP_SEC_FETCH_SITE": "cross-site"},
        {"HTTP_SEC_FETCH_SITE": "same-site", "HTTP_ORIGIN": "https://other.testserver"},
        {"HTTP_ORIGIN": "null"},
    ],
)
def test_a_browser_cannot_be_used_cross_site_with_its_certificate(api, pki, register, headers) -> None:
    """A browser presents its client certificate automatically: a form on another site must not POST with it."""
    register(pki.client, scopes="orders:write")
    response = api.post("/api/orders/", pki.client, data={"item": "widget", "quantity": 1}, **headers)
    assert response.status_code == 403, response.content
    assert response.json()["reason"] == "cross_site_request"
    [row] = failures(reason="cross_site_request")
    assert row.identity.name == "billing"


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_ORIGIN": "http://testserver"}, {"HTTP_SEC_FETCH_SITE": "same-origin"}, {"HTTP_SEC_FETCH_SITE": "none"}],
)
def test_machine_clients_and_same_origin_requests_are_not_cross_site(api, pki, register, headers) -> None:
    register(pki.client, scopes="orders:write orders:read")
    assert api.post("/api/orders/", pki.client, data={"item": "widget", "quantity": 1}, **headers).status_code == 201
    # Safe methods are never refused for it (they change nothing).
    assert api.get("/api/orders/", pki.client, HTTP_ORIGIN="https://evil.example").status_code == 200


def test_a_certificate_never_acts_as_an_inactive_or_staff_user(api, pki, register, django_user_model) -> None:
    """The linked user is checked on every decision: deactivating it, or promoting it to staff (which would
    open the admin with a certificate alone), refuses the certificate from the next request on."""
    entry = register(pki.client)
    bot = django_user_model.objects.create_user("billing-bot")
    CertificateIdentity.objects.filter(pk=entry.identity_id).update(user=bot)
    from certauth.registry import registry_changed

    registry_changed()
    assert api.get("/api/whoami/", pki.client).status_code == 200
    bot.is_active = False
    bot.save()
    assert_refused(api.get("/api/whoami/", pki.client), Reason.IDENTITY_DISABLED)
    bot.is_active, bot.is_staff = True, True
    bot.save()
    response = api.get("/api/whoami/", pki.client)
    assert_refused(response, Reason.IDENTITY_DISABLED)
    assert "staff" in response.json()["detail"]
    # ... and the admin never sees it as a logged-in staff user.
    assert api.get("/admin/", pki.client).status_code == 302
    # A change that sends no signal (a queryset update, another app, another host) is seen at once too:
    # the linked user is read on every decision, no cache stands in between.
    django_user_model.objects.filter(pk=bot.pk).update(is_staff=False)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    django_user_model.objects.filter(pk=bot.pk).update(is_superuser=True)
    assert_refused(api.get("/api/whoami/", pki.client), Reason.IDENTITY_DISABLED)
    assert api.get("/admin/auth/user/", pki.client).status_code == 302
    django_user_model.objects.filter(pk=bot.pk).update(is_superuser=False)
    bot.delete()  # SET_NULL unlinks the identity: a plain principal again, never a 500
    assert api.get("/api/whoami/", pki.client).status_code == 200


def test_cross_site_origin_comparison_understands_default_ports_and_schemes() -> None:
    from certauth.csrf import is_cross_site

    meta = {"HTTP_ORIGIN": "https://api.example.com"}
    assert not is_cross_site("POST", meta, "api.example.com:443", "https")  # nginx sends Host with the port
    assert not is_cross_site("POST", meta, "API.example.com", "https")
    assert is_cross_site("POST", meta, "api.example.com:8443", "https")
    assert is_cross_site("POST", {"HTTP_ORIGIN": "http://api.example.com"}, "api.example.com", "https")
    assert is_cross_site("POST", {"HTTP_ORIGIN": "https://api.example.com:99999"}, "api.example.com", "https")
    assert not is_cross_site("POST", {"HTTP_SEC_FETCH_SITE": "same-origin", **meta}, "other:1", "https")
    assert is_cross_site("POST", {"HTTP_SEC_FETCH_SITE": "same-site"}, "api.example.com", "https")
