"""Every forwarding format, from real certificates: what each proxy sends (leaf and chain), the malformed
variants of each (-> ``malformed_certificate``, never an exception), property tests per format, and the
same formats end to end through DRF with ``override_settings(CERTAUTH=...)``."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote_plus

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from certauth import devpki
from certauth.authenticator import meta_key
from certauth.forwarding import (
    MAX_FORWARDED_LENGTH,
    PARSERS,
    RECOMMENDED_HEADERS,
    parse_chain_header,
    parse_forwarded,
    split_xfcc,
)
from certauth.reasons import CertificateRefused, Reason

from .conftest import failures

# --------------------------------------------------------------------------------------------------
# What each proxy puts on the wire, built here the way the proxy builds it
# --------------------------------------------------------------------------------------------------


def pem(issued: devpki.Issued | x509.Certificate) -> str:
    certificate = issued if isinstance(issued, x509.Certificate) else issued.certificate
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def der_b64(issued: devpki.Issued | x509.Certificate) -> str:
    certificate = issued if isinstance(issued, x509.Certificate) else issued.certificate
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def nginx_escaped(leaf: devpki.Issued) -> str:
    return quote(pem(leaf), safe="")


def nginx_legacy(leaf: devpki.Issued) -> str:
    lines = pem(leaf).strip().split("\n")
    return lines[0] + "".join("\n\t" + line for line in lines[1:])


def xfcc_quote(value: str) -> str:
    """Envoy's quoting: double quotes around the value, ``\\"`` for a quote (and ``\\\\`` for a backslash)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def xfcc_element(
    *,
    cert: devpki.Issued | None = None,
    chain: Sequence[devpki.Issued] = (),
    hash_of: devpki.Issued | None = None,
    by: str = "spiffe://certauth.test/ns/edge/sa/envoy",
    subject: str | None = None,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
) -> str:
    """One XFCC element the way Envoy writes it (``set_current_client_cert_details`` all on)."""
    pairs = [f"By={by}"]
    if hash_of is not None:
        pairs.append(f"Hash={hash_of.thumbprint}")
    if cert is not None:
        pairs.append(f"Cert={xfcc_quote(quote(pem(cert), safe=''))}")
    if chain:
        pairs.append(f"Chain={xfcc_quote(quote(''.join(pem(c) for c in chain), safe=''))}")
    if subject is not None:
        pairs.append(f"Subject={xfcc_quote(subject)}")
    pairs += [f"URI={uri}" for uri in uris]
    pairs += [f"DNS={name}" for name in dns]
    return ";".join(pairs)


def envoy(leaf: devpki.Issued, *intermediates: devpki.Issued) -> str:
    return xfcc_element(
        cert=leaf,
        chain=(leaf, *intermediates) if intermediates else (),
        hash_of=leaf,
        subject=leaf.certificate.subject.rfc4514_string(),
    )


def traefik(leaf: devpki.Issued, *intermediates: devpki.Issued, escaped: bool = True) -> str:
    """Traefik passTLSClientCert ``pem: true``: armour and newlines removed, ``,`` between entries;
    ``url.QueryEscape``d by the Traefik versions that escape."""
    entries = [der_b64(c) for c in (leaf, *intermediates)]
    return ",".join(quote(entry, safe="") if escaped else entry for entry in entries)


def alb(leaf: devpki.Issued, *intermediates: devpki.Issued) -> str:
    """AWS ALB ``X-Amzn-Mtls-Clientcert``: URL-escaped PEM chain, leaf first, ``+=/`` left as they are."""
    return quote("".join(pem(c) for c in (leaf, *intermediates)), safe="+=/")


def rfc9440(leaf: devpki.Issued) -> str:
    return f":{der_b64(leaf)}:"


Encoder = Callable[[devpki.Issued], str]

