"""Which peers may forward a client certificate, and what their verdicts mean.  Pure Python."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from .reasons import Reason

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8", "::1"]`` -> networks.  Raises ``ValueError`` on a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


class ProxyAllowList:
    """An allow-list of proxy addresses (IPs and CIDRs).  Membership answers are memoised per address,
    so the per-request cost is one dictionary lookup."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = parse_networks(entries)
        self._contains = lru_cache(maxsize=4096)(self._lookup)

    def _lookup(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and bool(address) and self._contains(address)

    def __bool__(self) -> bool:
        return bool(self.networks)

    @property
    def loopback_only(self) -> bool:
        return all(net.is_loopback for net in self.networks)


def reason_for_proxy_verdict(verdict: str) -> Reason | None:
    """Map nginx's ``$ssl_client_verify`` (``SUCCESS``, ``NONE``, ``FAILED:<openssl reason>``) to a
    reason code; ``None`` means the proxy verified the certificate."""
    verdict = verdict.strip()
    if verdict == "SUCCESS":
        return None
    text = verdict.lower()
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
    if "crl" in text:
        return Reason.CRL_UNAVAILABLE
    if "purpose" in text:
        return Reason.WRONG_USAGE
    return Reason.PROXY_VERIFICATION_FAILED
