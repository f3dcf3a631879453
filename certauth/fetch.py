"""Outbound HTTP fetches (CRLs, OCSP): the only place certauth talks to a server it does not control.
Pure Python on the standard library: no Django imports.

The remote end is untrusted (whoever controls a CRL distribution point or an OCSP responder, its DNS, or the
path to it), so every fetch promises:

* **http(s) only, redirects checked at every hop.**  A redirect may keep its scheme or go from http to https,
  never anywhere else (ftp://, file://, https -> http), at most ``MAX_REDIRECTS`` times, and never from a
  public address to a loopback, private or link-local one.  A URL's host must be an ASCII (or IDNA) host name
  or an IP literal.  POST (OCSP) follows no redirect at all.
* **Each name is resolved once.**  The connection goes to exactly one of the addresses that were checked
  (``http.client`` never resolves the name again), so DNS cannot swap in an internal address after the
  check; the Host header and TLS (SNI, certificate check) still use the name.
* **One total deadline per fetch**, covering everything: the name's lookup, the connect to each of its
  addresses in turn, the TLS handshake, and every read of the status line, headers, interim ``100`` heads,
  body, chunk framing and trailer.  Each blocking call waits at most what is left, so a server that trickles
  one byte at a time, or streams endless headers, is cut at the deadline, not each time a read stalls.
* **A size bound** on the body (``max_bytes``, checked on Content-Length and while reading) and on
  everything received (``max_bytes`` + ``MAX_HEAD_BYTES`` for status lines, headers and framing).
* **Errors in our words, and only ``FetchError``.**  ``str()`` is one of a few fixed messages ("HTTP status
  404", "connection refused", "timed out", "too large", "redirect refused", ...): never the remote's text, its
  redirect target or the library's error string, so a stored error cannot act as a port scanner's oracle or
  forge a log line.  Anything unexpected becomes "connection failed" (its traceback is logged at debug).
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

logger = logging.getLogger(__name__)

#: Redirects followed per fetch (GET only).
MAX_REDIRECTS = 3
#: Read size per chunk.
CHUNK_BYTES = 16 * 1024
#: Bytes received beyond ``max_bytes`` for everything that is not body: status lines, headers, interim
#: ``100 Continue`` heads (http.client skips any number of them), chunk framing and trailers.
MAX_HEAD_BYTES = 64 * 1024
#: When a name has several addresses, each connect attempt gets a fair share of what is left of the deadline,
#: but never less than this (nor more than what is left), so one address that drops SYNs does not use up the
#: whole deadline of a name that has others.
MIN_CONNECT_SECONDS = 2.0
USER_AGENT = "certauth"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Allowed (from scheme, to scheme) pairs for a redirect.
_REDIRECT_SCHEMES = frozenset({("http", "http"), ("https", "https"), ("http", "https")})
#: One label of an ASCII host name (after IDNA); underscores occur in real DNS names.
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")

#: What getaddrinfo answers: (family, type, proto, canonical name, socket address).
_Address = tuple[Any, ...]


class FetchError(Exception):
    """A fetch failed.  ``str()`` is one of a few fixed messages, safe to log, store and show."""


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError("invalid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise FetchError("only http and https URLs are fetched")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise FetchError("invalid URL")
    host = _host(parts.hostname)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in path):
        raise FetchError("invalid URL")
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def _host(hostname: str) -> str:
    """An IP literal, or the ASCII form of a host name; anything else (a space, a control character, an
    empty label) is an invalid URL, never an exception from http.client later on."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        ascii_name = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise FetchError("invalid URL") from None
    labels = ascii_name.removesuffix(".").split(".")
    if len(ascii_name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise FetchError("invalid URL")
    return ascii_name


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_global
    except ValueError:
        return False


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise FetchError("timed out")
        return left


def _addresses(target: _Target, deadline: _Deadline, *, public_only: bool) -> list[_Address]:
    """The target's addresses, from one lookup; with ``public_only``, refused when any of them is loopback,
    private or link-local (before connecting, so "connection refused" vs "timed out" maps no internal port).

    getaddrinfo has no timeout of its own: it runs in a daemon thread that the fetch waits for at most until
    its deadline.  A lookup still hanging then finishes (within the resolver's own timeouts) on its own."""
    answer: list[list[_Address] | Exception] = []

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the waiting fetch, which turns it into our words
            answer.append(exc)

    lookup = threading.Thread(target=look_up, name="certauth-fetch-resolve", daemon=True)
    lookup.start()
    lookup.join(deadline.remaining())
    if not answer:
        raise FetchError("timed out")
    [result] = answer
    if isinstance(result, (OSError, UnicodeError)) or not result:
        raise FetchError("name not resolved")
    if isinstance(result, Exception):
        raise result
    if public_only and any(not _is_public(str(address[4][0])) for address in result):
        raise FetchError("redirect refused")
    return result


def _connect(addresses: list[_Address], deadline: _Deadline) -> socket.socket:
    """A socket connected to one of ``addresses``, tried in order within the deadline."""
    failure: OSError | None = None
    for tried, (family, kind, proto, _, address) in enumerate(addresses):
        left = deadline.remaining()
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(min(left, max(left / (len(addresses) - tried), MIN_CONNECT_SECONDS)))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    assert failure is not None  # _addresses never returns an empty list
    raise failure


class _Wire:
    """The connected socket as http.client sees it (it calls only ``sendall``, ``makefile`` and ``close``):
    before each send or receive the socket waits at most what is left of the deadline, and every byte
    received counts against one budget, including those http.client reads and throws away."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, budget: int) -> None:
        self.sock = sock
        self.deadline = deadline
        self.budget = budget

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(self.deadline.remaining())
        self.sock.sendall(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_WireReader(self))

    def close(self) -> None:
        pass  # the socket belongs to _exchange, which closes it

    def receive_into(self, buffer: Any) -> int:
        self.sock.settimeout(self.deadline.remaining())
        received = self.sock.recv_into(buffer)
        self.budget -= received
        if self.budget < 0:
            raise FetchError("too large")
        return received


class _WireReader(io.RawIOBase):
    def __init__(self, wire: _Wire) -> None:
        self.wire = wire

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.wire.receive_into(buffer)


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection over a socket that is already connected (to an address that was checked), so
    http.client never resolves the name itself; the Host header still carries the name."""

    def __init__(self, target: _Target, wire: _Wire) -> None:
        super().__init__(target.host, target.port)
        self.wire = wire

    def connect(self) -> None:
        self.sock = self.wire  # type: ignore[assignment]  # http.client uses only sendall, makefile, close


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    data: bytes | None = None,
    content_type: str = "",
    accept: str = "*/*",
) -> bytes:
    """GET ``url`` (or POST ``data`` with ``content_type``) and return the body of a 200 answer, within
    ``timeout`` seconds in total and ``max_bytes``.  Raises ``FetchError`` (and nothing else)."""
    try:
        return _fetch(url, _Deadline(float(timeout)), max_bytes, data, content_type, accept)
    except FetchError:
        raise
    except Exception:
        # A path none of the mappings below foresaw: still a fixed text, so that no caller (crl-refresh's
        # loop, the admin, a request's OCSP check) is ever stopped by the remote's choice of bytes.
        logger.debug("certauth fetch failed unexpectedly", exc_info=True)
        raise FetchError("connection failed") from None


