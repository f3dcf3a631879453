"""End to end through HAProxy 2.6 (``certauth.proxyconf.haproxy``) -> gunicorn (unix socket) -> certauth, with
the dev PKI: modes ``optional`` and ``on`` (``verify required``), one stack each."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth.devpki import create_dev_pki
from certauth.proxyconf import FOREIGN_CERTIFICATE_HEADERS, find_proxy

from .conftest import E2EStack, _run_stack, database_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["optional", "on"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    if find_proxy("haproxy") is None:
        if os.geteuid() == 0:
            pytest.fail("haproxy is missing: scripts/install-system-deps.sh installs it")
        pytest.skip("haproxy is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    mode = request.param
    base = tmp_path_factory.mktemp(f"e2e-haproxy-{mode}")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with database_for(var, f"certauth_e2e_haproxy_{mode.replace('_', '')}") as database_url:
        for handle in _run_stack(mode, pki, var, database_url, proxy="haproxy"):
            handle.manage(
                "certauth", "register", "--identity", "intermediate-client",
                "--cert", str(pki.path("via-intermediate")), "--scope", "orders:read",
            )  # fmt: skip
            yield handle


def _refusal(response: requests.Response) -> str:
    assert response.status_code == 401, (response.status_code, response.text[:500])
    assert "WWW-Authenticate" in response.headers
    return str(response.json()["reason"])


def _der_base64(stack: E2EStack, name: str) -> str:
    certificate = x509.load_pem_x509_certificate(stack.pki.path(name).read_bytes())
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def _forged(stack: E2EStack) -> dict[str, str]:
    """The registered demo client's certificate, a SUCCESS verdict and another address, in every spelling."""
    cert = _der_base64(stack, "client")
    headers = {
        "X-SSL-Client-Cert": cert,
        "X_SSL_Client_Cert": cert,
        "X-SSL-Client-Verify": "SUCCESS",
        "X_SSL_Client_Verify": "SUCCESS",
        "X-Real-IP": "203.0.113.9",
        "X_Real_IP": "203.0.113.9",
        "X-Forwarded-For": "203.0.113.9",
        "X_Forwarded_For": "203.0.113.9",
    }
    for name in FOREIGN_CERTIFICATE_HEADERS:
        headers[name] = cert
        headers[name.replace("-", "_")] = cert
    return headers


def _latest_refusal(stack: E2EStack, reason: str, thumbprint: str) -> dict[str, str]:
    script = (
        "import json; from certauth.models import AuthenticationFailure as F; "
        f"row = F.objects.filter(reason={reason!r}, thumbprint_sha256={thumbprint!r}).latest('last_seen'); "
        "print(json.dumps({'method': row.method, 'path': row.path, 'client_ip': row.client_ip}))"
    )
    return dict(json.loads(stack.manage("shell", "-c", script).stdout.strip().splitlines()[-1]))


def test_registered_client_gets_its_identity(stack: E2EStack) -> None:
    response = stack.session("client").get(stack.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "demo-client"
    assert response.json()["thumbprint"] == stack.pki.thumbprint("client")


def test_intermediate_issued_client_gets_its_identity(stack: E2EStack) -> None:
    response = stack.session("via-intermediate").get(stack.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "intermediate-client"


def test_unregistered_certificate_is_unknown(stack: E2EStack) -> None:
    assert _refusal(stack.session("unregistered").get(stack.url("/api/whoami/"), timeout=10)) == "unknown_certificate"


def test_no_certificate(stack: E2EStack) -> None:
    if stack.stack.mode == "on":
        # verify required: HAProxy ends the handshake, there is no HTTP request to route.
        with pytest.raises(requests.exceptions.ConnectionError):
            stack.session(None).get(stack.url("/api/whoami/"), timeout=10)
    else:
        assert _refusal(stack.session(None).get(stack.url("/api/whoami/"), timeout=10)) == "missing_certificate"


def test_forged_headers_without_a_certificate_are_ignored(stack: E2EStack) -> None:
    if stack.stack.mode == "on":
        pytest.skip("with verify required no request without a certificate gets past the handshake")
    response = stack.session(None).get(stack.url("/api/whoami/"), headers=_forged(stack), timeout=10)
    # Had any forged copy reached certauth, the demo client's certificate would have answered 200.
    assert _refusal(response) == "missing_certificate"


def test_forged_verdict_and_address_with_a_certificate_are_overwritten(stack: E2EStack) -> None:
    """A client with an unregistered certificate forges everything: certauth sees its real certificate and
    address (the audit row), and an untrusted CA's certificate stays refused despite a forged SUCCESS."""
    response = stack.session("unregistered").get(stack.url("/api/whoami/?forged"), headers=_forged(stack), timeout=10)
    assert _refusal(response) == "unknown_certificate"
    # The row this refusal updated last (rows are per client address: a believed forgery would be a new one).
    row = _latest_refusal(stack, "unknown_certificate", stack.pki.thumbprint("unregistered"))
    assert row == {"method": "GET", "path": "/api/whoami/", "client_ip": "127.0.0.1"}
    script = "from certauth.models import AuthenticationFailure as F; "
    script += "print(F.objects.filter(client_ip='203.0.113.9').count())"
    assert stack.manage("shell", "-c", script).stdout.strip().splitlines()[-1] == "0"

    response = stack.session("other-ca").get(stack.url("/api/whoami/"), headers=_forged(stack), timeout=10)
    assert _refusal(response) in {"untrusted_issuer", "proxy_verification_failed"}


def test_expired_certificate_is_routed_to_certauth_with_the_reason(stack: E2EStack) -> None:
    path = f"/api/orders/probe-{uuid.uuid4().hex[:8]}/"
    response = stack.session("expired").post(stack.url(path + "?q=1"), json={"item": "x"}, timeout=10)
    assert _refusal(response) == "certificate_expired"
    row = _latest_refusal(stack, "certificate_expired", stack.pki.thumbprint("expired"))
    assert row == {"method": "POST", "path": path, "client_ip": "127.0.0.1"}


def test_certificate_from_another_ca_is_refused(stack: E2EStack) -> None:
    response = stack.session("other-ca").get(stack.url("/api/whoami/"), timeout=10)
    assert _refusal(response) == "untrusted_issuer"


def test_the_refusal_view_is_not_reachable_directly(stack: E2EStack) -> None:
    response = stack.session("client").get(stack.url("/-/certauth/refused"), timeout=10)
    assert response.status_code == 404
