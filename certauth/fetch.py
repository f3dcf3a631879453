"""Outbound HTTP fetches (CRLs, OCSP): the only place certauth talks to a server it does not control.
Pure Python on the standard library: no Django imports.

The remote end is untrusted (whoever controls a CRL distribution point or an OCSP responder, or the path to
it), so every fetch promises:

* **http(s) only, redirects checked at every hop.**  A redirect may keep its scheme or go from http to https,
  never anywhere else (ftp://, file://, https -> http), at most ``MAX_REDIRECTS`` times, and never from a
  public address to a loopback, private or link-local one (checked on the address actually connected to,
  so DNS cannot swap it after the check).  POST (OCSP) follows no redirect at all.
* **One total deadline per fetch**, enforced while connecting and while reading every chunk: a server that
  trickles one byte at a time is cut at the deadline, not each time a read stalls.
* **A size bound** checked on Content-Length and while reading.
* **Errors in our words.**  ``FetchError`` carries one of a few fixed messages ("HTTP status 404",
  "connection refused", "timed out", "too large", "redirect refused", ...): never the remote's text, its
  redirect target or the library's error string, so a stored error cannot act as a port scanner's oracle or
  forge a log line.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

#: Redirects followed per fetch (GET only).
MAX_REDIRECTS = 3
#: Read size per chunk; the deadline is re-checked between chunks.
CHUNK_BYTES = 16 * 1024
USER_AGENT = "certauth"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Allowed (from scheme, to scheme) pairs for a redirect.
_REDIRECT_SCHEMES = frozenset({("http", "http"), ("https", "https"), ("http", "https")})


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
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in path):
        raise FetchError("invalid URL")
    return _Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_global
    except ValueError:
        return False


def _refuse_non_public(target: _Target) -> None:
    try:
        addresses = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchError("name not resolved") from None
    if any(not _is_public(str(address[4][0])) for address in addresses):
        raise FetchError("redirect refused")


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise FetchError("timed out")
        return left


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
    deadline = _Deadline(float(timeout))
    target = _target(url)
    first_peer_public: bool | None = None
    for hop in range(MAX_REDIRECTS + 1):
        if first_peer_public:
            # Checked before connecting too, so that "connection refused" vs "timed out" cannot map ports
            # inside our network on a public distribution point's behalf.
            _refuse_non_public(target)
        status, location, body, peer = _exchange(target, deadline, max_bytes, data, content_type, accept)
        peer_public = _is_public(peer)
        if first_peer_public is None:
            first_peer_public = peer_public
        elif first_peer_public and not peer_public:
            # A public distribution point may not steer the fetch into our own network (the GET was already
            # sent, but nothing of the answer is used or told).
            raise FetchError("redirect refused")
        if status == 200:
            return body
        if status not in _REDIRECT_STATUSES:
            raise FetchError(f"HTTP status {int(status)}")
        if data is not None or location is None or hop == MAX_REDIRECTS:
            raise FetchError("redirect refused")
        try:
            following = _target(urljoin(f"{target.scheme}://{target.host}:{target.port}{target.path}", location))
        except FetchError:
            raise FetchError("redirect refused") from None
        if (target.scheme, following.scheme) not in _REDIRECT_SCHEMES:
            raise FetchError("redirect refused")
        target = following
    raise FetchError("redirect refused")  # pragma: no cover - the loop always returns or raises


def _exchange(
    target: _Target, deadline: _Deadline, max_bytes: int, data: bytes | None, content_type: str, accept: str
) -> tuple[int, str | None, bytes, str]:
    """One request/response.  Returns (status, Location, body of a 200 or b"", peer address)."""
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=deadline.remaining(), context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=deadline.remaining())
    response: http.client.HTTPResponse | None = None
    try:
        try:
            connection.connect()
            # Kept: http.client lets go of connection.sock once a "Connection: close" answer starts.
            sock = connection.sock
            assert sock is not None
            peer = str(sock.getpeername()[0])
            headers = {"User-Agent": USER_AGENT, "Accept": accept, "Connection": "close"}
            if data is not None:
                headers["Content-Type"] = content_type
            sock.settimeout(deadline.remaining())
            connection.request("POST" if data is not None else "GET", target.path, body=data, headers=headers)
            sock.settimeout(deadline.remaining())
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
            while True:
                # Each read waits at most what is left of the whole fetch, and read1 returns what has
                # arrived instead of waiting for the whole chunk: a trickle is cut at the deadline.
                sock.settimeout(deadline.remaining())
                chunk = response.read1(CHUNK_BYTES)
                if not chunk:
                    break
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
        except socket.gaierror:
            raise FetchError("name not resolved") from None
        except ssl.SSLError:
            raise FetchError("TLS handshake failed") from None
        except (http.client.HTTPException, ValueError):
            raise FetchError("malformed HTTP response") from None
        except OSError:
            raise FetchError("connection failed") from None
    finally:
        if response is not None:
            response.close()
        connection.close()