def _fetch(url: str, deadline: _Deadline, max_bytes: int, data: bytes | None, content_type: str, accept: str) -> bytes:
    target = _target(url)
    first_peer_public: bool | None = None
    for hop in range(MAX_REDIRECTS + 1):
        # A public distribution point may not steer the fetch into our own network: after a public first
        # hop, every address of a later hop must be public too.
        status, location, body, peer = _exchange(
            target, deadline, max_bytes, bool(first_peer_public), data, content_type, accept
        )
        if first_peer_public is None:
            first_peer_public = _is_public(peer)
        if status == 200:
            return body
        if status not in _REDIRECT_STATUSES:
            raise FetchError(f"HTTP status {int(status)}")
        if data is not None or location is None or hop == MAX_REDIRECTS:
            raise FetchError("redirect refused")
        try:
            host = f"[{target.host}]" if ":" in target.host else target.host  # an IPv6 literal
            following = _target(urljoin(f"{target.scheme}://{host}:{target.port}{target.path}", location))
        except FetchError:
            raise FetchError("redirect refused") from None
        if (target.scheme, following.scheme) not in _REDIRECT_SCHEMES:
            raise FetchError("redirect refused")
        target = following
    raise FetchError("redirect refused")  # pragma: no cover - the loop always returns or raises


def _exchange(
    target: _Target,
    deadline: _Deadline,
    max_bytes: int,
    public_only: bool,
    data: bytes | None,
    content_type: str,
    accept: str,
) -> tuple[int, str | None, bytes, str]:
    """One request/response.  Returns (status, Location, body of a 200 or b"", peer address)."""
    sock: socket.socket | None = None
    response: http.client.HTTPResponse | None = None
    try:
        sock = _connect(_addresses(target, deadline, public_only=public_only), deadline)
        peer = str(sock.getpeername()[0])
        if target.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(
                sock, server_hostname=target.host, do_handshake_on_connect=False
            )
            sock.settimeout(deadline.remaining())
            sock.do_handshake()
        connection = _Connection(target, _Wire(sock, deadline, max_bytes + MAX_HEAD_BYTES))
        headers = {"User-Agent": USER_AGENT, "Accept": accept, "Connection": "close"}
        if data is not None:
            headers["Content-Type"] = content_type
        connection.request("POST" if data is not None else "GET", target.path, body=data, headers=headers)
        response = connection.getresponse()
        status = response.status
        if status != 200:
            location = response.getheader("Location") if status in _REDIRECT_STATUSES else None
            return status, location, b"", peer
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > max_bytes:
            raise FetchError("too large")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise FetchError("too large")
            chunks.append(chunk)
        return status, None, b"".join(chunks), peer
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError("timed out") from None
    except ConnectionRefusedError:
        raise FetchError("connection refused") from None
    except ssl.SSLError:
        raise FetchError("TLS handshake failed") from None
    except (http.client.HTTPException, ValueError):
        raise FetchError("malformed HTTP response") from None
    except OSError:
        raise FetchError("connection failed") from None
    finally:
        if response is not None:
            response.close()
        if sock is not None:
            sock.close()
