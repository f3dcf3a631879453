"""Reading forwarded certificates (pure layer), including property-based tests: any input is either a
certificate or a reason code, never an exception."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from certauth.forwarding import MAX_FORWARDED_LENGTH, PARSERS, parse_chain_header, parse_forwarded
from certauth.proxies import ProxyAllowList, reason_for_proxy_verdict
from certauth.reasons import CertificateRefused, Reason


def der(issued) -> bytes:
    return issued.certificate.public_bytes(serialization.Encoding.DER)


def test_nginx_escaped(pki) -> None:
    value = quote(pki.client.cert_pem().decode(), safe="")
    assert parse_forwarded(value, "nginx_escaped").leaf == pki.client.certificate


def test_nginx_legacy_tab_continuation(pki) -> None:
    lines = pki.client.cert_pem().decode().strip().split("\n")
    value = lines[0] + "".join("\n\t" + line for line in lines[1:])
    assert parse_forwarded(value, "nginx_legacy").leaf == pki.client.certificate


def test_raw_pem_and_base64_der_and_rfc9440(pki) -> None:
    assert parse_forwarded(pki.client.cert_pem().decode(), "pem").leaf == pki.client.certificate
    b64 = base64.b64encode(der(pki.client)).decode()
    assert parse_forwarded(b64, "base64_der").leaf == pki.client.certificate
    assert parse_forwarded(f":{b64}:", "rfc9440").leaf == pki.client.certificate
    chain = parse_chain_header(f":{base64.b64encode(der(pki.intermediate)).decode()}:", "rfc9440")
    assert chain == (pki.intermediate.certificate,)


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("nginx_escaped", "%ZZ"),
        ("nginx_escaped", "-----BEGIN CERTIFICATE-----%0Agarbage%0A-----END CERTIFICATE-----"),
        ("nginx_escaped", "%2"),
        ("pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
        ("base64_der", "not base64!"),
        ("base64_der", "QUJD"),
        ("rfc9440", "QUJD"),
        ("rfc9440", ":QUJD:"),
        ("nginx_escaped", "x" * (MAX_FORWARDED_LENGTH + 1)),
        ("nginx_escaped", "   "),
        ("nginx_escaped", "caf\u00e9"),
        ("nginx_escaped", "abc\x00def"),
    ],
)
def test_malformed_values_are_a_reason_code(fmt: str, value: str) -> None:
    with pytest.raises(CertificateRefused) as excinfo:
        parse_forwarded(value, fmt)
    assert excinfo.value.reason is Reason.MALFORMED_CERTIFICATE


@given(value=st.text(max_size=3000), fmt=st.sampled_from(sorted(PARSERS)))
def test_any_text_is_a_certificate_or_a_reason_code(value: str, fmt: str) -> None:
    try:
        parsed = parse_forwarded(value, fmt)
    except CertificateRefused as refused:
        assert refused.reason is Reason.MALFORMED_CERTIFICATE
    else:
        assert parsed.leaf is not None


@given(st.binary(max_size=2000))
def test_any_bytes_as_base64_der(blob: bytes) -> None:
    try:
        parse_forwarded(base64.b64encode(blob).decode(), "base64_der")
    except CertificateRefused as refused:
        assert refused.reason is Reason.MALFORMED_CERTIFICATE


def test_mutated_real_certificate_never_crashes(pki) -> None:
    pem = pki.client.cert_pem().decode()
    for index in range(30, len(pem) - 30, 7):
        mutated = pem[:index] + ("A" if pem[index] != "A" else "B") + pem[index + 1 :]
        try:
            parse_forwarded(quote(mutated, safe=""), "nginx_escaped")
        except CertificateRefused as refused:
            assert refused.reason is Reason.MALFORMED_CERTIFICATE


def test_proxy_allow_list() -> None:
    proxies = ProxyAllowList(["127.0.0.1", "10.1.0.0/16", "::1"])
    assert "127.0.0.1" in proxies
    assert "10.1.200.3" in proxies
    assert "::1" in proxies
    assert "::ffff:127.0.0.1" in proxies
    assert "10.2.0.1" not in proxies
    assert "127.0.0.2" not in proxies
    assert "" not in proxies
    assert "not-an-ip" not in proxies
    assert not ProxyAllowList([])
    assert ProxyAllowList(["127.0.0.0/8", "::1"]).loopback_only
    assert not proxies.loopback_only


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [
        ("SUCCESS", None),
        ("NONE", Reason.PROXY_VERIFICATION_FAILED),
        ("FAILED:certificate has expired", Reason.CERTIFICATE_EXPIRED),
        ("FAILED:certificate is not yet valid", Reason.CERTIFICATE_NOT_YET_VALID),
        ("FAILED:unable to get local issuer certificate", Reason.UNTRUSTED_ISSUER),
        ("FAILED:self-signed certificate", Reason.SELF_SIGNED_NOT_ALLOWED),
        ("FAILED:certificate revoked", Reason.CRL_REVOKED),
        ("FAILED:something else", Reason.PROXY_VERIFICATION_FAILED),
    ],
)
def test_proxy_verdicts(verdict: str, reason: Reason | None) -> None:
    assert reason_for_proxy_verdict(verdict) is reason
