"""Which peers may forward a client certificate, and what their verdicts mean.  Pure Python."""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from .reasons import Reason

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Header values up to this length are memoised (addresses, short X-Forwarded-For lists).
MEMOISED_LENGTH = 256


#: The ``TRUSTED_PROXIES`` entry that trusts connections accepted on a unix socket, and the peer address
#: ``peer_address`` reports for them.  A unix socket's file permissions decide who may connect (only the
#: proxy's user), which loopback TCP cannot: every local process reaches 127.0.0.1.
UNIX_SOCKET = "unix:"


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8", "::1"]`` -> networks (a ``"unix:"`` entry is no network and is
    skipped).  Raises ``ValueError`` on a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip() != UNIX_SOCKET)


def peer_address(meta: Mapping[str, Any]) -> str:
    """Who connected to the WSGI server: ``REMOTE_ADDR``, or ``UNIX_SOCKET`` for a connection accepted on
    a unix socket.  gunicorn sets ``REMOTE_ADDR`` to ``""`` there (and shows its socket, whose family says
    so); ASGI servers on a unix socket give no client address at all.  A TCP peer always has one."""
    sock = meta.get("gunicorn.socket")
    if sock is not None:
        return UNIX_SOCKET if getattr(sock, "family", None) == socket.AF_UNIX else str(meta.get("REMOTE_ADDR") or "")
    remote = meta.get("REMOTE_ADDR")
    if not remote:
        return UNIX_SOCKET
    # A REMOTE_ADDR that spells the marker came from a header, not a socket: an ASGI server's proxy headers
    # copy an X-Forwarded-For entry (any string) into the client address.  Never the unix socket; and one
    # longer than any address is none (""): never memoised by ``ProxyAllowList.trusts``, never echoed.
    return str(remote) if remote != UNIX_SOCKET and len(remote) <= MEMOISED_LENGTH else ""


def secret_matches(expected: bytes, presented: str | None) -> bool:
    """Does the proxy-secret header hold ``expected``?  Constant time in the secret's content (``hmac``),
    so a neighbour cannot learn it byte by byte; an empty expected secret never matches."""
    if not expected or presented is None:
        return False
    # WSGI header values are latin-1 strings: their bytes as sent.
    return hmac.compare_digest(expected, presented.encode("latin-1", "replace"))


