"""Attack review of the async/ASGI work: a peer that an ASGI server's proxy-header handling lets *name* its own
address.  uvicorn's real ``ProxyHeadersMiddleware`` wraps Django's real ASGI handler here (in process, no
socket): what uvicorn (or gunicorn's UvicornWorker, proxy headers on by default) does to ``scope["client"]``
before certauth reads ``REMOTE_ADDR``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from certauth.checks import uvicorn_rewrites_trusted_proxy
from certauth.proxies import ProxyAllowList

from .conftest import escaped, failures

uvicorn_proxy_headers = pytest.importorskip("uvicorn.middleware.proxy_headers")

pytestmark = pytest.mark.django_db(transaction=True)


def _asgi_get(app: Any, path: str, client: tuple[str, int], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")] + [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # as a server does: nothing more until the client goes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(app)(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body or b"{}")


def _forged(pki: Any, forwarded_for: str) -> dict[str, str]:
    """A local process (not nginx) sends a registered client's certificate (public data) and names its address."""
    return {
        "X-SSL-Client-Cert": escaped(pki.client),
        "X-SSL-Client-Verify": "SUCCESS",
        "X-Forwarded-For": forwarded_for,
    }


@override_settings(CERTAUTH={"TRUSTED_PROXIES": ["unix:"]})
def test_x_forwarded_for_unix_is_not_a_unix_socket_peer(pki, register) -> None:
    """certauth trusts nginx on the unix socket only.  The same server also listens on loopback TCP (gunicorn
    with UvicornWorker and two --bind, or uvicorn on TCP by mistake) with proxy headers on for 127.0.0.1 (the
    default).  A local process connects to TCP and sends ``X-Forwarded-For: unix:``: uvicorn puts ``"unix:"``
    in ``scope["client"]``, Django makes it REMOTE_ADDR, and certauth must not read that as the unix socket."""
    register(pki.client, identity="billing")
    app = uvicorn_proxy_headers.ProxyHeadersMiddleware(ASGIHandler(), trusted_hosts="127.0.0.1")
    status, body = _asgi_get(app, "/api/whoami/", ("127.0.0.1", 41000), _forged(pki, "unix:"))
    assert status == 401, body
    assert body["reason"] == "untrusted_proxy"
    assert len(failures(reason="untrusted_proxy")) == 1


@override_settings(CERTAUTH={"TRUSTED_PROXIES": ["127.0.0.1"]})
def test_proxy_headers_for_an_untrusted_peer_let_it_claim_the_trusted_proxy(pki, register) -> None:
    """uvicorn's proxy headers on for a peer certauth does *not* trust (``FORWARDED_ALLOW_IPS=10.0.0.5``): that
    peer writes ``X-Forwarded-For: 127.0.0.1`` and becomes the trusted proxy (no proxy secret configured).
    This is what the deployment allows; the test shows it, and certauth.W015 must say so (it was silent)."""
    register(pki.client, identity="billing")
    app = uvicorn_proxy_headers.ProxyHeadersMiddleware(ASGIHandler(), trusted_hosts="10.0.0.5")
    status, body = _asgi_get(app, "/api/whoami/", ("10.0.0.5", 41000), _forged(pki, "127.0.0.1"))
    assert status == 200 and body.get("identity") == "billing", body  # the forged certificate is accepted
    argv = ["/srv/app/.venv/bin/uvicorn", "project.asgi:application", "--host", "10.0.0.1"]
    assert uvicorn_rewrites_trusted_proxy(argv, {"FORWARDED_ALLOW_IPS": "10.0.0.5"}, ProxyAllowList(["127.0.0.1"]))


HOSTILE = [
    {"X-SSL-Client-Cert": "%ZZ%-----BEGIN", "X-SSL-Client-Verify": "SUCCESS"},
    {"X-SSL-Client-Cert": "\u00ff" * 5000, "X-SSL-Client-Verify": "SUCCESS"},
    {"X-SSL-Client-Cert": " ", "X-SSL-Client-Verify": "FAILED:\u00e9\x7f"},
    {"X-SSL-Client-Cert": "-----BEGIN CERTIFICATE-----%0AAAAA%0A-----END CERTIFICATE-----", "X-SSL-Client-Verify": ""},
    {"X-SSL-Client-Cert": "x", "X-Certauth-Original-URI": "/%ff%fe/\u00ff?%00", "X-Certauth-Original-Method": "\u00e9"},
    {"X-SSL-Client-Cert": "x", "X-Certauth-Original-URI": "%", "X-Certauth-Original-Method": "P" * 5000},
    {"X-SSL-Client-Cert": "x", "X-Real-IP": "1.2.3.4%eth0, ::ffff:1.2.3.4, [::1]:80, \u00ff"},
    {"X-SSL-Client-Cert": "x", "X-Forwarded-For": ", , ,unix:,", "X-Real-IP": ""},
]


