"""A disabled authority is distrusted wherever it appears (issue 16, class 4): not only when the proxy sends
the leaf alone, but in every chain the library builds, whatever brought the disabled CA's certificate along
(nginx chain header, Envoy XFCC ``Chain``, RFC 9440 ``Client-Cert-Chain``, AWS ALB), under another
certificate of the same CA (same subject and key), and above an enabled intermediate."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
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
    """Disabled by key and name, not by thumbprint: the same CA re-certified (here by the root again, say a
    renewal) is the same CA, whether forwarded or registered as an enabled authority."""
    renewed = reissued(tree.intermediate, tree.root)
    disabled = [authority(tree.intermediate, 2)]
    forwarded = TrustStore([authority(tree.root, 1)], TrustPolicy(), disabled=disabled)
    assert "disabled" in refusal(forwarded, tree.leaf, [renewed]).detail
    registered_twin = TrustStore([authority(tree.root, 1), authority(renewed, 3)], TrustPolicy(), disabled=disabled)
    refused = refusal(registered_twin, tree.leaf, [])
    assert refused.reason is Reason.UNTRUSTED_ISSUER and "disabled" in refused.detail


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