#: format -> how the proxy writes a leaf (the header is ``RECOMMENDED_HEADERS[format]``)
FORMATS: dict[str, Encoder] = {
    "nginx_escaped": nginx_escaped,
    "nginx_legacy": nginx_legacy,
    "pem": pem,
    "base64_der": der_b64,
    "iis": der_b64,
    "rfc9440": rfc9440,
    "envoy_xfcc": envoy,
    "traefik": traefik,
    "aws_alb": alb,
}


def refused(value: str, fmt: str) -> Reason:
    with pytest.raises(CertificateRefused) as excinfo:
        parse_forwarded(value, fmt)
    return excinfo.value.reason


# --------------------------------------------------------------------------------------------------
# Every format reads a real leaf; the formats that carry a chain read it too
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_reads_a_real_leaf(pki, fmt: str) -> None:
    parsed = parse_forwarded(FORMATS[fmt](pki.client), fmt)
    assert parsed.leaf == pki.client.certificate
    assert parsed.chain == ()


def test_recommended_header_per_format() -> None:
    assert set(RECOMMENDED_HEADERS) == set(PARSERS)
    assert all("_" not in header for header in RECOMMENDED_HEADERS.values())
    expected = {
        "envoy_xfcc": "X-Forwarded-Client-Cert",
        "traefik": "X-Forwarded-Tls-Client-Cert",
        "aws_alb": "X-Amzn-Mtls-Clientcert",
        "iis": "X-ARR-ClientCert",
        "rfc9440": "Client-Cert",
        "nginx_escaped": "X-SSL-Client-Cert",
    }
    assert {fmt: RECOMMENDED_HEADERS[fmt] for fmt in expected} == expected


@pytest.mark.parametrize(
    ("fmt", "encode"),
    [
        ("envoy_xfcc", envoy),
        ("traefik", traefik),
        ("traefik", lambda *c: traefik(*c, escaped=False)),
        ("aws_alb", alb),
    ],
)
def test_formats_carrying_a_chain(pki, fmt: str, encode: Callable[..., str]) -> None:
    parsed = parse_forwarded(encode(pki.via_intermediate, pki.intermediate), fmt)
    assert parsed.leaf == pki.via_intermediate.certificate
    assert parsed.chain == (pki.intermediate.certificate,)


def test_separate_chain_headers(pki) -> None:
    """RFC 9440 ``Client-Cert-Chain`` and a PEM chain header (nginx), for the formats whose chain travels
    apart from the leaf."""
    rfc_chain = f":{der_b64(pki.intermediate)}:, :{der_b64(pki.root)}:"
    assert parse_chain_header(rfc_chain, "rfc9440") == (pki.intermediate.certificate, pki.root.certificate)
    escaped_chain = quote(pem(pki.intermediate) + pem(pki.root), safe="")
    assert parse_chain_header(escaped_chain, "nginx_escaped") == (pki.intermediate.certificate, pki.root.certificate)


# --------------------------------------------------------------------------------------------------
# Envoy XFCC
# --------------------------------------------------------------------------------------------------


def test_xfcc_tokeniser_on_envoys_documented_shape() -> None:
    header = (
        "By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;"
        'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=spiffe://lyft.com/test-team,'
        "By=http://backend.lyft.com;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;"
        "URI=spiffe://lyft.com/frontend;DNS=lyft.com;DNS=www.lyft.com"
    )
    first, last = split_xfcc(header)
    assert first["subject"] == ["/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"]
    assert first["uri"] == ["spiffe://lyft.com/test-team"]
    assert last["by"] == ["http://backend.lyft.com"]
    assert last["dns"] == ["lyft.com", "www.lyft.com"]


def test_xfcc_quoted_values_keep_commas_semicolons_equals_and_quotes() -> None:
    subject = 'CN=a "quoted", name;OU=x=y'
    [element] = split_xfcc(f"Subject={xfcc_quote(subject)};hAsH=ab")
    assert element == {"subject": [subject], "hash": ["ab"]}


