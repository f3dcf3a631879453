"""Forwarded values mean what the proxy meant (issue 16, class 6).

* Envoy writes ``URI=`` and ``DNS=`` unquoted, so a certificate's own SAN can carry the XFCC separators and
  smuggle a second element: such headers are refused, whatever the element, and a missing ``Hash`` is
  refused too (``XFCC_REQUIRE_HASH``).
* The other dialects carry only base64 or PEM, which cannot hold a separator: a certificate whose names
  are full of them reads back as itself.
* PEM armour is read by a linear scanner (no regular expression, no backtracking), with strict base64.
"""

from __future__ import annotations

import ast
import base64
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from certauth import certificates, devpki
from certauth.certificates import load_certificate, load_certificates
from certauth.forwarding import parse_forwarded, split_xfcc
from certauth.reasons import CertificateRefused, Reason

from .conftest import failures
from .test_forwarding_formats import (
    FORMATS,
    certauth_for,
    envoy,
    pem,
    refused,
    send,
    xfcc_element,
)

# --------------------------------------------------------------------------------------------------
# 6a. XFCC: a SAN that carries the separators
# --------------------------------------------------------------------------------------------------


def smuggling_uri(victim: devpki.Issued) -> str:
    """A URI SAN that, written unquoted by Envoy, ends the element and starts one with the victim's
    (public) certificate."""
    return f"spiffe://certauth.test/ns/x/sa/mallory,Cert={quote(pem(victim), safe='')}"


