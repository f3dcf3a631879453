"""A disabled authority is distrusted wherever it appears (issue 16, class 4): not only when the proxy sends
the leaf alone, but in every chain the library builds, whatever brought the disabled CA's certificate along
(nginx chain header, Envoy XFCC ``Chain``, RFC 9440 ``Client-Cert-Chain``, AWS ALB), under another
certificate of the same CA (same key, under any name), and above an enabled intermediate."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.name import _ASN1Type
from django.test import override_settings

from certauth import devpki
from certauth.reasons import CertificateRefused, Reason
from certauth.trust import Authority, TrustPolicy, TrustStore

from .conftest import failures


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def authority(issued: devpki.Issued | x509.Certificate, id: int) -> Authority:
    certificate = issued if isinstance(issued, x509.Certificate) else issued.certificate
    return Authority.from_certificate(id, f"authority {id}", certificate)


def reissued(ca: devpki.Issued, signer: devpki.Issued) -> x509.Certificate:
    """Another certificate of the same CA (same subject, same key, new serial) signed by ``signer``: a renewal
    or a cross-certificate."""
    original = ca.certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(original.subject)
        .issuer_name(signer.certificate.subject)
        .public_key(original.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(now() + dt.timedelta(days=300))
    )
    for extension in original.extensions:
        if extension.oid != x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            builder = builder.add_extension(extension.value, extension.critical)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.private_key.public_key())  # type: ignore[arg-type]
    return builder.add_extension(aki, critical=False).sign(signer.private_key, hashes.SHA256())  # type: ignore[arg-type]


class Tree:
    def __init__(self) -> None:
        self.root = devpki.make_ca("blocklist root")
        self.intermediate = devpki.make_ca("blocklist intermediate", issuer=self.root)
        self.leaf = devpki.issue_client(self.intermediate, "under-intermediate")


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree()


def refusal(store: TrustStore, leaf: devpki.Issued, forwarded: list[x509.Certificate]) -> CertificateRefused:
    with pytest.raises(CertificateRefused) as info:
        store.evaluate(leaf.certificate, forwarded, now())
    return info.value


# --- the trust store (pure) ---------------------------------------------------------------------------------
def test_a_disabled_intermediate_in_the_forwarded_chain_refuses_the_chain(tree: Tree) -> None:
    enabled_root = [authority(tree.root, 1)]
    chain = [tree.intermediate.certificate]
    assert TrustStore(enabled_root, TrustPolicy()).evaluate(tree.leaf.certificate, chain, now()).kind == "chained"
    store = TrustStore(enabled_root, TrustPolicy(), disabled=[authority(tree.intermediate, 2)])
    for forwarded in ([tree.intermediate.certificate], []):
        refused = refusal(store, tree.leaf, forwarded)
        assert refused.reason is Reason.UNTRUSTED_ISSUER
        assert "'blocklist intermediate'" in refused.detail and "disabled" in refused.detail


def test_another_certificate_of_the_disabled_ca_is_refused_too(tree: Tree) -> None:
    """Disabled by key, not by thumbprint: the same CA re-certified (here by the root again, say a
    renewal) is the same CA, whether forwarded or registered as an enabled authority."""
    renewed = reissued(tree.intermediate, tree.root)
    disabled = [authority(tree.intermediate, 2)]
    forwarded = TrustStore([authority(tree.root, 1)], TrustPolicy(), disabled=disabled)
    assert "disabled" in refusal(forwarded, tree.leaf, [renewed]).detail
    registered_twin = TrustStore([authority(tree.root, 1), authority(renewed, 3)], TrustPolicy(), disabled=disabled)
    refused = refusal(registered_twin, tree.leaf, [])
    assert refused.reason is Reason.UNTRUSTED_ISSUER and "disabled" in refused.detail


def _printable(name: x509.Name) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(a.oid, str(a.value), _type=_ASN1Type.PrintableString) for a in name]  # type: ignore[arg-type]
    )


def _sign_like(
    template: x509.Certificate, subject: x509.Name, issuer: x509.Name, public_key: Any, signer: Any
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for extension in template.extensions:
        if extension.oid != x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            builder = builder.add_extension(extension.value, extension.critical)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
    return builder.add_extension(aki, critical=False).sign(signer, hashes.SHA256())


@pytest.mark.parametrize("renamed", ["re-encoded", "renamed"])
def test_a_disabled_intermediate_is_refused_under_its_re_encoded_name_too(renamed: str) -> None:
    """Review 3, F2.  SECURITY.md: "no path through the disabled CA's key is" [trusted].  The blocklist was keyed
    on the subject's DER and the key: the same CA key certified again with its name re-encoded (PrintableString
    for UTF8String: one name for the chain builder) or under a new name kept signing leaves that were accepted."""
    root = devpki.make_ca("review3 root")
    intermediate = devpki.make_ca("review3 issuing", issuer=root)  # UTF8String CN
    template = devpki.issue_client(intermediate, "review3 leaf")
    if renamed == "re-encoded":
        # The same CA (same key, same name read as text), its certificate re-issued with a PrintableString name.
        other_name = _printable(intermediate.certificate.subject)
        assert other_name == intermediate.certificate.subject  # one name for x509.Name and _issued
    else:
        # The same CA key certified again under a new name (a CA renamed without a new key).
        other_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "review3 issuing G2")])
    twin_ca = _sign_like(
        intermediate.certificate,
        other_name,
        root.certificate.subject,
        intermediate.certificate.public_key(),
        root.private_key,
    )
    # A leaf that CA signed (with its key) under the other name.
    leaf = _sign_like(
        template.certificate,
        template.certificate.subject,
        other_name,
        template.certificate.public_key(),
        intermediate.private_key,
    )
    enabled_root = [Authority.from_certificate(1, "root", root.certificate)]
    at = dt.datetime.now(dt.UTC)
    assert TrustStore(enabled_root, TrustPolicy()).evaluate(leaf, [twin_ca], at).kind == "chained"
    store = TrustStore(
        enabled_root, TrustPolicy(), disabled=[Authority.from_certificate(2, "issuing", intermediate.certificate)]
    )
    with pytest.raises(CertificateRefused) as refused:
        store.evaluate(leaf, [twin_ca], at)  # accepted before: the disabled CA's key signed this chain
    assert refused.value.reason is Reason.UNTRUSTED_ISSUER
    assert "'review3 issuing'" in refused.value.detail  # names the disabled authority
    # Registered as an enabled authority under the other name, it is the disabled CA all the same.
    registered = [*enabled_root, Authority.from_certificate(3, "issuing under another name", twin_ca)]
    store = TrustStore(
        registered, TrustPolicy(), disabled=[Authority.from_certificate(2, "issuing", intermediate.certificate)]
    )
    with pytest.raises(CertificateRefused) as refused:
        store.evaluate(leaf, [], at)
    assert refused.value.reason is Reason.UNTRUSTED_ISSUER and "disabled" in refused.value.detail
    assert not store.issued_by(leaf, [], registered[1].thumbprint_sha256, at)


def test_a_disabled_roots_key_above_an_enabled_intermediate_refuses_it_under_another_name() -> None:
    """Review 3, F2, above the anchor: an intermediate registered as its own authority, signed by a disabled
    root's key under another name (a renamed certificate of that root, not registered), is under the disabled
    CA all the same."""
    root = devpki.make_ca("review3 disabled root")
    renamed = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "review3 disabled root G2")])
    intermediate_template = devpki.make_ca("review3 enabled issuing", issuer=root)
    intermediate = _sign_like(
        intermediate_template.certificate,
        intermediate_template.certificate.subject,
        renamed,
        intermediate_template.certificate.public_key(),
        root.private_key,
    )
    leaf = devpki.issue_client(intermediate_template, "review3 under renamed root").certificate
    registered = [Authority.from_certificate(2, "issuing", intermediate)]
    assert TrustStore(registered, TrustPolicy()).evaluate(leaf, [], now()).kind == "chained"
    store = TrustStore(registered, TrustPolicy(), disabled=[Authority.from_certificate(1, "root", root.certificate)])
    with pytest.raises(CertificateRefused) as refused:
        store.evaluate(leaf, [], now())
    assert refused.value.reason is Reason.UNTRUSTED_ISSUER and "'review3 disabled root'" in refused.value.detail


def test_a_disabled_root_above_an_enabled_intermediate_refuses_it(tree: Tree) -> None:
    """Disabling a root distrusts everything under it, also an intermediate registered as its own anchor."""
    store = TrustStore([authority(tree.intermediate, 2)], TrustPolicy(), disabled=[authority(tree.root, 1)])
    refused = refusal(store, tree.leaf, [])
    assert refused.reason is Reason.UNTRUSTED_ISSUER and "'blocklist root'" in refused.detail
    # An intermediate registered alone, its root not registered at all, stays an anchor of its own.
    assert TrustStore([authority(tree.intermediate, 2)], TrustPolicy()).evaluate(tree.leaf.certificate, [], now())


def test_a_path_that_avoids_the_disabled_authority_is_still_trusted(tree: Tree) -> None:
    """The decision on alternative paths: a sub-CA under the disabled intermediate, cross-certified by another
    enabled root, is trusted through that root only; the path through the disabled CA never is."""
    other_root = devpki.make_ca("blocklist other root")
    sub = devpki.make_ca("blocklist sub", issuer=tree.intermediate)
    cross = reissued(sub, other_root)
    leaf = devpki.issue_client(sub, "under-sub")
    store = TrustStore(
        [authority(tree.root, 1), authority(other_root, 3)], TrustPolicy(), disabled=[authority(tree.intermediate, 2)]
    )
    refused = refusal(store, leaf, [sub.certificate, tree.intermediate.certificate])
    assert refused.reason is Reason.UNTRUSTED_ISSUER and "disabled" in refused.detail
    result = store.evaluate(leaf.certificate, [sub.certificate, tree.intermediate.certificate, cross], now())
    assert result.anchor is not None and result.anchor.certificate == other_root.certificate


def test_no_rule_binds_through_a_disabled_certificate(tree: Tree) -> None:
    store = TrustStore([authority(tree.root, 1)], TrustPolicy(), disabled=[authority(tree.intermediate, 2)])
    root_thumbprint = store.authorities[0].thumbprint_sha256
    assert not store.issued_by(tree.leaf.certificate, [tree.intermediate.certificate], root_thumbprint, now())
    # Nor through an enabled certificate of the disabled CA (same subject and key), nor to it.
    twin = authority(reissued(tree.intermediate, tree.root), 3)
    store = TrustStore([authority(tree.root, 1), twin], TrustPolicy(), disabled=[authority(tree.intermediate, 2)])
    assert not store.issued_by(tree.leaf.certificate, [], root_thumbprint, now())
    assert not store.issued_by(tree.leaf.certificate, [], twin.thumbprint_sha256, now())
    enabled = TrustStore([authority(tree.root, 1), twin], TrustPolicy())
    assert enabled.issued_by(tree.leaf.certificate, [], root_thumbprint, now())  # the check can pass


# --- through DRF: every forwarding format that carries a chain ------------------------------------------------
def pem(issued: devpki.Issued) -> str:
    return issued.cert_pem().decode("ascii")


def b64(issued: devpki.Issued) -> str:
    return base64.b64encode(issued.certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def nginx_chain(leaf: devpki.Issued, intermediate: devpki.Issued) -> tuple[dict[str, Any], dict[str, str]]:
    settings = {"CHAIN_HEADER": "X-SSL-Client-Chain", "PROXY_VERIFIES_CERTIFICATE": False}
    return settings, {
        "HTTP_X_SSL_CLIENT_CERT": quote(pem(leaf), safe=""),
        "HTTP_X_SSL_CLIENT_CHAIN": quote(pem(intermediate), safe=""),
    }


def envoy_xfcc(leaf: devpki.Issued, intermediate: devpki.Issued) -> tuple[dict[str, Any], dict[str, str]]:
    settings = {
        "CERTIFICATE_HEADER": "X-Forwarded-Client-Cert",
        "FORWARDING_FORMAT": "envoy_xfcc",
        "PROXY_VERIFIES_CERTIFICATE": False,
    }
    cert = quote(pem(leaf), safe="")
    chain = quote(pem(leaf) + pem(intermediate), safe="")
    value = f'By=spiffe://certauth.test/ns/edge/sa/envoy;Hash={leaf.thumbprint};Cert="{cert}";Chain="{chain}"'
    return settings, {"HTTP_X_FORWARDED_CLIENT_CERT": value}


def rfc9440(leaf: devpki.Issued, intermediate: devpki.Issued) -> tuple[dict[str, Any], dict[str, str]]:
    settings = {
        "CERTIFICATE_HEADER": "Client-Cert",
        "CHAIN_HEADER": "Client-Cert-Chain",
        "FORWARDING_FORMAT": "rfc9440",
        "PROXY_VERIFIES_CERTIFICATE": False,
    }
    return settings, {"HTTP_CLIENT_CERT": f":{b64(leaf)}:", "HTTP_CLIENT_CERT_CHAIN": f":{b64(intermediate)}:"}


def aws_alb(leaf: devpki.Issued, intermediate: devpki.Issued) -> tuple[dict[str, Any], dict[str, str]]:
    settings = {
        "CERTIFICATE_HEADER": "X-Amzn-Mtls-Clientcert",
        "FORWARDING_FORMAT": "aws_alb",
        "PROXY_VERIFIES_CERTIFICATE": False,
    }
    return settings, {"HTTP_X_AMZN_MTLS_CLIENTCERT": quote(pem(leaf) + pem(intermediate), safe="+=/")}


def traefik(leaf: devpki.Issued, intermediate: devpki.Issued) -> tuple[dict[str, Any], dict[str, str]]:
    settings = {
        "CERTIFICATE_HEADER": "X-Forwarded-Tls-Client-Cert",
        "FORWARDING_FORMAT": "traefik",
        "PROXY_VERIFIES_CERTIFICATE": False,
    }
    value = ",".join(quote(b64(c), safe="") for c in (leaf, intermediate))
    return settings, {"HTTP_X_FORWARDED_TLS_CLIENT_CERT": value}


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", [nginx_chain, envoy_xfcc, rfc9440, aws_alb, traefik], ids=lambda f: f.__name__)
def test_api_a_disabled_intermediate_is_refused_in_every_forwarding_format(api, pki, register, fmt: Any) -> None:
    from certauth.models import TrustedAuthority

    register(pki.via_intermediate, identity="chained")
    settings, headers = fmt(pki.via_intermediate, pki.intermediate)
    intermediate = TrustedAuthority.objects.get(name="test intermediate")
    with override_settings(CERTAUTH=settings):
        response = api.get("/api/whoami/", None, **headers)
        assert response.status_code == 200, response.content  # the format works: the chain is read
        intermediate.is_enabled = False
        intermediate.save(update_fields=["is_enabled", "updated_at"])
        response = api.get("/api/whoami/", None, **headers)
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == "untrusted_issuer"
    assert "'certauth test intermediate'" in body["detail"] and "disabled" in body["detail"]
    [row] = failures(reason="untrusted_issuer")
    assert row.thumbprint_sha256 == pki.via_intermediate.thumbprint and "disabled" in row.detail
