"""CRL serial lookup stays constant-time as the CRL grows: ``python -m bench.crl_lookup``.

Builds CRLs of 1,000 / 10,000 / 100,000 entries with ``cryptography``, parses each once with
``certauth.trust.parse_crl`` and times a million membership checks (hits and misses).  Pure: no Django.
"""

from __future__ import annotations

import datetime as dt
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certauth import devpki
from certauth.trust import parse_crl

LOOKUPS = 1_000_000


def build(ca: devpki.Issued, size: int) -> bytes:
    now = dt.datetime.now(dt.UTC)
    revoked = [
        x509.RevokedCertificateBuilder().serial_number(1_000_000 + i).revocation_date(now).build() for i in range(size)
    ]
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=ca.certificate.subject,
        last_update=now - dt.timedelta(minutes=1),
        next_update=now + dt.timedelta(days=1),
        revoked_certificates=revoked,
    ).sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.DER)


def main() -> None:
    ca = devpki.make_ca("bench CA")
    print(f"{'entries':>8} {'parse+verify (ms)':>18} {'ns per lookup':>14}")
    for size in (1_000, 10_000, 100_000):
        der = build(ca, size)
        started = time.perf_counter()
        index = parse_crl(der, ca.certificate)
        parsed = time.perf_counter() - started
        probes = [1_000_000 + (i * 7919) % (2 * size) for i in range(1000)]  # half hits, half misses
        started = time.perf_counter()
        for _ in range(LOOKUPS // len(probes)):
            for serial in probes:
                index.is_revoked(serial)
        per_lookup = (time.perf_counter() - started) / LOOKUPS * 1e9
        print(f"{size:>8} {parsed * 1000:>18.1f} {per_lookup:>14.1f}")


if __name__ == "__main__":
    main()