def test_xfcc_leaf_chain_and_hash(pki) -> None:
    parsed = parse_forwarded(envoy(pki.via_intermediate, pki.intermediate), "envoy_xfcc")
    assert parsed.leaf == pki.via_intermediate.certificate
    assert parsed.chain == (pki.intermediate.certificate,)


def test_xfcc_chain_without_cert_gives_the_leaf(pki) -> None:
    value = xfcc_element(chain=(pki.via_intermediate, pki.intermediate), hash_of=pki.via_intermediate)
    parsed = parse_forwarded(value, "xfcc")
    assert parsed.leaf == pki.via_intermediate.certificate
    assert parsed.chain == (pki.intermediate.certificate,)


def test_xfcc_keys_are_case_insensitive_and_hash_case_too(pki) -> None:
    value = f"hash={pki.client.thumbprint.upper()};CERT={quote(pem(pki.client), safe='')}"
    assert parse_forwarded(value, "envoy").leaf == pki.client.certificate


def test_xfcc_believes_only_the_last_element(pki) -> None:
    """A client that talks to an edge proxy configured with APPEND_FORWARD can send its own elements; they
    come first, and the element the trusted proxy appended comes last."""
    forged = xfcc_element(cert=pki.stranger, hash_of=pki.stranger, subject='CN=x, O="evil";a=b')
    trusted = envoy(pki.client)
    parsed = parse_forwarded(f"{forged},{trusted}", "envoy_xfcc")
    assert parsed.leaf == pki.client.certificate
    parsed = parse_forwarded(f"{trusted},{forged}", "envoy_xfcc")
    assert parsed.leaf == pki.stranger.certificate


def test_xfcc_hash_mismatch_is_its_own_reason(pki) -> None:
    value = xfcc_element(cert=pki.client, hash_of=pki.stranger)
    with pytest.raises(CertificateRefused) as excinfo:
        parse_forwarded(value, "envoy_xfcc")
    assert excinfo.value.reason is Reason.FORWARDED_HASH_MISMATCH
    assert "Hash" in excinfo.value.detail


def test_xfcc_hash_mismatch_against_a_chain_only_element(pki) -> None:
    value = xfcc_element(chain=(pki.client, pki.root), hash_of=pki.stranger)
    assert refused(value, "envoy_xfcc") is Reason.FORWARDED_HASH_MISMATCH


def _xfcc_malformed(pki) -> list[str]:
    good_cert = f"Cert={xfcc_quote(quote(pem(pki.client), safe=''))}"
    return [
        good_cert.replace('"', "", 1),  # unterminated / unbalanced quote
        f"{good_cert};Hash",  # key without "="
        f"{good_cert},,By=x",  # empty element
        f"{good_cert},",  # trailing element separator
        f"{good_cert};",  # trailing pair separator
        f"{good_cert}x;By=y",  # text after a closing quote
        f"Hash={pki.client.thumbprint}",  # nothing to authenticate with
        f"{good_cert};Hash=nothex",
        f"{good_cert};Hash={pki.client.thumbprint[:-2]}",
        f"{good_cert};{good_cert}",  # the same key twice
        f"{good_cert};By=a;By=b",
        f"Cert={xfcc_quote(quote(pem(pki.client) + pem(pki.root), safe=''))}",  # two certificates in Cert
        f"{good_cert};Chain={xfcc_quote(quote(pem(pki.stranger), safe=''))}",  # chain of another leaf
        'Cert="%2"',  # broken escape
        'Cert="-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----"',
        f"Cert={xfcc_quote(quote(pem(pki.client), safe='') + 'garbage')}",  # text around the PEM
        f"Cert={xfcc_quote(quote(pki.client.key_pem().decode(), safe=''))}",  # a private key
        f"{xfcc_element(cert=pki.stranger)},Subject=only",  # the last element carries no certificate
        "By=spiffe://x\\y;Cert=z",  # backslash outside quotes
        "=value",
        "1key=value",
    ]


