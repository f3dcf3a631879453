"""Outbound fetches (certauth.fetch, and crl-refresh on top of it) against real local servers on loopback: the
remote end is hostile (redirects to other schemes, endless redirects, a trickle, multi-line replies)."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.test import override_settings

from certauth import devpki
from certauth.authorities import CrlFetchError as FetchError
from certauth.authorities import fetch_crl

MAX_REDIRECTS = 3


def fetch(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """crl-refresh's download (certauth.fetch underneath)."""
    return fetch_crl(url, timeout=timeout, max_bytes=max_bytes)


FORGED = "certauth refused reason=forged_line"


class Server:
    """An http.server on 127.0.0.1:<kernel's port> whose answers are set per path by the test."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.close()


def redirect(location: str, status: int = 302) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def body(data: bytes) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


class FtpServer:
    """Speaks just enough FTP to answer every command with a multi-line reply that carries a forged log line.
    Records every connection it accepts."""

    REPLY = f"530-Login incorrect\r\n{FORGED} detail=x\r\n530 end\r\n".encode()

    def __init__(self) -> None:
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(b"220 hello\r\n")
                conn.settimeout(5)
                while conn.recv(1024):
                    conn.sendall(self.REPLY)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ftp() -> Iterator[FtpServer]:
    running = FtpServer()
    try:
        yield running
    finally:
        running.close()


# --- redirects ----------------------------------------------------------------------------------------------
def test_a_redirect_to_ftp_is_refused_before_any_ftp_is_spoken(server: Server, ftp: FtpServer) -> None:
    server.routes["/ca.crl"] = redirect(f"ftp://127.0.0.1:{ftp.port}/ca.crl")
    with pytest.raises(FetchError) as info:
        fetch(server.url("/ca.crl"), timeout=5, max_bytes=1024)
    assert str(info.value) == "redirect refused"
    assert ftp.connections == 0


def test_a_redirect_to_file_or_a_bare_scheme_is_refused(server: Server) -> None:
    server.routes["/file"] = redirect("file:///etc/passwd")
    server.routes["/gopher"] = redirect("gopher://127.0.0.1:70/x")
    for path in ("/file", "/gopher"):
        with pytest.raises(FetchError, match=r"^redirect refused$"):
            fetch(server.url(path), timeout=5, max_bytes=1024)
    with pytest.raises(FetchError, match=r"^only http and https URLs are fetched$"):
        fetch("ftp://127.0.0.1/ca.crl", timeout=5, max_bytes=1024)


def test_a_post_follows_no_redirect(server: Server) -> None:
    from certauth import fetch as outbound

    assert outbound.MAX_REDIRECTS == MAX_REDIRECTS
    server.routes["/ocsp"] = redirect("/elsewhere", 307)
    with pytest.raises(outbound.FetchError, match=r"^redirect refused$"):
        outbound.fetch(server.url("/ocsp"), timeout=5, max_bytes=1024, data=b"q", content_type="x/y")


def test_a_redirect_chain_longer_than_the_limit_is_refused(server: Server) -> None:
    for hop in range(20):
        server.routes[f"/r/{hop}"] = redirect(f"/r/{hop + 1}")
    with pytest.raises(FetchError, match=r"^redirect refused$"):
        fetch(server.url("/r/0"), timeout=5, max_bytes=1024)
    assert len(server.hits) == MAX_REDIRECTS + 1


def test_a_short_redirect_chain_on_the_same_scheme_is_followed(server: Server) -> None:
    server.routes["/old.crl"] = redirect("/mid.crl", 301)
    server.routes["/mid.crl"] = redirect(server.url("/ca.crl"), 307)
    server.routes["/ca.crl"] = body(b"the crl")
    assert fetch(server.url("/old.crl"), timeout=5, max_bytes=1024) == b"the crl"


def test_errors_are_fixed_texts_that_do_not_echo_the_remote(server: Server) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nobody listens there now
    server.routes["/to-closed"] = redirect(f"http://127.0.0.1:{closed_port}/secret-path")
    server.routes["/big"] = body(b"x" * 5000)

    def chatty_404(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(404, f"Not here\r\n{FORGED}")
        handler.end_headers()
        handler.wfile.write(f"{FORGED}\n".encode())

    server.routes["/chatty"] = chatty_404
    cases = {"/to-closed": "connection refused", "/big": "too large", "/missing": "HTTP status 404"}
    for path, message in cases.items():
        with pytest.raises(FetchError) as info:
            fetch(server.url(path), timeout=5, max_bytes=1024)
        assert str(info.value) == message
    with pytest.raises(FetchError) as info:
        fetch(server.url("/chatty"), timeout=5, max_bytes=1024)
    assert "forged" not in str(info.value) and "\n" not in str(info.value)


# --- crl-refresh on top of it ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_multiline_remote_reply_never_forges_a_log_line_nor_reaches_the_admin_raw(
    server: Server, ftp: FtpServer, caplog: pytest.LogCaptureFixture, admin_client: Any
) -> None:
    from certauth.authorities import add_authority, refresh_due_crls
    from certauth.models import TrustedAuthority

    ca = devpki.make_ca("ftp redirected CA")
    server.routes["/ca.crl"] = redirect(f"ftp://127.0.0.1:{ftp.port}/ca.crl")
    row = add_authority("redirected", ca.cert_pem(), crl_url=server.url("/ca.crl"))
    with caplog.at_level(logging.WARNING, logger="certauth"):
        [result] = refresh_due_crls()
    assert not result.ok and "redirect refused" in result.message
    for line in caplog.text.splitlines():
        assert not line.startswith("certauth refused")
    assert "forged" not in caplog.text
    row = TrustedAuthority.objects.get(pk=row.pk)
    assert "\n" not in row.crl_error and "forged" not in row.crl_error
    page = admin_client.get(f"/admin/certauth/trustedauthority/{row.pk}/change/").content.decode()
    assert "forged" not in page and "redirect refused" in page


@pytest.mark.django_db
def test_a_trickling_distribution_point_is_cut_at_the_deadline_and_delays_no_other_authority(
    server: Server,
) -> None:
    from certauth.authorities import add_authority, refresh_due_crls

    slow_ca, fast_ca = devpki.make_ca("slow CA"), devpki.make_ca("fast CA")
    trickle_bytes = 200
    state = {"sent": 0, "finished": False}

    def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(trickle_bytes))
        handler.end_headers()
        try:
            for _ in range(trickle_bytes):
                handler.wfile.write(b"0")
                handler.wfile.flush()
                state["sent"] += 1
                time.sleep(0.05)  # 200 bytes take ~10 s: far past the 1 s deadline
            state["finished"] = True
        except OSError:
            pass  # the client hung up: what we want

    server.routes["/slow.crl"] = trickle
    server.routes["/fast.crl"] = body(devpki.make_crl(fast_ca, [7]).public_bytes(serialization.Encoding.DER))
    # Names sort the slow authority first: a sequential refresh would reach the fast one only afterwards.
    add_authority("a slow", slow_ca.cert_pem(), crl_url=server.url("/slow.crl"))
    add_authority("b fast", fast_ca.cert_pem(), crl_url=server.url("/fast.crl"))
    with override_settings(CERTAUTH={"CRL_FETCH_TIMEOUT_SECONDS": 1.0}):
        slow, quick = refresh_due_crls()
    assert not slow.ok and slow.message.endswith("timed out")
    assert not state["finished"] and state["sent"] < trickle_bytes
    assert quick.ok, quick.message  # the same run still refreshed the other authority


def test_a_public_distribution_point_cannot_redirect_into_our_network() -> None:
    """After a public first hop, every later hop is resolved and refused before connecting when any of its
    addresses is loopback, private or link-local (no connect, so no "refused" vs "timed out" port oracle).
    The tests cannot run a public server; the check itself is exercised on literal addresses."""
    from certauth import fetch as outbound

    for url in ("http://127.0.0.1:22/", "http://10.1.2.3/", "http://169.254.169.254/latest/", "http://[::1]/"):
        with pytest.raises(outbound.FetchError, match=r"^redirect refused$"):
            outbound._refuse_non_public(outbound._target(url))
    outbound._refuse_non_public(outbound._target("http://8.8.8.8/crl"))  # public: allowed
