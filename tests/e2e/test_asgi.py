"""The core end-to-end cases through nginx -> uvicorn (``project.asgi``, ASGI) with the flags ``make run
SERVER=uvicorn`` uses (``scripts.stack.Stack._uvicorn_command``): one stack for the module, nginx in
``optional`` (``make run``'s mode), over the unix socket certauth trusts as ``"unix:"``, today's sync
middleware adapted by Django's ASGI handler."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from certauth.client import build_ssl_context

from .conftest import E2EStack, uvicorn_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def asgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    yield from uvicorn_stack(tmp_path_factory, "e2e-uvicorn")


def _refusal(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 401, (response.status_code, response.text[:500])
    assert "WWW-Authenticate" in response.headers
    return dict(response.json())


def _served_by_uvicorn(asgi: E2EStack, marker: str) -> bool:
    """uvicorn's access log (in its output) names a request carrying ``marker``: uvicorn, not gunicorn, answered."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if marker in (asgi.stack.log_dir / "uvicorn.log").read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def get_from(asgi: E2EStack, source: str, name: str | None, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` through nginx from the loopback address ``source`` (the whole of 127/8 is this host),
    presenting dev certificate ``name``: a client whose address is not the proxy's."""
    pki = asgi.pki
    cert = {"cert": pki.path(name), "key": pki.path(name, "key")} if name else {}
    context = build_ssl_context(ca=pki.path("ca"), **cert)
    connection = http.client.HTTPSConnection(
        asgi.stack.host, asgi.stack.port, context=context, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self.socket_path))


def test_uvicorn_registered_client_gets_its_identity(asgi: E2EStack) -> None:
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    response = asgi.session("client").get(asgi.url(f"/api/whoami/?{marker}"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "demo-client"
    assert response.json()["thumbprint"] == asgi.pki.thumbprint("client")
    assert _served_by_uvicorn(asgi, marker)


def test_uvicorn_client_from_another_address_authenticates(asgi: E2EStack) -> None:
    """With the shipped --no-proxy-headers, a client whose address is not the proxy's (127.0.0.2 here, as any
    real client) authenticates: certauth sees the unix socket, and reads the client address itself."""
    status, body = get_from(asgi, "127.0.0.2", "client", "/api/whoami/")
    assert status == 200, body
    assert body["identity"] == "demo-client"


def test_uvicorn_no_certificate_is_missing_certificate(asgi: E2EStack) -> None:
    assert _refusal(asgi.session(None).get(asgi.url("/api/whoami/"), timeout=10))["reason"] == "missing_certificate"


def test_uvicorn_unregistered_certificate_is_unknown(asgi: E2EStack) -> None:
    response = asgi.session("unregistered").get(asgi.url("/api/whoami/"), timeout=10)
    assert _refusal(response)["reason"] == "unknown_certificate"


def test_uvicorn_nginx_refusal_reaches_certauths_refusal_view(asgi: E2EStack) -> None:
    """nginx answers an expired certificate itself (495); error_page hands it to certauth.urls' refusal view
    under uvicorn, which answers JSON and audits the path the client asked for."""
    path = f"/api/orders/probe-{uuid.uuid4().hex[:8]}/"
    response = asgi.session("expired").post(asgi.url(path), json={"item": "x"}, timeout=10)
    assert response.headers["Content-Type"].startswith("application/json")
    assert _refusal(response)["reason"] == "certificate_expired"
    script = (
        "from certauth.models import AuthenticationFailure as F; "
        f"row = F.objects.filter(reason='certificate_expired', thumbprint_sha256={asgi.pki.thumbprint('expired')!r})"
        ".latest('last_seen'); print(row.method, row.path)"
    )
    assert asgi.manage("shell", "-c", script).stdout.strip().splitlines()[-1].split() == ["POST", path]


def test_uvicorn_revoked_certificate_is_refused(asgi: E2EStack) -> None:
    asgi.manage(
        "certauth", "register", "--identity", "asgi-revocation-probe", "--cert", str(asgi.pki.path("client2")),
        "--scope", "orders:read",
    )  # fmt: skip
    session = asgi.session("client2")
    assert session.get(asgi.url("/api/whoami/"), timeout=10).status_code == 200
    asgi.manage("certauth", "revoke", "--thumbprint", asgi.pki.thumbprint("client2"), "--reason", "key_compromise")
    # Each worker notices within REGISTRY_MAX_STALENESS_SECONDS; wait for the condition, with a generous cap.
    deadline = time.monotonic() + 60
    while session.get(asgi.url("/api/whoami/"), timeout=10).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    reasons = [_refusal(asgi.session("client2").get(asgi.url("/api/whoami/"), timeout=10))["reason"] for _ in range(6)]
    assert reasons == ["certificate_revoked"] * 6


@pytest.mark.parametrize("header", ["X-SSL-Client-Cert", "X-SSL_Client_Cert"])
def test_uvicorn_forged_certificate_header_through_nginx_is_ignored(asgi: E2EStack, header: str) -> None:
    forged = quote(asgi.pki.path("client").read_text(), safe="")
    response = asgi.session(None).get(
        asgi.url("/api/whoami/"), headers={header: forged, "X-SSL-Client-Verify": "SUCCESS"}, timeout=10
    )
    assert _refusal(response)["reason"] == "missing_certificate"


def test_uvicorn_local_peer_without_the_proxy_secret_is_untrusted_proxy(asgi: E2EStack) -> None:
    """A local process that opens uvicorn's socket itself (as this user can) and forges the headers: the peer
    is the unix socket (uvicorn gives no client address there, so Django sets no REMOTE_ADDR and certauth
    sees ``unix:``, trusted as for gunicorn), but without nginx's secret it is untrusted_proxy, audited."""
    connection = _UnixConnection(asgi.stack.socket_path(0))
    try:
        connection.request(
            "GET",
            "/api/whoami/",
            headers={
                "X-SSL-Client-Cert": quote(asgi.pki.path("client").read_text(), safe=""),
                "X-SSL-Client-Verify": "SUCCESS",
                "X-Forwarded-Proto": "https",
            },
        )
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 401, body
    assert body["reason"] == "untrusted_proxy"
    assert "came from the unix socket without the proxy secret header" in body["detail"]


def test_uvicorn_a_60_kb_certificate_gets_certauths_refusal_and_an_audit_row(asgi: E2EStack) -> None:
    """A certificate nginx forwards reaches certauth under uvicorn, which refuses it with a reason and an audit
    row.  (h11 applies --h11-max-incomplete-event-size, default 16 KiB, only while a header block is still
    incomplete after a read; nginx's one write over the socket usually arrives whole, so this passes with the
    default too.  The shipped size covers header blocks that arrive in pieces.)"""
    from .support import audit_counts
    from .test_edge import _big_certificate

    big, size = _big_certificate(asgi, "big-asgi", self_signed=False)
    assert size >= 60 * 1024
    before = sum(audit_counts(asgi).values())
    response = big.session(asgi.pki.path("ca")).get(asgi.url("/api/whoami/"), timeout=60)
    assert response.status_code == 401, response.text[:300]
    assert response.json()["reason"] in {"malformed_certificate", "untrusted_issuer"}, response.json()
    assert sum(audit_counts(asgi).values()) == before + 1
