"""Trusted authorities and CRLs for the benchmark (``certauth.trust`` / ``certauth.authorities``)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth import devpki

from .driver import Driver, certificate_headers, environ
from .measure import interleaved
from .report import Row, us

AUTHORITY_NAME = "certauth bench root"


def crl_pem(root: devpki.Issued, revoked_serials: int) -> bytes:
    # Serials that no bench certificate carries (random_serial_number() is 159 bits; these are tiny).
    crl = devpki.make_crl(root, range(1, revoked_serials + 1))
    return crl.public_bytes(serialization.Encoding.PEM)


def trust_root(root: devpki.Issued, revoked_serials: int = 0) -> None:
    """Make ``root`` the (only) enabled trusted authority, with a CRL of ``revoked_serials`` entries."""
    from certauth.authorities import add_authority, apply_crl
    from certauth.models import TrustedAuthority

    authority = TrustedAuthority.objects.filter(name=AUTHORITY_NAME).first()
    if authority is not None and authority.certificate_pem.encode() != root.cert_pem():
        authority.delete()  # left by an earlier run (reused database) for another root
        authority = None
    if authority is None:
        add_authority(AUTHORITY_NAME, root.cert_pem(), crl_data=crl_pem(root, revoked_serials))
        return
    apply_crl(authority, crl_pem(root, revoked_serials), root.certificate)
    authority.save()


@contextmanager
def chain_and_crl(root: devpki.Issued, revoked_serials: int) -> Iterator[None]:
    """certauth verifies the chain itself (nginx ``optional_no_ca``) and checks the issuer's CRL."""
    from .inprocess import certauth_settings

    trust_root(root, revoked_serials)
    with certauth_settings(PROXY_VERIFIES_CERTIFICATE=False, REVOCATION_MODE="crl"):
        yield


@contextmanager
def chain_and_ocsp(root: devpki.Issued, good: Sequence[x509.Certificate]) -> Iterator[str]:
    """certauth verifies the chain itself and asks a real ``openssl ocsp`` responder on loopback (configured
    on the authority) about each certificate on first sight; ``good`` are the certificates it knows.
    Yields the responder's URL."""
    from certauth.authorities import clear_trust_store
    from certauth.models import TrustedAuthority
    from scripts.ocsp_responder import OcspResponder

    from .inprocess import certauth_settings

    trust_root(root)
    with tempfile.TemporaryDirectory(prefix="certauth-bench-ocsp-") as directory:
        responder = OcspResponder(Path(directory), root, next_minutes=60)
        TrustedAuthority.objects.filter(name=AUTHORITY_NAME).update(ocsp_url=responder.url)
        clear_trust_store()
        try:
            with responder.start(good=good):
                with certauth_settings(PROXY_VERIFIES_CERTIFICATE=False, REVOCATION_MODE="ocsp"):
                    yield responder.url
        finally:
            TrustedAuthority.objects.filter(name=AUTHORITY_NAME).update(ocsp_url="")
            clear_trust_store()


def crl_scale_row(section: str, name: str, *, quick: bool) -> Row:
    """Warm request cost with a 100-entry vs a 100,000-entry CRL, and the one-off cost of re-reading a CRL."""
    from .certs import FastIssuer, escaped, register_many

    small, large = (100, 10_000) if quick else (100, 100_000)
    rounds, per_round = (1, 20) if quick else (8, 250)
    root = devpki.make_ca("certauth bench crl root")
    leaf = FastIssuer(root).issue("bench-crl-client")
    register_many("bench-crl", [leaf])
    headers = certificate_headers(escaped(leaf))
    driver = Driver()
    results = {}
    first_request_ms = {}
    from certauth.models import TrustedAuthority

    TrustedAuthority.objects.filter(name=AUTHORITY_NAME).delete()
    for size in (small, large):
        with chain_and_crl(root, size):
            env = environ("/bench/certificate/", headers)
            started = time.perf_counter()
            call = driver.caller(env)  # first request after the change: store rebuilt, CRL parsed once
            first_request_ms[size] = (time.perf_counter() - started) * 1000
            stats = interleaved(
                {"ping": driver.caller(environ("/api/ping/", headers)), "crl": call},
                rounds=rounds,
                per_round=per_round,
                warmup=50,
            )
            results[size] = stats["crl"].median_us / stats["ping"].median_us, stats["crl"]
    TrustedAuthority.objects.filter(name=AUTHORITY_NAME).delete()
    ratio = results[large][0] / results[small][0]
    return Row(
        section,
        f"CRL check, {large:,} vs {small:,} revoked serials (warm request)",
        f"{us(results[large][1].median_us)} vs {us(results[small][1].median_us)}",
        us(results[large][1].p99_us),
        f"{ratio:.2f}x",
        "independent of size (≤ 1.10x)",
        "PASS" if ratio <= 1.10 else "MISS",
        f"first request after a CRL change (parse + index once): {first_request_ms[large]:,.0f} ms vs "
        f"{first_request_ms[small]:,.0f} ms",
    )