def envoy_with_sans(leaf: devpki.Issued) -> str:
    """What Envoy writes with ``set_current_client_cert_details: {subject, cert, uri, dns}``: URI and DNS
    values as they are in the certificate, unquoted (Envoy's documented format)."""
    sans = leaf.certificate.extensions.get_extension_for_oid(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    uris = sans.value.get_values_for_type(x509.UniformResourceIdentifier)
    dns = sans.value.get_values_for_type(x509.DNSName)
    return xfcc_element(cert=leaf, hash_of=leaf, subject="CN=mallory", uris=uris, dns=dns)


@pytest.fixture(scope="module")
def mallory(pki) -> devpki.Issued:
    return devpki.issue_client(pki.root, "mallory", uris=[smuggling_uri(pki.client)])


@pytest.mark.django_db
def test_api_xfcc_uri_san_cannot_smuggle_the_victims_certificate(api, pki, register, mallory) -> None:
    """Today's main answered 200 as the victim: the smuggled element was "the last", carried no Hash and
    so was never checked."""
    register(pki.client, identity="victim", scopes="orders:read orders:write")
    header = envoy_with_sans(mallory)
    with override_settings(CERTAUTH=certauth_for("envoy_xfcc")):
        response = send(api, "envoy_xfcc", header)
        posted = api.post("/api/orders/", None, data={"item": "x"}, **{"HTTP_X_FORWARDED_CLIENT_CERT": header})
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == "malformed_certificate"
    assert "URI" in response.json()["detail"]
    assert posted.status_code == 401
    assert failures(reason="malformed_certificate")


def test_xfcc_dns_san_cannot_smuggle_either(pki) -> None:
    header = xfcc_element(cert=pki.stranger, hash_of=pki.stranger, dns=[f"a.example,Cert={quote(pem(pki.client))}"])
    assert refused(header, "envoy_xfcc") is Reason.MALFORMED_CERTIFICATE


@pytest.mark.parametrize("key", ["URI", "DNS", "uri", "X-Extra"])
def test_xfcc_unquoted_client_keys_are_refused_in_any_element(pki, key: str) -> None:
    """Even an honest URI/DNS pair is refused, in any element: once a client-chosen value is unquoted, no
    reader can tell its commas from the proxy's.  Keys Envoy never writes are refused alike."""
    earlier = f"By=spiffe://edge;Hash={pki.stranger.thumbprint};{key}=spiffe://x/y"
    with pytest.raises(CertificateRefused) as excinfo:
        parse_forwarded(f"{earlier},{envoy(pki.client)}", "envoy_xfcc")
    assert excinfo.value.reason is Reason.MALFORMED_CERTIFICATE
    assert "set_current_client_cert_details" in excinfo.value.detail
    assert refused(f"{envoy(pki.client)};{key}=a", "envoy_xfcc") is Reason.MALFORMED_CERTIFICATE


def test_xfcc_element_without_hash_is_refused_by_default(pki) -> None:
    value = xfcc_element(cert=pki.client)
    with pytest.raises(CertificateRefused) as excinfo:
        parse_forwarded(value, "envoy_xfcc")
    assert excinfo.value.reason is Reason.MALFORMED_CERTIFICATE
    assert "Hash" in excinfo.value.detail


@pytest.mark.django_db
def test_xfcc_require_hash_can_be_turned_off(api, pki, register) -> None:
    register(pki.client)
    value = xfcc_element(cert=pki.client)
    with override_settings(CERTAUTH=certauth_for("envoy_xfcc")):
        assert send(api, "envoy_xfcc", value).json()["reason"] == "malformed_certificate"
    with override_settings(CERTAUTH=certauth_for("envoy_xfcc", XFCC_REQUIRE_HASH=False)):
        assert send(api, "envoy_xfcc", value).status_code == 200
        # URI/DNS stay refused: no setting makes an unquoted client value readable.
        assert send(api, "envoy_xfcc", f"{value};URI=spiffe://x").status_code == 401


def test_xfcc_recommended_fields_still_read(pki) -> None:
    """By, Hash, Cert, Chain and a quoted Subject (escaped as Envoy escapes it) are all still read."""
    value = xfcc_element(
        cert=pki.via_intermediate,
        chain=(pki.via_intermediate, pki.intermediate),
        hash_of=pki.via_intermediate,
        subject='CN=a\\,b,O="x;y=z"',
    )
    parsed = parse_forwarded(value, "envoy_xfcc")
    assert parsed.leaf == pki.via_intermediate.certificate
    assert parsed.chain == (pki.intermediate.certificate,)


_SEPARATORS = st.text(st.sampled_from(list(',;="\\:%+/ -Cert=Hash')), min_size=1, max_size=30)


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - {"envoy_xfcc"}))
@given(name=_SEPARATORS)
def test_other_dialects_read_a_separator_laden_certificate_as_itself(pki, fmt: str, name: str) -> None:
    """The other dialects carry base64 or PEM only: no byte of a certificate's names reaches a delimiter."""
    uri = "spiffe://x/" + quote(name, safe=",;=:+/-")
    leaf = devpki.issue_client(pki.root, "sep", uris=[uri], dns_names=["a.example"])
    parsed = parse_forwarded(FORMATS[fmt](leaf), fmt)
    assert parsed.leaf == leaf.certificate
    assert parsed.chain == ()


# --------------------------------------------------------------------------------------------------
# 6b. PEM armour (and the XFCC tokeniser) read in linear time, with strict base64
# --------------------------------------------------------------------------------------------------

#: The scanners that read client-controlled text (forwarded headers, an admin's paste, a fetched CRL).
LINEAR_SCANNERS = [
    "certauth.certificates.pem_bodies",
    "certauth.certificates.strict_base64",
    "certauth.forwarding.split_xfcc",
    "certauth.forwarding._xfcc_quoted",
]


@pytest.mark.parametrize("qualified", LINEAR_SCANNERS)
def test_scanners_use_no_regular_expression(qualified: str) -> None:
    """What keeps them linear: string methods and one pass, no regex engine that could backtrack over a
    run of whitespace (today's main matched PEM armour with ``\\s*(?P<body>[...\\s]+?)\\s*``: cubic)."""
    import importlib

    module_name, _, function_name = qualified.rpartition(".")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    compiled = {name for name in names if isinstance(getattr(module, name, None), re.Pattern)}
    assert "re" not in names and not compiled, (qualified, compiled)