class ProxyAllowList:
    """An allow-list of proxy addresses (IPs and CIDRs, and ``"unix:"`` for a unix socket).  Membership
    answers are memoised per address, so the per-request cost is one dictionary lookup."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self.networks = parse_networks(entries)
        self.unix_socket = any(entry.strip() == UNIX_SOCKET for entry in entries)
        #: ``address in self`` for a ``str`` address, without the ``__contains__`` call (the per-request path).
        self.trusts = lru_cache(maxsize=4096)(self._lookup)
        self._client_address = lru_cache(maxsize=4096)(self._read_client_address)
        self._addresses = lru_cache(maxsize=4096)(self._read_addresses)

    def _lookup(self, address: str) -> bool:
        if address == UNIX_SOCKET:
            return self.unix_socket
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and bool(address) and self.trusts(address)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix_socket

    @property
    def loopback_only(self) -> bool:
        return all(net.is_loopback for net in self.networks)

    def client_address(self, header_value: str | None) -> str | None:
        """``client_address(header_value, self)``, memoised by the exact header value (bounded: at most
        4096 values of up to ``MEMOISED_LENGTH`` characters each; longer values are computed each time)."""
        if header_value is not None and len(header_value) > MEMOISED_LENGTH:
            return client_address(header_value, self)
        return self._client_address(header_value)

    def _read_client_address(self, header_value: str | None) -> str | None:
        return client_address(header_value, self)

    def addresses(self, peer: str, header_value: str | None) -> tuple[str | None, str | None]:
        """``(client_ip, proxy_ip)`` of a request from the trusted proxy ``peer``: the client address in
        ``header_value`` (``client_address``), else the peer's, and the peer's (``canonical_ip``).  Memoised
        like ``client_address`` (bounded: long values are computed each time)."""
        if len(peer) > MEMOISED_LENGTH or (header_value is not None and len(header_value) > MEMOISED_LENGTH):
            return self._read_addresses(peer, header_value)
        return self._addresses(peer, header_value)  # type: ignore[no-any-return]

    def _read_addresses(self, peer: str, header_value: str | None) -> tuple[str | None, str | None]:
        proxy_ip = canonical_ip(peer)
        return self.client_address(header_value) or proxy_ip, proxy_ip


def reason_for_proxy_verdict(verdict: str) -> Reason | None:
    """Map nginx's ``$ssl_client_verify`` (``SUCCESS``, ``NONE``, ``FAILED:<openssl reason>``) to a
    reason code; ``None`` means the proxy verified the certificate."""
    verdict = verdict.strip()
    if verdict == "SUCCESS":
        return None
    text = verdict.lower()
    # First: "CRL has expired" / "CRL is not yet valid" say the CRL is stale, not the certificate.
    if "crl" in text:
        return Reason.CRL_UNAVAILABLE
    if "expired" in text:
        return Reason.CERTIFICATE_EXPIRED
    if "not yet valid" in text:
        return Reason.CERTIFICATE_NOT_YET_VALID
    if "revoked" in text:
        return Reason.CRL_REVOKED
    if "self signed certificate" in text or "self-signed certificate" in text:
        return Reason.SELF_SIGNED_NOT_ALLOWED if "in certificate chain" not in text else Reason.UNTRUSTED_ISSUER
    if "unable to get local issuer" in text or "unable to get issuer" in text or "unable to verify" in text:
        return Reason.UNTRUSTED_ISSUER
    if "purpose" in text:
        return Reason.WRONG_USAGE
    return Reason.PROXY_VERIFICATION_FAILED


def canonical_ip(value: str | None) -> str | None:
    """``value`` as a canonical IP address string (an IPv6 zone dropped), or None.  Memoised (bounded), as it
    runs per request."""
    if not value or len(value) > MEMOISED_LENGTH:
        return None  # no IP address, not even IPv6 with a zone, is that long
    return _canonical_ip(value)


@lru_cache(maxsize=4096)
def _canonical_ip(value: str) -> str | None:
    # Without an IPv6 zone ("fe80::1%eth0"): a local interface name, meaningless in an audit row, and any text
    # at all to ipaddress (line breaks, a forged log record) that PostgreSQL's inet column refuses outright,
    # which would lose the row.  ProxyAllowList ignores the zone too.
    try:
        return str(ipaddress.ip_address(value.strip().split("%", 1)[0]))
    except ValueError:
        return None


def _address(entry: str) -> str | None:
    """One forwarded address: ``203.0.113.7``, ``2001:db8::1``, or with a port (``203.0.113.7:5678``,
    ``[2001:db8::1]:443``, as some load balancers write it).  None when it is not an address."""
    entry = entry.strip()
    if entry.startswith("[") and "]" in entry:
        entry = entry[1 : entry.index("]")]
    elif entry.count(":") == 1:
        entry = entry.split(":", 1)[0]
    return canonical_ip(entry)


def forwarded_addresses(header_value: str) -> set[str]:
    """Every address in an ``X-Forwarded-For`` value, canonical (entries that are no address left out)."""
    return {address for entry in header_value.split(",") if (address := _address(entry)) is not None}


def client_address(header_value: str | None, trusted: ProxyAllowList) -> str | None:
    """The real client address from a header a trusted proxy sent (``X-Real-IP`` or ``X-Forwarded-For``).

    A list (``X-Forwarded-For: a, b, c``) is read from the right: each proxy appends the address it saw,
    so the right-most entries are the only ones a trusted proxy wrote; entries that are themselves trusted
    proxies are skipped and the first other address is the client.  Entries further left were written by
    the client and are never believed.  None when the header is absent or its right-most untrusted entry
    is not an address (then the caller falls back to the connecting address)."""
    if not header_value:
        return None
    address: str | None = None
    for entry in reversed(header_value.split(",")):
        address = _address(entry)
        if address is None or address not in trusted:
            return address
    return address