@pytest.mark.parametrize("path", ["/async/whoami/", "/async/orders/", "/api/whoami/"])
@pytest.mark.parametrize("client", [("127.0.0.1", 1), ("198.51.100.4", 2), ("unix:", 0)])
@pytest.mark.parametrize("headers", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.urls("tests.async_urls")
def test_hostile_headers_on_the_async_path_are_refused_not_500(pki, register, path, client, headers) -> None:
    """Through Django's ASGI handler to async and sync views: every hostile value is a 4xx with a reason (or, on
    an undecorated view, an anonymous user), never a 500."""
    register(pki.client, identity="billing", scopes="orders:read")
    status, body = _asgi_get(ASGIHandler(), path, client, headers)
    if path == "/async/whoami/":  # no decorator: the view runs, anonymous
        assert status == 200 and body["user"]["authenticated"] is False and body["identity"] is None, body
    else:
        assert 400 <= status < 500, (status, body)
        assert body["reason"] and body["detail"], body


# --- a remembered acceptance on the event loop, after a revocation or a disabled authority ------------------


def _loop_get(cert: Any, path: str = "/async/orders/") -> Any:
    from django.test import AsyncClient

    headers = {"X-Real-IP": "203.0.113.7", "X-SSL-Client-Cert": escaped(cert), "X-SSL-Client-Verify": "SUCCESS"}
    return async_to_sync(AsyncClient().get)(path, headers=headers)


def _warm_on_the_loop(cert: Any) -> None:
    """Two accepted requests: the second one answered on the loop (no thread hop)."""
    from certauth import authenticator

    for _ in range(2):
        assert _loop_get(cert).status_code == 200
    request = _request_for(cert)
    assert authenticator._decide_on_loop(request) is not None  # the premise: remembered, answered on the loop


def _request_for(cert: Any) -> Any:
    from django.test import RequestFactory

    return RequestFactory().get(
        "/async/orders/", HTTP_X_SSL_CLIENT_CERT=escaped(cert), HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
        REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="203.0.113.7",
    )  # fmt: skip


@pytest.mark.urls("tests.async_urls")
def test_another_workers_revocation_reaches_the_loop_within_the_bound(pki, register, settings, monkeypatch) -> None:
    import time
    import types

    from certauth import registry as registry_module

    from .test_registry_cache import revoke_from_another_worker

    # Far from the real clock: the loop's check of the freshness window (authorities.cached_trust_store) must
    # read the registry's clock (Registry.is_quiet), never one of its own.
    now = [time.monotonic() + 1_000_000.0]
    clock = types.SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(registry_module, "time", clock)
    settings.CERTAUTH = {**settings.CERTAUTH, "REGISTRY_MAX_STALENESS_SECONDS": 1, "LAST_USED_RESOLUTION_SECONDS": 3600}
    entry = register(pki.client, identity="billing", scopes="orders:read")
    _warm_on_the_loop(pki.client)
    revoke_from_another_worker(entry.pk)
    now[0] += 1.01  # past the bound: the loop may no longer vouch for freshness
    response = _loop_get(pki.client)
    assert response.status_code == 401 and response.json()["reason"] == "certificate_revoked", response.content
    assert len(failures(reason="certificate_revoked")) == 1


@pytest.mark.urls("tests.async_urls")
def test_strict_mode_never_answers_on_the_loop(pki, register, settings) -> None:
    from .test_registry_cache import revoke_from_another_worker

    settings.CERTAUTH = {**settings.CERTAUTH, "REGISTRY_MAX_STALENESS_SECONDS": 0}
    entry = register(pki.client, identity="billing", scopes="orders:read")
    for _ in range(2):
        assert _loop_get(pki.client).status_code == 200
    from certauth import authenticator

    assert authenticator._decide_on_loop(_request_for(pki.client)) is None
    revoke_from_another_worker(entry.pk)
    assert _loop_get(pki.client).json()["reason"] == "certificate_revoked"


@pytest.mark.urls("tests.async_urls")
def test_this_workers_changes_reach_the_loop_at_once(pki, register, trusted_root, settings) -> None:
    from certauth.services import revoke

    settings.CERTAUTH = {**settings.CERTAUTH, "REGISTRY_MAX_STALENESS_SECONDS": 3600}
    entry = register(pki.client, identity="billing", scopes="orders:read")
    register(pki.client2, identity="writer", scopes="orders:read")
    _warm_on_the_loop(pki.client)
    _warm_on_the_loop(pki.client2)
    revoke(entry)
    assert _loop_get(pki.client).json()["reason"] == "certificate_revoked"
    assert _loop_get(pki.client2).status_code == 200
    trusted_root.is_enabled = False  # as the admin saves it
    trusted_root.save(update_fields=["is_enabled", "updated_at"])
    refused = _loop_get(pki.client2)
    assert refused.status_code == 401 and refused.json()["reason"] == "untrusted_issuer", refused.content


# --- a session begun with the certificate backend ----------------------------------------------------------


def _login_with_certificate(pki: Any) -> str:
    """What a project writes with Django's own API: ``login(request, authenticate(request))`` on a request that
    carries the identity's certificate.  Returns the session key."""
    from django.contrib.auth import authenticate, login
    from django.contrib.sessions.middleware import SessionMiddleware

    request = _request_for(pki.client)
    SessionMiddleware(lambda r: None).process_request(request)
    user = authenticate(request)
    assert user is not None and user.get_username() == "billing-bot"
    assert user.backend == "certauth.backends.ClientCertificateBackend"
    login(request, user)
    request.session.save()
    return str(request.session.session_key)


@pytest.mark.parametrize("asgi", [False, True])
def test_a_certificate_session_never_acts_as_staff_or_superuser(pki, register, django_user_model, asgi) -> None:
    """certauth promises that a certificate never acts as a staff, superuser or inactive account.  A session
    begun with the certificate backend is read back by the same backend's get_user / aget_user: when the
    linked user has since been made superuser, that session must not open the admin."""
    from django.conf import settings as django_settings
    from django.test import AsyncClient, Client

    entry = register(pki.client, identity="billing")
    linked = django_user_model.objects.create_user("billing-bot")
    entry.identity.user = linked
    entry.identity.save()
    session_key = _login_with_certificate(pki)
    linked.is_staff = linked.is_superuser = True
    linked.save()
    client = AsyncClient() if asgi else Client()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = session_key
    get = async_to_sync(client.get) if asgi else client.get
    response = get("/admin/")
    assert response.status_code == 302 and "/login/" in response["Location"], response.status_code


def test_use_tz_false_is_refused_at_start_up(settings) -> None:
    """USE_TZ=False would make every certificate request a 500 (the decision's clock turns naive while the
    certificate's validity is aware): certauth.E014 stops ``manage.py check``, ``migrate`` and ``runserver``
    with the fix, before a request is ever served."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.USE_TZ = False
    with pytest.raises(SystemCheckError, match=r"certauth\.E014.*USE_TZ = True"):
        call_command("check", databases=[])
    settings.USE_TZ = True
    call_command("check", databases=[])  # and nothing else in the reference project stops it


def test_a_single_scope_string_is_one_scope_not_its_letters(pki, register) -> None:
    """``certificate_required(scopes="orders:read")`` (and Ninja's ``ClientCertificate(scopes=...)``) as DRF's
    ``required_scopes = "orders:read"``: one scope.  Read as its letters, the identity that holds the scope was
    refused and only a ``*`` identity passed."""
    from django.http import JsonResponse

    from certauth.decorators import certificate_required

    register(pki.client, identity="billing", scopes="orders:read")
    register(pki.client2, identity="writer", scopes="orders:write")

    @certificate_required(scopes="orders:read")
    def view(request: Any) -> Any:
        return JsonResponse({"identity": request.certificate_auth.identity.name})

    assert view(_request_for(pki.client)).status_code == 200
    refused = view(_request_for(pki.client2))
    assert refused.status_code == 403 and json.loads(refused.content)["detail"] == "Missing scope: orders:read."
    ninja = pytest.importorskip("certauth.ninja")
    assert ninja.ClientCertificate(scopes="orders:write").scopes == ["orders:write"]
