"""The malleable-identity attack through real TLS: nginx (OpenSSL) accepts the ECDSA (r, n - s) twin of a
certificate as readily as the original, so only certauth's notion of "the same certificate" stands between a
revoked certificate and its re-encoding."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth import devpki
from certauth.client import requests_session

from ..derutil import ecdsa_twin
from .conftest import E2EStack

pytestmark = pytest.mark.e2e


def _dev_root(e2e: E2EStack) -> devpki.Issued:
    certificate = x509.load_pem_x509_certificate(e2e.pki.path("ca").read_bytes())
    key = serialization.load_pem_private_key(e2e.pki.path("ca", "key").read_bytes(), password=None)
    return devpki.Issued(certificate, key)


def test_the_twin_of_a_revoked_certificate_is_refused_through_nginx(e2e: E2EStack, tmp_path: Path) -> None:
    root = _dev_root(e2e)
    name = f"twin-probe-{uuid.uuid4().hex[:8]}"  # its own certificate: the other tests keep theirs
    issued = devpki.issue_client(root, name)
    cert, key, twin = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "twin.pem"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    twin.write_bytes(ecdsa_twin(issued.certificate, root.certificate).public_bytes(serialization.Encoding.PEM))
    e2e.manage("certauth", "register", "--identity", name, "--cert", str(cert))

    def whoami(certificate: Path) -> tuple[int, dict[str, str]]:
        session = requests_session(cert=certificate, key=key, ca=e2e.pki.path("ca"))
        response = session.get(e2e.url("/api/whoami/"), timeout=10)
        return response.status_code, response.json()

    assert whoami(cert)[0] == 200
    status, body = whoami(twin)  # nginx verified it: the pin alone tells it apart
    assert (status, body["reason"]) == (401, "unknown_certificate")
    assert "re-encoding of registered certificate" in body["detail"]

    e2e.manage("certauth", "revoke", "--thumbprint", issued.thumbprint, "--reason", "key_compromise")
    time.sleep(1.5)  # REGISTRY_MAX_STALENESS_SECONDS on the worker that did not make the change
    for _ in range(4):  # both workers
        status, body = whoami(twin)
        assert (status, body["reason"]) == (401, "certificate_revoked"), body
        assert body["detail"].startswith(f"Same issuance as revoked entry {issued.thumbprint}")
