"""certauth under ASGI with async views: the middleware, the decorator and the backend on the async path.

Requests go through Django's ASGI handler (``AsyncClient``) to real async views (``tests/async_urls.py``) with
real certificates.  The event loop runs in its own thread (``async_to_sync``), where Django raises
``SynchronousOnlyOperation`` on any ORM call: every test here starts with cold certauth caches (registry,
trust store, remembered acceptances), so each passing request proves that the database parts (registry
lookups, the linked user, audit rows, last_used_at) ran in a thread and not on the loop."""

from __future__ import annotations

import os
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.contrib.auth import aauthenticate
from django.core.exceptions import SynchronousOnlyOperation
from django.test import AsyncClient, RequestFactory

from certauth import authenticator
from certauth.backends import ClientCertificateBackend
from certauth.middleware import ClientCertificateMiddleware
from certauth.models import RegisteredCertificate
from certauth.principal import CertificatePrincipal
from certauth.registry import registry, reset_last_used_memory

from . import async_urls
from .conftest import escaped, failures

# transaction=True: no test transaction around the request, as in production (Django runs no async view in
# ATOMIC_REQUESTS), so audit rows are written at once rather than deferred to the end of the request.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.async_urls")]


def aget(path: str, cert: Any = None, *, client: AsyncClient | None = None, verify: str = "SUCCESS") -> Any:
    """GET through the ASGI handler from 127.0.0.1 (the default trusted proxy) with nginx's headers."""
    headers = {"X-Real-IP": "203.0.113.7"}
    if cert is not None:
        headers |= {"X-SSL-Client-Cert": escaped(cert), "X-SSL-Client-Verify": verify}
    return async_to_sync((client or AsyncClient()).get)(path, headers=headers)


def certificate_request(cert: Any) -> Any:
    return RequestFactory().get(
        "/", HTTP_X_SSL_CLIENT_CERT=escaped(cert), HTTP_X_SSL_CLIENT_VERIFY="SUCCESS", REMOTE_ADDR="127.0.0.1"
    )


def test_the_event_loop_guard_is_live() -> None:
    """The premise of every test here: the ORM refuses to run on the loop's thread."""
    assert not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")

    async def query_on_the_loop() -> None:
        RegisteredCertificate.objects.count()

    with pytest.raises(SynchronousOnlyOperation):
        async_to_sync(query_on_the_loop)()


def test_async_view_gets_the_certificates_principal_as_user_and_auser(pki, register) -> None:
    entry = register(pki.client, identity="billing", scopes="orders:read")
    body = aget("/async/whoami/", pki.client).json()
    assert body["identity"] == "billing"
    assert body["user"] == {"name": "billing", "authenticated": True, "pk": None}  # a CertificatePrincipal
    assert body["auser"] == body["user"]  # auser() does not fall back to the (empty) session
    entry.refresh_from_db()
    assert entry.last_used_at is not None  # written from a thread


def test_async_view_gets_the_linked_user(pki, register, django_user_model) -> None:
    entry = register(pki.client, identity="billing")
    linked = django_user_model.objects.create_user("billing-bot")
    entry.identity.user = linked
    entry.identity.save()
    for _ in range(2):  # cold, then remembered: the linked user is read on every decision
        body = aget("/async/whoami/", pki.client).json()
        assert body["user"] == body["auser"] == {"name": "billing-bot", "authenticated": True, "pk": linked.pk}
    linked.is_active = False
    linked.save()
    body = aget("/async/whoami/", pki.client).json()
    assert body["auser"]["authenticated"] is False and body["identity"] is None
    assert len(failures(reason="identity_disabled")) == 1


def test_async_view_without_a_certificate_keeps_djangos_anonymous_user(api) -> None:
    body = aget("/async/whoami/").json()
    assert body == {"user": {"name": "", "authenticated": False, "pk": None}, "auser": body["auser"], "identity": None}
    assert body["auser"]["authenticated"] is False
    assert failures() == []  # no certificate is no refusal


def test_a_session_user_comes_first_on_the_async_path(pki, register, admin_user) -> None:
    register(pki.client, identity="billing")
    client = AsyncClient()
    client.force_login(admin_user)
    body = aget("/async/whoami/", pki.client, client=client).json()
    assert body["user"]["name"] == body["auser"]["name"] == admin_user.get_username()
    assert body["identity"] == "billing"  # request.certificate_auth is still the certificate's


