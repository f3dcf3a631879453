"""A catalogue of hostile or broken forwarded values.  Each one gets a 401 with the right reason code
and an audit row — never an exception, never a 200."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from django.test import override_settings

from certauth import devpki
from certauth.models import AuthenticationFailure

from . import derutil
from .conftest import FixturePKI, escaped

pytestmark = pytest.mark.django_db


def pem_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def esc(data: bytes | str) -> str:
    return quote(data if isinstance(data, str) else data.decode("latin-1"), safe="")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[FixturePKI, dict[str, Any]], str]
    reason: str
    forwarding_format: str = "nginx_escaped"


def _builder(issuer: devpki.Issued, public_key: Any, subject: x509.Name | None = None) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject if subject is not None else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("odd.example")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )


def _sign(builder: x509.CertificateBuilder, issuer: devpki.Issued) -> x509.Certificate:
    return builder.sign(issuer.private_key, hashes.SHA256())  # type: ignore[arg-type]


def rsa_material(cache: dict[str, Any]) -> tuple[devpki.Issued, devpki.Issued]:
    if "rsa" not in cache:
        ca = devpki.make_ca("rsa test ca", key_type="rsa")
        cache["rsa"] = (ca, devpki.issue_client(ca, "rsa-client", key_type="rsa"))
    return cache["rsa"]


def resigned(cache: dict[str, Any], **kwargs: Any) -> str:
    ca, leaf = rsa_material(cache)
    return esc(pem_of(derutil.resign(leaf.certificate, ca.private_key, **kwargs)))


def set_serial(value: int) -> Callable[[list[bytes]], list[bytes]]:
    def transform(fields: list[bytes]) -> list[bytes]:
        fields[1] = derutil.integer(value)
        return fields

    return transform


def drop_version_and_extensions(fields: list[bytes]) -> list[bytes]:
    return [field for field in fields if field[0] not in (0xA0, 0xA3)]


def no_subject(pki: FixturePKI, cache: dict[str, Any]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return esc(pem_of(_sign(_builder(pki.root, key.public_key(), x509.Name([])), pki.root)))


def many_sans(pki: FixturePKI, cache: dict[str, Any]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(pki.root, key.public_key())
    builder._extensions = []  # replace the default SAN
    names = [x509.DNSName(f"host-{i}.example") for i in range(3000)]
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return esc(pem_of(_sign(builder, pki.root)))


def weak_rsa_512(pki: FixturePKI, cache: dict[str, Any]) -> str:
    modulus = secrets.randbits(512) | (1 << 511) | 1
    public_key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    return esc(pem_of(_sign(_builder(pki.root, public_key), pki.root)))


def critical_unknown_extension(pki: FixturePKI, cache: dict[str, Any]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    extension = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    return esc(pem_of(_sign(_builder(pki.root, key.public_key()).add_extension(extension, critical=True), pki.root)))


def ca_as_client(pki: FixturePKI, cache: dict[str, Any]) -> str:
    return escaped(pki.intermediate)


def csr(pki: FixturePKI, cache: dict[str, Any]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr")]))
        .sign(key, hashes.SHA256())
    )
    return esc(request.public_bytes(serialization.Encoding.PEM))


def crl(pki: FixturePKI, cache: dict[str, Any]) -> str:
    return esc(devpki.make_crl(pki.root, [1, 2, 3]).public_bytes(serialization.Encoding.PEM))


def client_pem(pki: FixturePKI) -> str:
    return pki.client.cert_pem().decode()


def b64_der(pki: FixturePKI) -> str:
    return base64.b64encode(derutil.der_bytes(pki.client.certificate)).decode()


CASES = [
    Case("truncated PEM", lambda p, c: esc(client_pem(p)[:300]), "malformed_certificate"),
    Case(
        "PEM body cut short",
        lambda p, c: esc(client_pem(p)[:200] + "\n-----END CERTIFICATE-----\n"),
        "malformed_certificate",
    ),
    Case("PEM with junk before", lambda p, c: esc("hello\n" + client_pem(p)), "malformed_certificate"),
    Case("PEM with junk after", lambda p, c: esc(client_pem(p) + "trailing junk"), "malformed_certificate"),
    Case("two certificates", lambda p, c: esc(client_pem(p) + p.root.cert_pem().decode()), "malformed_certificate"),
    Case("a private key", lambda p, c: esc(p.client.key_pem()), "malformed_certificate"),
    Case(
        "a private key after the certificate",
        lambda p, c: esc(client_pem(p) + p.client.key_pem().decode()),
        "malformed_certificate",
    ),
    Case("a CSR", csr, "malformed_certificate"),
    Case("a CRL", crl, "malformed_certificate"),
    Case(
        "DER garbage as base64",
        lambda p, c: base64.b64encode(b"\x30\x82\x01\x00" + b"\x00" * 50).decode(),
        "malformed_certificate",
        "base64_der",
    ),
    Case("wrong base64 padding", lambda p, c: b64_der(p).rstrip("=") + "===", "malformed_certificate", "base64_der"),
    Case("base64 with invalid characters", lambda p, c: "!!" + b64_der(p), "malformed_certificate", "base64_der"),
    Case(
        "broken URL escape",
        lambda p, c: escaped(p.client)[:40] + "%G1" + escaped(p.client)[40:],
        "malformed_certificate",
    ),
    Case("dangling URL escape", lambda p, c: escaped(p.client) + "%2", "malformed_certificate"),
    Case(
        "escaped NUL byte",
        lambda p, c: escaped(p.client)[:60] + "%00" + escaped(p.client)[60:],
        "malformed_certificate",
    ),
    Case(
        "raw NUL byte", lambda p, c: escaped(p.client)[:60] + "\x00" + escaped(p.client)[60:], "malformed_certificate"
    ),
    Case("non-ASCII", lambda p, c: escaped(p.client)[:60] + "é" + escaped(p.client)[60:], "malformed_certificate"),
    Case(
        "escaped non-ASCII bytes",
        lambda p, c: escaped(p.client)[:60] + "%C3%A9" + escaped(p.client)[60:],
        "malformed_certificate",
    ),
    Case("1 MB value", lambda p, c: "A" * (1024 * 1024), "malformed_certificate"),
    Case(
        "wrong PEM label", lambda p, c: esc(client_pem(p).replace("CERTIFICATE", "X509 CRL")), "malformed_certificate"
    ),
    Case("a certificate with no subject", no_subject, "unknown_certificate"),
    Case("a negative serial", lambda p, c: resigned(c, transform=set_serial(-12345)), "malformed_certificate"),
    Case("a zero serial", lambda p, c: resigned(c, transform=set_serial(0)), "malformed_certificate"),
    Case("a 38-octet serial", lambda p, c: resigned(c, transform=set_serial(1 << 300)), "malformed_certificate"),
    Case("thousands of SANs", many_sans, "malformed_certificate"),  # larger than MAX_FORWARDED_LENGTH
    Case("an MD5-signed certificate", lambda p, c: resigned(c, digest="md5"), "weak_certificate"),
    Case("a SHA-1-signed certificate", lambda p, c: resigned(c, digest="sha1"), "weak_certificate"),
    Case("a 512-bit RSA key", weak_rsa_512, "weak_certificate"),
    Case("a critical unknown extension", critical_unknown_extension, "unsupported_certificate"),
    Case(
        "a v1 certificate", lambda p, c: resigned(c, transform=drop_version_and_extensions), "unsupported_certificate"
    ),
    Case("a CA certificate as client", ca_as_client, "wrong_usage"),
    Case("serverAuth-only EKU", lambda p, c: escaped(p.server_usage), "wrong_usage"),
    Case("RFC 9440 without colons", lambda p, c: b64_der(p), "malformed_certificate", "rfc9440"),
    Case("RFC 9440 with a list", lambda p, c: f":{b64_der(p)}:, :{b64_der(p)}:", "malformed_certificate", "rfc9440"),
    Case(
        "nginx legacy with garbage",
        lambda p, c: "-----BEGIN CERTIFICATE-----\n\tAAA\n-----END CERTIFICATE-----",
        "malformed_certificate",
        "nginx_legacy",
    ),
]


@pytest.fixture(scope="module")
def material_cache() -> dict[str, Any]:
    return {}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_value_is_refused_with_reason_and_audited(case: Case, api, pki, register, material_cache) -> None:
    register(pki.client)  # the genuine certificate is registered: nothing hostile may borrow its identity
    value = case.build(pki, material_cache)
    with override_settings(CERTAUTH={"FORWARDING_FORMAT": case.forwarding_format}):
        response = api.get("/api/whoami/", value)
    assert response.status_code == 401, (case.name, response.content[:300])
    assert response.json()["reason"] == case.reason, case.name
    rows = AuthenticationFailure.objects.filter(reason=case.reason)
    assert rows.count() == 1 and rows.get().count == 1, case.name


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_or_blank_header_is_a_missing_certificate(value: str, api) -> None:
    response = api.get("/api/whoami/", value)
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_certificate"
    assert AuthenticationFailure.objects.filter(reason="missing_certificate").count() == 1


def nul_in_names(pki: FixturePKI, cache: dict[str, Any]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil\x00attacker\nforged-line")])
    return esc(pem_of(_sign(_builder(pki.root, key.public_key(), subject), pki.root)))


def test_control_characters_in_names_are_audited_escaped(api, pki, register) -> None:
    """A NUL in a certificate name must not suppress the audit row (PostgreSQL text refuses NUL) nor forge
    log lines: names are stored and logged with control characters escaped."""
    response = api.get("/api/whoami/", nul_in_names(pki, {}))
    assert response.status_code == 401 and response.json()["reason"] == "unknown_certificate"
    [row] = AuthenticationFailure.objects.filter(reason="unknown_certificate")
    assert row.subject_cn == "evil\\x00attacker\\x0aforged-line"
    assert "\x00" not in row.subject and "\n" not in row.subject
