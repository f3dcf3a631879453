"""Outbound fetches (certauth.fetch, and crl-refresh on top of it) against real local servers on loopback: the
remote end is hostile (redirects to other schemes, endless redirects, a trickle, multi-line replies, a trickled
head, endless interim heads or trailer lines, names with many dead addresses or a rebinding answer)."""

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
            outbound._addresses(outbound._target(url), outbound._Deadline(5), public_only=True)
    outbound._addresses(outbound._target("http://8.8.8.8/crl"), outbound._Deadline(5), public_only=True)  # allowed


# --- a raw peer that scripts every byte (attack review 1) ------------------------------------------------------
class RawServer:
    """Accepts connections on 127.0.0.1:<kernel's port>, reads the request head, then runs ``script(conn)``."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        # Set when a script streamed its hostile part to the end: the fetch stayed on the line all along.
        self.streamed_to_end = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/x") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    piece = conn.recv(4096)
                    if not piece:
                        return
                    head += piece
                self.script(conn)
            except OSError:
                pass  # the client hung up: what a bounded fetch does

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    started: list[RawServer] = []

    def start(script: Callable[[socket.socket], None]) -> RawServer:
        server = RawServer(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _serve_once(data: bytes) -> RawServer:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(data) + data)

    return RawServer(script)


#: How long each hostile peer below keeps streaming while the fetch stays on the line; every fetch has a 1 s
#: deadline, so "cut before the peer finished" is unambiguous even on a slow, shared machine.
STREAM_SECONDS = 30.0


def _for_a_while(server: RawServer, conn: socket.socket, piece: bytes, pause: float) -> None:
    until = time.monotonic() + STREAM_SECONDS
    while time.monotonic() < until:
        conn.sendall(piece)
        time.sleep(pause)
    server.streamed_to_end.set()


# --- the deadline and the size bound cover the whole response, not only the body -------------------------------
def test_fetch_deadline_covers_a_trickled_response_header(raw_server: Callable[..., RawServer]) -> None:
    """A header line trickled one byte at a time (each byte well within a per-read timeout) is cut at the
    fetch's deadline: OCSP runs this inline on a request, so one responder must not pin a worker."""
    from certauth import fetch as outbound

    servers: list[RawServer] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        _for_a_while(servers[0], conn, b"a", 0.1)
        conn.sendall(b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    servers.append(raw_server(script))
    with pytest.raises(outbound.FetchError, match=r"^timed out$"):
        outbound.fetch(servers[0].url(), timeout=1.0, max_bytes=1024)
    assert not servers[0].streamed_to_end.is_set()  # hung up while the peer was still trickling


def test_fetch_deadline_covers_an_endless_run_of_100_continue_heads(raw_server: Callable[..., RawServer]) -> None:
    """http.client skips any number of interim 100 responses inside getresponse(): a peer streaming them
    (never stalling) is cut by the deadline or the size bound all the same."""
    from certauth import fetch as outbound

    servers: list[RawServer] = []

    def script(conn: socket.socket) -> None:
        _for_a_while(servers[0], conn, b"HTTP/1.1 100 Continue\r\n\r\n" * 20, 0.01)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    servers.append(raw_server(script))
    with pytest.raises(outbound.FetchError):
        outbound.fetch(servers[0].url(), timeout=1.0, max_bytes=1024)
    assert not servers[0].streamed_to_end.is_set()


def test_fetch_bounds_a_chunked_trailer(raw_server: Callable[..., RawServer]) -> None:
    """After the last chunk http.client reads and discards trailer lines until a blank one, inside a single
    read: those bytes count against the size bound and the deadline like any other."""
    from certauth import fetch as outbound

    servers: list[RawServer] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n")
        _for_a_while(servers[0], conn, b"X-Trailer: " + b"t" * 1000 + b"\r\n", 0.002)
        conn.sendall(b"\r\n")

    servers.append(raw_server(script))
    with pytest.raises(outbound.FetchError):
        outbound.fetch(servers[0].url(), timeout=1.0, max_bytes=1024)
    assert not servers[0].streamed_to_end.is_set()


# --- every address of a name, and exactly the address that was checked ----------------------------------------
def _blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket whose accept queue is full: the kernel drops further SYNs, a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    return listener, fillers


def test_fetch_deadline_covers_every_address_of_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with N addresses that drop SYNs must not hold the fetch N times the deadline (a distribution
    point's or a responder's DNS lists as many as it likes).  The name's resolution is the one thing faked."""
    from certauth import fetch as outbound

    holes = [_blackhole() for _ in range(3)]
    last = socket.socket()  # the name's last address: a server that would answer
    last.bind(("127.0.0.1", 0))
    last.listen(4)
    addresses = [listener.getsockname() for listener, _ in holes] + [last.getsockname()]
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "many.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in addresses]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        with pytest.raises(outbound.FetchError, match=r"^timed out$"):
            outbound.fetch("http://many.example/ca.crl", timeout=1.0, max_bytes=1024)
        # The first dead address alone uses up the 1 s: the fetch gives up before it ever reaches the fourth
        # (with a whole second per address it would connect there after ~3 s).
        last.settimeout(0.5)
        with pytest.raises(TimeoutError):
            last.accept()[0].close()
    finally:
        last.close()
        for listener, fillers in holes:
            listener.close()
            for filler in fillers:
                filler.close()


def test_a_redirect_target_cannot_rebind_into_our_network_between_check_and_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a public first hop, a redirect target's name answers a public address to the private-address
    check and 127.0.0.1 to any later lookup (TTL 0): the fetch resolves it once and connects to exactly the
    address it checked, so the GET never reaches the internal service (nor tells its port's state).

    A sandbox has neither public addresses nor a DNS server: the resolver and the first hop's peer address are
    the two things faked here (both stdlib); every socket is real."""
    from certauth import fetch as outbound

    internal_hits: list[bytes] = []

    def internal_script(conn: socket.socket) -> None:
        internal_hits.append(b"GET")  # RawServer read the request head before calling us

    internal = RawServer(internal_script)

    def public_script(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: http://rebind.example:%d/latest/meta-data/\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n" % internal.port
        )

    public = RawServer(public_script)
    real_resolve, real_peer = socket.getaddrinfo, socket.socket.getpeername
    lookups = {"rebind.example": 0}

    def resolve(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "public.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        if host == "rebind.example":
            lookups[host] += 1
            address = "93.184.216.34" if lookups[host] == 1 else "127.0.0.1"  # TTL 0: the check, then the connect
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_resolve(host, port, *args, **kwargs)

    def peer(sock):  # type: ignore[no-untyped-def]
        address = real_peer(sock)
        return ("93.184.216.34", address[1]) if address[1] == public.port else address

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket.socket, "getpeername", peer)
    try:
        # The vetted address, 93.184.216.34, is unreachable from the sandbox: any FetchError is fine.
        with pytest.raises(outbound.FetchError):
            outbound.fetch(f"http://public.example:{public.port}/ca.crl", timeout=5.0, max_bytes=1024)
    finally:
        public.close()
        internal.close()
    assert internal_hits == [], "the redirect reached the internal address the check had refused"


# --- whatever the remote sends, fetch() raises FetchError and one authority stops no other ---------------------
@pytest.mark.django_db
def test_a_redirect_to_a_host_with_a_space_is_a_fetch_error_and_stops_no_other_crl() -> None:
    """A 302 to ``http://x y/`` once escaped fetch() as http.client.InvalidURL: refresh_due_crls lost every
    authority's refresh in the run, ``crl-refresh --loop`` died, the admin's "Fetch the CRL now" answered 500."""
    from certauth import fetch as outbound
    from certauth.authorities import add_authority, refresh_due_crls

    def redirect(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://x y/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    good_ca, bad_ca = devpki.make_ca("fine CA"), devpki.make_ca("redirecting CA")
    fine = _serve_once(devpki.make_crl(good_ca, [5]).public_bytes(serialization.Encoding.DER))
    hostile = RawServer(redirect)
    try:
        add_authority("a redirecting", bad_ca.cert_pem(), crl_url=hostile.url("/ca.crl"))
        add_authority("b fine", good_ca.cert_pem(), crl_url=fine.url("/ca.crl"))
        with pytest.raises(outbound.FetchError, match=r"^redirect refused$"):
            outbound.fetch(hostile.url("/ca.crl"), timeout=5, max_bytes=1024)
        results = refresh_due_crls()
    finally:
        fine.close()
        hostile.close()
    assert [(r.authority, r.ok) for r in results] == [("a redirecting", False), ("b fine", True)]
    assert "x y" not in results[0].message  # a fixed text, never the remote's redirect target


def test_a_url_host_is_an_ip_literal_or_an_ascii_host_name() -> None:
    """Checked where the URL is read (a redirect's too), so nothing the remote writes reaches http.client as a
    host it would refuse with its own exception (or send on the wire)."""
    from certauth import fetch as outbound

    for url in (
        "http://x y/",
        "http://a..b/",
        "http://-a.example/",
        "http://a%0d%0ab/",
        "http://[::1/",
    ):
        with pytest.raises(outbound.FetchError, match=r"^invalid URL$"):
            outbound._target(url)
    assert outbound._target("http://Bücher.Example/ca.crl").host == "xn--bcher-kva.example"
    assert outbound._target("https://[::1]:8443/").host == "::1"
    assert outbound._target("http://_acme.crl.example./").host == "_acme.crl.example."


def _resolving(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[tuple[str, int]]]) -> None:
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in names[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_a_name_with_several_addresses_is_tried_address_by_address(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting to the resolved addresses ourselves keeps what create_connection did: a refused address is
    skipped for the next one, within the same deadline."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_address = closed.getsockname()
    closed.close()
    server.routes["/ca.crl"] = body(b"the crl")
    _resolving(monkeypatch, {"two.example": [closed_address, ("127.0.0.1", server.port)]})
    assert fetch("http://two.example/ca.crl", timeout=5, max_bytes=1024) == b"the crl"
    assert server.hits == ["/ca.crl"]


def test_https_connects_to_the_checked_address_and_verifies_the_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The socket is connected to the address, TLS is still about the name: SNI and the Host header carry it,
    and a certificate for another name is refused.  The fetcher's trust store is the one thing widened (to a
    devpki CA); the server, its certificate and every socket are real."""
    import ssl

    from certauth import fetch as outbound

    ca = devpki.make_ca("fetch test CA")
    leaf = devpki.issue_server(ca, ["crl.example"])
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "key.pem").write_bytes(leaf.key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen: dict[str, list[str]] = {"sni": [], "host": []}
    context.sni_callback = lambda _sock, name, _context: seen["sni"].append(name)  # type: ignore[func-returns-value]

    def talk(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += tls.recv(4096) or b"\r\n\r\n"
                seen["host"] += [line[6:].decode() for line in head.split(b"\r\n") if line.startswith(b"Host: ")]
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nthe crl")
        except OSError:
            pass  # the client refused our certificate

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    real_context = ssl.create_default_context

    def trusting_the_test_ca() -> ssl.SSLContext:
        trusting = real_context()
        trusting.load_verify_locations(cadata=ca.cert_pem().decode())
        return trusting

    monkeypatch.setattr(ssl, "create_default_context", trusting_the_test_ca)
    _resolving(monkeypatch, {"crl.example": [("127.0.0.1", port)], "other.example": [("127.0.0.1", port)]})
    try:
        assert outbound.fetch(f"https://crl.example:{port}/ca.crl", timeout=5, max_bytes=1024) == b"the crl"
        with pytest.raises(outbound.FetchError, match=r"^TLS handshake failed$"):
            outbound.fetch(f"https://other.example:{port}/ca.crl", timeout=5, max_bytes=1024)
    finally:
        listener.close()
    assert seen["sni"] == ["crl.example", "other.example"]
    assert seen["host"] == [f"crl.example:{port}"]
