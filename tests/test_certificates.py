"""Thumbprints and certificate facts (pure layer)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from certauth.certificates import (
    describe,
    format_thumbprint,
    load_certificate,
    load_certificates,
    normalize_thumbprint,
)
from certauth.reasons import CertificateRefused, Reason

CANONICAL = "3f" * 32


@pytest.mark.parametrize(
    "spelling",
    [
        CANONICAL,
        CANONICAL.upper(),
        ":".join(CANONICAL[i : i + 2] for i in range(0, 64, 2)),
        ":".join(CANONICAL[i : i + 2] for i in range(0, 64, 2)).upper(),
        " ".join(CANONICAL[i : i + 2] for i in range(0, 64, 2)),
        "-".join(CANONICAL[i : i + 4] for i in range(0, 64, 4)),
        f"  {CANONICAL}\n",
        f"SHA256 Fingerprint={format_thumbprint(CANONICAL)}",
        f"sha256:{CANONICAL}",
    ],
)
def test_every_thumbprint_spelling_normalizes(spelling: str) -> None:
    assert normalize_thumbprint(spelling) == CANONICAL


@pytest.mark.parametrize("bad", ["", "abc", "3f" * 31, "3f" * 33, "zz" * 32, CANONICAL + "0", "3f" * 20 + "🙂"])
def test_bad_thumbprints_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_thumbprint(bad)


@given(st.binary(min_size=32, max_size=32), st.sampled_from(["", ":", " ", "-"]), st.booleans())
def test_thumbprint_roundtrip_any_separator_and_case(raw: bytes, sep: str, upper: bool) -> None:
    hexed = raw.hex()
    text = sep.join(hexed[i : i + 2] for i in range(0, 64, 2))
    assert normalize_thumbprint(text.upper() if upper else text) == hexed


@given(st.text(max_size=200))
def test_normalize_thumbprint_never_raises_anything_but_valueerror(text: str) -> None:
    try:
        result = normalize_thumbprint(text)
    except ValueError:
        return
    assert len(result) == 64 and all(c in "0123456789abcdef" for c in result)


def test_describe_exposes_the_facts(pki) -> None:
    info = describe(pki.client.certificate)
    der = pki.client.certificate.public_bytes(serialization.Encoding.DER)
    assert info.thumbprint_sha256 == hashlib.sha256(der).hexdigest()
    assert info.subject_cn == "billing-service"
    assert "CN=billing-service" in info.subject
    assert "certauth test root" in info.issuer
    assert info.serial_number == pki.client.certificate.serial_number
    assert info.not_after == pki.client.certificate.not_valid_after_utc
    assert info.uris and info.uris[0].startswith("spiffe://")
    assert info.allows_client_auth
    assert not describe(pki.server_usage.certificate).allows_client_auth
    assert describe(pki.self_signed.certificate).is_self_issued
    with pytest.raises(AttributeError):
        info.subject = "tampered"  # type: ignore[misc]


def test_load_pem_der_and_bundles(pki) -> None:
    pem = pki.client.cert_pem()
    der = pki.client.certificate.public_bytes(serialization.Encoding.DER)
    assert load_certificate(pem) == pki.client.certificate
    assert load_certificate(der) == pki.client.certificate
    assert len(load_certificates(pem + pki.root.cert_pem())) == 2
    with pytest.raises(CertificateRefused) as excinfo:
        load_certificate(pem + pki.root.cert_pem())
    assert excinfo.value.reason is Reason.MALFORMED_CERTIFICATE


def test_private_key_is_never_accepted_as_certificate(pki) -> None:
    with pytest.raises(CertificateRefused) as excinfo:
        load_certificates(pki.client.key_pem())
    assert "private key" in excinfo.value.detail
    with pytest.raises(CertificateRefused):
        load_certificates(pki.client.cert_pem() + pki.client.key_pem())


def test_pure_modules_do_not_import_django() -> None:
    code = (
        "import sys\n"
        "import certauth.certificates, certauth.forwarding, certauth.proxies, certauth.policy, certauth.reasons\n"
        "import certauth.lru, certauth.devpki, certauth.trust, certauth.matching, certauth.csrf, certauth.nginxconf\n"
        "import certauth.fetch, certauth.ocsp, certauth.privatefiles\n"
        "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