def test_xfcc_malformed_variants(pki) -> None:
    for value in _xfcc_malformed(pki):
        assert refused(value, "envoy_xfcc") is Reason.MALFORMED_CERTIFICATE, value


_XFCC_KEY = st.sampled_from(["By", "Hash", "Subject", "URI", "DNS", "X-Extra", "cert_note"])
_XFCC_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(earlier=st.lists(st.lists(st.tuples(_XFCC_KEY, _XFCC_VALUE), min_size=1, max_size=4), max_size=4))
def test_xfcc_tokeniser_round_trips_any_quoted_values(earlier: list[list[tuple[str, str]]]) -> None:
    """Whatever earlier hops (or a client) put in quoted values, the elements split where the proxy put
    its separators and every value reads back exactly."""
    header = ",".join(";".join(f"{key}={xfcc_quote(value)}" for key, value in element) for element in earlier)
    header = f"{header},Hash=00" if header else "Hash=00"
    elements = split_xfcc(header)
    assert len(elements) == len(earlier) + 1
    assert elements[-1] == {"hash": ["00"]}
    for element, pairs in zip(elements, earlier, strict=False):
        expected: dict[str, list[str]] = {}
        for key, value in pairs:
            expected.setdefault(key.lower(), []).append(value)
        assert element == expected


def test_xfcc_last_element_wins_even_behind_forged_quoting(pki) -> None:
    forged = 'Subject="\\",Cert=evil;x=\\"",By="a,b;c=d"'
    parsed = parse_forwarded(f"{forged},{envoy(pki.client)}", "envoy_xfcc")
    assert parsed.leaf == pki.client.certificate


# --------------------------------------------------------------------------------------------------
# Traefik
# --------------------------------------------------------------------------------------------------


def test_traefik_raw_base64_keeps_plus_and_slash(pki) -> None:
    value = traefik(pki.client, escaped=False)
    assert "+" in value or "/" in value  # the case this test is about
    assert parse_forwarded(value, "traefik").leaf == pki.client.certificate


def test_traefik_escaped_and_raw_read_the_same(pki) -> None:
    escaped = traefik(pki.client, pki.root)
    assert "%2B" in escaped or "%2F" in escaped or "%3D" in escaped
    assert parse_forwarded(escaped, "traefik") == parse_forwarded(
        traefik(pki.client, pki.root, escaped=False), "traefik"
    )


def _traefik_malformed(pki) -> list[str]:
    leaf = der_b64(pki.client)
    return [
        f"{leaf},",  # trailing separator
        f"{leaf},,{der_b64(pki.root)}",  # empty entry
        f",{leaf}",
        pem(pki.client),  # armour is not what Traefik sends
        quote(pem(pki.client), safe=""),
        leaf[:-10],  # truncated
        leaf.replace("+", " ") if "+" in leaf else leaf.replace("/", "_"),  # form-decoding damage
        "%2",  # broken escape
        quote(leaf, safe="") + "%E9",  # escape to a non-ASCII byte
        base64.b64encode(b"not a certificate").decode(),
    ]


def test_traefik_malformed_variants(pki) -> None:
    for value in _traefik_malformed(pki):
        assert refused(value, "traefik") is Reason.MALFORMED_CERTIFICATE, value


# --------------------------------------------------------------------------------------------------
# AWS ALB
# --------------------------------------------------------------------------------------------------


def test_alb_plus_is_never_a_space(pki) -> None:
    value = alb(pki.client, pki.intermediate)
    assert "+" in value  # ALB leaves "+" unescaped; form decoding would turn it into a space
    parsed = parse_forwarded(value, "aws_alb")
    assert parsed.leaf == pki.client.certificate
    assert parsed.chain == (pki.intermediate.certificate,)
    assert refused(unquote_plus(value), "aws_alb") is Reason.MALFORMED_CERTIFICATE


