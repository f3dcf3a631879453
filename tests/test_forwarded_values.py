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
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from certauth import certificates, devpki
from certauth.certificates import load_certificate, load_certificates
from certauth.forwarding import parse_forwarded
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
