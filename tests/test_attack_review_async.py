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