def test_alb_leaf_header_of_verify_mode_and_fully_escaped_values(pki) -> None:
    assert parse_forwarded(alb(pki.client), "alb").leaf == pki.client.certificate
    fully_escaped = quote(pem(pki.client) + pem(pki.root), safe="")
    parsed = parse_forwarded(fully_escaped, "aws_alb")
    assert (parsed.leaf, parsed.chain) == (pki.client.certificate, (pki.root.certificate,))


def _alb_malformed(pki) -> list[str]:
    value = alb(pki.client, pki.root)
    return [
        value[: len(value) // 2],  # truncated mid-chain
        der_b64(pki.client),  # DER without armour is another format
        value + "garbage",  # text after the chain
        "garbage%0A" + value,
        value.replace("%0A", "%0", 1),  # broken escape
        quote(pki.client.key_pem().decode(), safe="+=/"),  # a private key
        quote("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", safe="+=/"),
    ]


def test_alb_malformed_variants(pki) -> None:
    for value in _alb_malformed(pki):
        assert refused(value, "aws_alb") is Reason.MALFORMED_CERTIFICATE, value


# --------------------------------------------------------------------------------------------------
# Properties per format: any text, and any mutation of a real value, is a certificate or a reason
# --------------------------------------------------------------------------------------------------

ALLOWED_REASONS = {Reason.MALFORMED_CERTIFICATE, Reason.FORWARDED_HASH_MISMATCH}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@given(value=st.text(max_size=2000))
def test_any_text_is_a_certificate_or_a_reason(fmt: str, value: str) -> None:
    try:
        parsed = parse_forwarded(value, fmt)
    except CertificateRefused as exc:
        assert exc.reason in ALLOWED_REASONS
    else:
        assert isinstance(parsed.leaf, x509.Certificate)


@pytest.fixture(scope="module")
def real_values() -> dict[str, str]:
    root = devpki.make_ca("property root")
    intermediate = devpki.make_ca("property intermediate", issuer=root)
    leaf = devpki.issue_client(intermediate, "property-leaf")
    values = {fmt: encode(leaf) for fmt, encode in FORMATS.items()}
    values["envoy_xfcc"] = envoy(leaf, intermediate)
    values["traefik"] = traefik(leaf, intermediate)
    values["aws_alb"] = alb(leaf, intermediate)
    return values


_EDIT = st.tuples(
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.integers(min_value=0, max_value=3),
    st.sampled_from([*',;="\\%+/ \t\n:A0-', "%2", "%0A", "\u00e9", "\x00"]),
)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_mutated_real_values_are_a_certificate_or_a_reason(
    real_values: dict[str, str], fmt: str, edits: list[tuple[float, int, str]]
) -> None:
    value = real_values[fmt]
    for where, deleted, inserted in edits:
        index = int(where * len(value))
        value = value[:index] + inserted + value[index + deleted :]
    try:
        parsed = parse_forwarded(value, fmt)
    except CertificateRefused as exc:
        assert exc.reason in ALLOWED_REASONS
    else:
        assert isinstance(parsed.leaf, x509.Certificate)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_oversized_and_empty_values(fmt: str) -> None:
    assert refused("A" * (MAX_FORWARDED_LENGTH + 1), fmt) is Reason.MALFORMED_CERTIFICATE
    assert refused(" \t ", fmt) is Reason.MALFORMED_CERTIFICATE


def test_unknown_format_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        parse_forwarded("anything", "no-such-proxy")


# --------------------------------------------------------------------------------------------------
# Through DRF: each format configured with override_settings(CERTAUTH=...)
# --------------------------------------------------------------------------------------------------


def certauth_for(fmt: str, **extra: Any) -> dict[str, Any]:
    # None of these proxies sends an nginx-style verdict header: the proxy either refuses unverified
    # handshakes itself or passes the chain through for certauth to check.
    return {
        "CERTIFICATE_HEADER": RECOMMENDED_HEADERS[fmt],
        "FORWARDING_FORMAT": fmt,
        "PROXY_VERIFIES_CERTIFICATE": False,
        **extra,
    }


def send(api: Any, fmt: str, value: str, **kwargs: Any) -> Any:
    return api.get("/api/whoami/", None, **{meta_key(RECOMMENDED_HEADERS[fmt]): value}, **kwargs)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_api_authenticates_each_format(api, pki, register, fmt: str) -> None:
    register(pki.client, identity="billing")
    with override_settings(CERTAUTH=certauth_for(fmt)):
        response = send(api, fmt, FORMATS[fmt](pki.client))
    assert response.status_code == 200, response.content
    assert response.json()["identity"] == "billing"
    assert response.json()["thumbprint"] == pki.client.thumbprint


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["envoy_xfcc", "traefik", "aws_alb"])
def test_api_authenticates_with_the_forwarded_chain(api, pki, register, fmt: str) -> None:
    register(pki.via_intermediate, identity="chained")
    encode: Callable[..., str] = FORMATS[fmt]
    with override_settings(CERTAUTH=certauth_for(fmt)):
        response = send(api, fmt, encode(pki.via_intermediate, pki.intermediate))
    assert response.status_code == 200, response.content
    assert response.json()["identity"] == "chained"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fmt", "malformed"),
    [
        ("envoy_xfcc", lambda pki: _xfcc_malformed(pki)[0]),
        ("traefik", lambda pki: _traefik_malformed(pki)[1]),
        ("aws_alb", lambda pki: _alb_malformed(pki)[0]),
        ("rfc9440", lambda pki: der_b64(pki.client)),
        ("base64_der", lambda pki: pem(pki.client)),
    ],
)
def test_api_malformed_value_is_401_with_an_audit_row(api, pki, register, fmt: str, malformed: Any) -> None:
    register(pki.client)
    with override_settings(CERTAUTH=certauth_for(fmt)):
        response = send(api, fmt, malformed(pki))
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == "malformed_certificate"
    assert 'error="malformed_certificate"' in response["WWW-Authenticate"]
    [row] = failures(reason="malformed_certificate")
    assert row.path == "/api/whoami/"