def test_async_decorated_view_accepts_with_the_scope(pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    response = aget("/async/orders/", pki.client)
    assert response.status_code == 200, response.content
    assert response.json() == {"identity": "billing", "user": "billing"}
    assert aget("/async/anything/", pki.client).json() == {"identity": "billing"}
    assert failures() == []


@pytest.mark.parametrize(
    ("certificate", "reason", "status"),
    [
        (None, "missing_certificate", 401),
        ("stranger", "unknown_certificate", 401),
        ("expired", "certificate_expired", 401),
        ("client", "insufficient_scope", 403),
    ],
)
def test_async_decorated_view_refusals_are_json_and_audited(pki, register, certificate, reason, status) -> None:
    register(pki.client, identity="billing", scopes="reports:read")
    response = aget("/async/orders/", getattr(pki, certificate) if certificate else None)
    assert response.status_code == status, response.content
    assert response.json()["reason"] == reason and response.json()["detail"]
    if status == 401:
        assert response["WWW-Authenticate"].startswith("ClientCertificate")
    assert len(failures(reason=reason)) == 1


def test_async_refusal_from_an_untrusted_proxy(pki, register, settings) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    settings.CERTAUTH = {**settings.CERTAUTH, "TRUSTED_PROXIES": ["192.0.2.1"]}  # not 127.0.0.1
    response = aget("/async/orders/", pki.client)
    assert response.status_code == 401
    assert response.json()["reason"] == "untrusted_proxy" and "127.0.0.1" in response.json()["detail"]
    assert len(failures(reason="untrusted_proxy")) == 1


def test_async_refusal_named_by_the_proxy_verdict(pki, register) -> None:
    register(pki.client, identity="billing", scopes="orders:read")
    aget("/async/orders/", pki.client)  # remembered ...
    response = aget("/async/orders/", pki.client, verify="FAILED:certificate has expired")  # ... not served
    assert response.status_code == 401 and response.json()["reason"] == "certificate_expired"


def test_nginx_refusals_under_asgi_are_audited_with_the_clients_request_line(pki, register) -> None:
    """nginx sends a certificate it refused to certauth's refusal view with the original request line; the
    async middleware evaluates first, and must audit under that line as the view would."""
    register(pki.client, identity="billing")
    client = AsyncClient()
    headers = {
        "X-SSL-Client-Cert": escaped(pki.stranger),
        "X-SSL-Client-Verify": "SUCCESS",
        "X-Certauth-Original-URI": "/api/orders/?page=2",
        "X-Certauth-Original-Method": "POST",
    }
    response = async_to_sync(client.get)("/-/certauth/refused", headers=headers)
    assert response.status_code == 401 and response.json()["reason"] == "unknown_certificate"
    [row] = failures(reason="unknown_certificate")
    assert (row.method, row.path) == ("POST", "/api/orders/")


def test_sync_views_under_asgi_drf_and_the_sync_decorator(pki, register) -> None:
    """DRF and sync views run in a thread under ASGI; the async middleware in front of them changes nothing."""
    register(pki.client, identity="billing", scopes="orders:read")
    assert aget("/api/whoami/", pki.client).json()["identity"] == "billing"
    response = aget("/plain/orders/", pki.client)
    assert response.status_code == 200 and response.json()["user"] == "billing"
    refused = aget("/plain/orders/", pki.stranger)
    assert refused.status_code == 401 and refused.json()["reason"] == "unknown_certificate"
    assert len(failures(reason="unknown_certificate")) == 1


def test_the_decorator_keeps_a_sync_view_sync_and_an_async_view_async() -> None:
    assert iscoroutinefunction(async_urls.orders) and iscoroutinefunction(async_urls.anything)
    from project.api.views import plain_orders

    assert not iscoroutinefunction(plain_orders)


def test_the_middleware_follows_the_chain() -> None:
    async def async_view(request: Any) -> Any:
        return None

    def sync_view(request: Any) -> Any:
        return None

    assert ClientCertificateMiddleware.sync_capable and ClientCertificateMiddleware.async_capable
    assert iscoroutinefunction(ClientCertificateMiddleware(async_view))
    assert not iscoroutinefunction(ClientCertificateMiddleware(sync_view))


def test_aauthenticate_for_password_users_and_certificates(pki, register, django_user_model, settings) -> None:
    assert "certauth.backends.ClientCertificateBackend" in settings.AUTHENTICATION_BACKENDS
    person = django_user_model.objects.create_user("alice", password="correct horse battery staple")
    assert async_to_sync(aauthenticate)(None, username="alice", password="correct horse battery staple") == person
    assert async_to_sync(aauthenticate)(None, username="alice", password="wrong") is None

    entry = register(pki.client, identity="billing")
    request = certificate_request(pki.client)
    user = async_to_sync(aauthenticate)(request)
    assert isinstance(user, CertificatePrincipal) and user.get_username() == "billing"
    linked = django_user_model.objects.create_user("billing-bot")
    entry.identity.user = linked
    entry.identity.save()
    assert async_to_sync(aauthenticate)(certificate_request(pki.client)) == linked  # the identity's own user
    # A password login is never answered by the certificate riding on the request ...
    assert async_to_sync(aauthenticate)(request, username="billing", password="anything") is None
    # ... and a password user stays who they are with one.
    assert async_to_sync(aauthenticate)(request, username="alice", password="correct horse battery staple") == person
    assert async_to_sync(aauthenticate)(certificate_request(pki.stranger)) is None


def test_backend_async_methods_are_native(django_user_model) -> None:
    backend = ClientCertificateBackend()
    for name in ("aauthenticate", "aget_user", "ahas_perm", "ahas_module_perms"):
        assert getattr(ClientCertificateBackend, name) is not None and name in vars(ClientCertificateBackend)
    active = django_user_model.objects.create_user("bot")
    inactive = django_user_model.objects.create_user("gone", is_active=False)
    assert async_to_sync(backend.aget_user)(active.pk) == active
    assert async_to_sync(backend.aget_user)(inactive.pk) is None
    assert async_to_sync(backend.aget_user)(10**9) is None
    assert async_to_sync(backend.ahas_perm)(active, "auth.add_user") is False


def test_a_remembered_acceptance_is_answered_on_the_loop_and_a_cold_one_is_not(pki, register) -> None:
    """The warm path needs no thread; anything that must read or write goes to one (``_decide_on_loop``)."""
    register(pki.client, identity="billing")
    assert authenticator._decide_on_loop(certificate_request(pki.client)) is None  # cold: nothing remembered
    assert aget("/async/anything/", pki.client).status_code == 200  # decided in a thread, remembered
    warm = authenticator._decide_on_loop(certificate_request(pki.client))
    assert warm is not None and warm.ok and warm.identity_name == "billing"
    missing = authenticator._decide_on_loop(RequestFactory().get("/", REMOTE_ADDR="127.0.0.1"))
    assert missing is not None and missing.reason is authenticator.Reason.MISSING_CERTIFICATE
    reset_last_used_memory()  # a last_used_at write falls due: a thread again
    assert authenticator._decide_on_loop(certificate_request(pki.client)) is None
    assert aget("/async/anything/", pki.client).status_code == 200
    assert authenticator._decide_on_loop(certificate_request(pki.client)) is not None
    registry.invalidate()  # the registry changed: a thread again
    assert authenticator._decide_on_loop(certificate_request(pki.client)) is None
    untrusted = certificate_request(pki.client)
    untrusted.META["REMOTE_ADDR"] = "192.0.2.9"
    assert authenticator._decide_on_loop(untrusted) is None  # a refusal: audited, from a thread


def test_a_remembered_acceptance_is_served_on_the_loop_only_to_the_whole_value(pki, register) -> None:
    """Acceptances are filed under the value's last characters (``accepted_key``); the loop path, like the sync
    one, serves one only to the identical value.  Another certificate's value spliced onto the remembered one's
    tail is decided in full (refused: not registered), never answered as the remembered identity."""
    register(pki.client, identity="billing")
    value = escaped(pki.client)
    assert aget("/async/whoami/", pki.client).json()["identity"] == "billing"  # remembered
    tail = value[-authenticator.ACCEPTED_KEY_TAIL :]
    other = escaped(pki.client2)
    spliced = other[: len(other) - len(tail)] + tail
    assert spliced != value and authenticator.accepted_key(spliced, None) == authenticator.accepted_key(value, None)
    request = RequestFactory().get(
        "/", HTTP_X_SSL_CLIENT_CERT=spliced, HTTP_X_SSL_CLIENT_VERIFY="SUCCESS", REMOTE_ADDR="127.0.0.1"
    )
    assert authenticator._decide_on_loop(request) is None  # not served from the loop: decided in a thread
    response = async_to_sync(AsyncClient().get)(
        "/async/whoami/", headers={"X-SSL-Client-Cert": spliced, "X-SSL-Client-Verify": "SUCCESS"}
    )
    assert response.json()["identity"] is None and not response.json()["user"]["authenticated"], response.content
    assert aget("/async/whoami/", pki.client).json()["identity"] == "billing"  # still served to its own value


def test_the_async_middleware_reads_nothing_on_the_loop_for_the_first_request(pki, register, monkeypatch) -> None:
    """The first request of a process builds certauth's config, which reads the proxy secret (PROXY_SECRET_FILE,
    maybe on a network filesystem): through the async middleware that happens in the thread, never on the
    event loop, where the middleware used to work out the client's request line for every request (and so
    built the config there)."""
    import asyncio

    register(pki.client, identity="billing")
    read_on_the_loop = []
    read = authenticator.load_proxy_secret

    def spy() -> Any:
        try:
            asyncio.get_running_loop()
            read_on_the_loop.append(True)
        except RuntimeError:
            pass  # a thread without a loop: where it belongs
        return read()

    monkeypatch.setattr(authenticator, "load_proxy_secret", spy)
    authenticator._config = None  # a new process
    assert aget("/async/whoami/", pki.client).json()["identity"] == "billing"
    assert authenticator._config is not None  # built, and the secret read: in the thread
    assert read_on_the_loop == []