HUGE = 60_000  # just under MAX_FORWARDED_LENGTH; the old regexes needed ~7 s for 2,000 blanks


def test_long_whitespace_runs_are_refused_at_once(pki) -> None:
    """Every reader of armoured or XFCC text, fed 60,000 blanks where the old patterns backtracked: each
    must give its reason in a child process bounded by a generous 20 s (the new code takes milliseconds;
    the old, cubic in the run, would not finish in hours).  The verdicts are asserted in the child."""
    valid = pem(pki.client)
    header, rest = valid.split("\n", 1)
    padded_valid = header + "\n" + " " * HUGE + rest  # whitespace inside a body is allowed and ignored
    script = textwrap.dedent(
        f"""
        import sys
        from urllib.parse import quote
        from certauth.certificates import load_certificate, load_certificates
        from certauth.forwarding import parse_forwarded, parse_chain_header
        from certauth.reasons import CertificateRefused, Reason
        from certauth.trust import load_crl

        begin = "-----BEGIN CERTIFICATE-----"
        blanks = " " * {HUGE}
        cases = [
            lambda: parse_forwarded(quote(begin + blanks + "x", safe=""), "nginx_escaped"),
            lambda: parse_forwarded(begin + blanks, "pem"),
            lambda: parse_forwarded(begin + "\\t" * {HUGE} + "!-----END CERTIFICATE-----", "nginx_legacy"),
            lambda: parse_forwarded("Cert=" + blanks + '"', "envoy_xfcc"),
            lambda: parse_forwarded("a=" + blanks + 'x"', "envoy_xfcc"),
            lambda: parse_forwarded('Cert="' + "\\\\a" * {HUGE // 2}, "envoy_xfcc"),
            lambda: parse_chain_header(begin + blanks + "x", "nginx_escaped"),
            lambda: load_certificates(("pasted: " + begin + blanks + "x").encode()),
            lambda: load_certificate((begin + "\\n" * {HUGE} + "x").encode()),
        ]
        for case in cases:
            try:
                case()
            except CertificateRefused as refused:
                assert refused.reason is Reason.MALFORMED_CERTIFICATE, refused
            else:
                raise AssertionError("accepted")
        try:
            load_crl(("-----BEGIN X509 CRL-----" + blanks + "x").encode())
        except CertificateRefused as refused:
            assert refused.reason is Reason.CRL_UNAVAILABLE
        else:
            raise AssertionError("accepted")
        assert parse_forwarded(sys.stdin.read(), "pem").leaf is not None
        print("ok")
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        input=padded_valid,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "ok"


def glued(der: bytes) -> bytes:
    """The DER as two base64 blocks glued together: the first ends with padding, mid-body."""
    cut = next(k for k in range(len(der) // 2, len(der)) if k % 3)
    first, second = base64.b64encode(der[:cut]), base64.b64encode(der[cut:])
    assert first.endswith(b"=")
    return first + second


def armour(body: bytes) -> bytes:
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def padded_certificate(pki) -> devpki.Issued:
    """A test certificate whose base64 ends with padding."""
    return next(
        issued
        for issued in (pki.client, pki.client2, pki.stranger, pki.root, pki.intermediate, pki.self_signed)
        if len(issued.certificate.public_bytes(serialization.Encoding.DER)) % 3
    )


def test_glued_base64_blocks_are_refused_forwarded_and_pasted(pki) -> None:
    """OpenSSL refuses a body with padding in the middle; so does certauth, in every reader.  Today's main
    decoded up to the first padding and dropped the rest: a whole certificate followed by any other base64
    read as that certificate."""
    padded = padded_certificate(pki)
    der = padded.certificate.public_bytes(serialization.Encoding.DER)
    other = pki.other_ca.certificate.public_bytes(serialization.Encoding.DER)
    for body in (glued(der), base64.b64encode(der) + base64.b64encode(other)):
        text = armour(body)
        for strict in (True, False):
            with pytest.raises(CertificateRefused) as excinfo:
                load_certificates(text, strict=strict)
            assert excinfo.value.reason is Reason.MALFORMED_CERTIFICATE
        assert refused(quote(text.decode(), safe=""), "nginx_escaped") is Reason.MALFORMED_CERTIFICATE
        assert refused(text.decode(), "pem") is Reason.MALFORMED_CERTIFICATE
    assert load_certificate(armour(base64.b64encode(der))) == padded.certificate


@pytest.mark.django_db
def test_admin_paste_of_a_glued_body_is_a_form_error(pki) -> None:
    from certauth.forms import RegistrationForm
    from certauth.services import get_or_create_identity

    identity, _ = get_or_create_identity("paste")
    der = padded_certificate(pki).certificate.public_bytes(serialization.Encoding.DER)
    body = base64.b64encode(der) + base64.b64encode(pki.other_ca.certificate.public_bytes(serialization.Encoding.DER))
    form = RegistrationForm(data={"identity": identity.pk, "pem_text": armour(glued(der)).decode()})
    assert not form.is_valid()
    form = RegistrationForm(data={"identity": identity.pk, "pem_text": armour(body).decode()})
    assert not form.is_valid()
    assert "base64" in str(form.errors["pem_text"])
    spaced = "-----BEGIN CERTIFICATE-----" + " " * 2000 + "x"
    form = RegistrationForm(data={"identity": identity.pk, "pem_text": spaced})
    assert not form.is_valid()
    assert form.errors["pem_text"]


_CANONICAL_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@given(st.binary(max_size=300))
def test_pem_bodies_any_bytes_is_bodies_or_a_pem_error(data: bytes) -> None:
    for strict in (True, False):
        try:
            bodies = certificates.pem_bodies(data, "CERTIFICATE", strict=strict)
        except certificates.PemError:
            continue
        assert all(isinstance(body, bytes) for body in bodies)


_WHITESPACE = st.sampled_from([b"\n", b"\r\n", b" ", b"\t", b"", b"\n\n"])


@given(
    payloads=st.lists(st.binary(max_size=200), max_size=4),
    width=st.integers(min_value=1, max_value=80),
    gap=_WHITESPACE,
    around=_WHITESPACE,
)
def test_pem_bodies_round_trips_any_wrapping(payloads: list[bytes], width: int, gap: bytes, around: bytes) -> None:
    blocks = []
    for payload in payloads:
        encoded = base64.b64encode(payload)
        lines = [encoded[i : i + width] for i in range(0, len(encoded), width)]
        blocks.append(b"-----BEGIN CERTIFICATE-----" + gap + gap.join(lines) + gap + b"-----END CERTIFICATE-----")
    text = around + around.join(blocks) + around
    assert certificates.pem_bodies(text, "CERTIFICATE", strict=True) == payloads


@given(st.text(st.sampled_from("AQgw+/=09 \n\t="), max_size=40))
def test_strict_base64_accepts_exactly_canonical_base64(text: str) -> None:
    """The oracle: canonical base64 (padding only at the end, whole quanta) once whitespace is removed."""
    compact = "".join(text.split()).encode()
    try:
        decoded = certificates.strict_base64(text.encode())
    except certificates.PemError:
        assert _CANONICAL_BASE64.fullmatch(compact) is None
    else:
        assert _CANONICAL_BASE64.fullmatch(compact) is not None
        assert base64.b64decode(compact) == decoded


@given(st.text(st.sampled_from(' \t"\\,;=aZ'), max_size=60))
def test_split_xfcc_any_text_is_elements_or_malformed(text: str) -> None:
    try:
        elements = split_xfcc(text)
    except CertificateRefused as exc:
        assert exc.reason is Reason.MALFORMED_CERTIFICATE
    else:
        assert elements and all(elements)