@pytest.mark.django_db
def test_api_xfcc_hash_mismatch(api, pki, register) -> None:
    register(pki.client)
    with override_settings(CERTAUTH=certauth_for("envoy_xfcc")):
        response = send(api, "envoy_xfcc", xfcc_element(cert=pki.client, hash_of=pki.stranger))
    assert response.status_code == 401
    assert response.json()["reason"] == "forwarded_hash_mismatch"
    assert len(failures(reason="forwarded_hash_mismatch")) == 1


@pytest.mark.django_db
def test_api_xfcc_forged_first_element_is_not_believed(api, pki, register) -> None:
    """The client put a registered certificate in an element of its own; the trusted proxy appended the
    certificate the client really presented (unregistered)."""
    register(pki.client)
    header = f"{envoy(pki.client)},{envoy(pki.stranger)}"
    with override_settings(CERTAUTH=certauth_for("envoy_xfcc")):
        response = send(api, "envoy_xfcc", header)
    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_certificate"


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["envoy_xfcc", "traefik", "aws_alb"])
def test_api_new_formats_from_a_non_proxy_are_untrusted(api, pki, register, fmt: str) -> None:
    register(pki.client)
    with override_settings(CERTAUTH=certauth_for(fmt)):
        response = send(api, fmt, FORMATS[fmt](pki.client), remote="198.51.100.20")
    assert response.status_code == 401
    assert response.json()["reason"] == "untrusted_proxy"


@pytest.mark.django_db
def test_api_proxy_verdict_still_applies_when_configured(api, pki, register) -> None:
    """PROXY_VERIFIES_CERTIFICATE on with a proxy that sends no verdict header refuses: the setting
    must match the proxy (docs/proxies.md)."""
    register(pki.client)
    with override_settings(CERTAUTH=certauth_for("traefik", PROXY_VERIFIES_CERTIFICATE=True)):
        response = send(api, "traefik", traefik(pki.client))
        assert response.json()["reason"] == "proxy_verification_failed"
        response = send(api, "traefik", traefik(pki.client), HTTP_X_SSL_CLIENT_VERIFY="SUCCESS")
        assert response.status_code == 200, response.content


# --------------------------------------------------------------------------------------------------
# Header-name aliasing (CVE-2015-0219): X-SSL_Client_Cert lands on the same META key
# --------------------------------------------------------------------------------------------------


def _wsgi_environ(handler_class: type, raw_headers: bytes) -> dict[str, str]:
    """The environ a stdlib-based WSGI server builds for these request headers (no socket involved)."""
    import io
    from http.client import parse_headers

    handler = handler_class.__new__(handler_class)
    handler.headers = parse_headers(io.BytesIO(raw_headers))
    handler.server = type("Server", (), {"base_environ": {}, "get_app": None})()
    handler.command, handler.path, handler.request_version = "GET", "/api/whoami/", "HTTP/1.1"
    handler.client_address = ("127.0.0.1", 50000)
    handler.requestline = "GET /api/whoami/ HTTP/1.1"
    handler.rfile = io.BytesIO()
    return handler.get_environ()


def test_underscore_alias_maps_to_the_same_meta_key(pki) -> None:
    """WSGI folds "-" and "_" into one META key: a plain WSGI server gives the alias the key of the real
    header.  Django's own runserver drops such headers (as nginx's ``underscores_in_headers off`` and
    gunicorn's ``header_map = drop`` do); that, not certauth, is the defence against a client sending
    the alias through a proxy that only overwrites the dashed name."""
    from wsgiref.simple_server import WSGIRequestHandler

    from django.core.servers.basehttp import WSGIRequestHandler as DjangoRequestHandler

    value = nginx_escaped(pki.client)
    raw = f"Host: localhost\r\nX-SSL_Client_Cert: {value}\r\n\r\n".encode("ascii")
    assert meta_key("X-SSL_Client_Cert") == meta_key("X-SSL-Client-Cert") == "HTTP_X_SSL_CLIENT_CERT"
    assert _wsgi_environ(WSGIRequestHandler, raw)["HTTP_X_SSL_CLIENT_CERT"] == value
    assert "HTTP_X_SSL_CLIENT_CERT" not in _wsgi_environ(DjangoRequestHandler, raw)


def test_gunicorn_drops_underscore_headers_by_default(pki) -> None:
    gunicorn_message = pytest.importorskip("gunicorn.http.message")
    from gunicorn.config import Config
    from gunicorn.http.unreader import IterUnreader

    raw = f"GET / HTTP/1.1\r\nHost: localhost\r\nX-SSL_Client_Cert: {nginx_escaped(pki.client)}\r\n\r\n"
    request = gunicorn_message.Request(Config(), IterUnreader([raw.encode("ascii")]), ("127.0.0.1", 1))
    names = {name for name, _ in request.headers}
    assert "HOST" in names
    assert not any("SSL" in name for name in names)


@pytest.mark.django_db
def test_underscore_alias_from_a_non_proxy_is_untrusted(api, pki, register) -> None:
    """Sent straight to Django (not through the proxy), the alias is refused like the real header."""
    register(pki.client)
    response = api.get("/api/whoami/", None, remote="198.51.100.20", HTTP_X_SSL_CLIENT_CERT=nginx_escaped(pki.client))
    assert response.status_code == 401
    assert response.json()["reason"] == "untrusted_proxy"
    assert len(failures(reason="untrusted_proxy")) == 1
