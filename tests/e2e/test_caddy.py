"""End to end through real TLS: Caddy 2.6 (the Caddyfile ``certauth.proxyconf.caddy`` renders) -> gunicorn with
two workers -> certauth, with the dev PKI's certificates.  Three stacks: ``optional`` (Caddy verifies a certificate
when one comes, over the unix-socket upstream) and ``optional_no_ca`` (certauth verifies the chain, over a loopback
TCP upstream), and a small ``on`` stack (Caddy refuses certificate-less handshakes).  The unit tests
(tests/test_proxyconf_caddy.py) cover the rendering, ``caddy validate`` and the headers a real Caddy sends."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certauth.client import requests_session
from certauth.devpki import DevPKI, create_dev_pki
from scripts.stack import find_proxy

from .conftest import E2EStack, _run_stack, database_for

pytestmark = pytest.mark.e2e

#: Addresses a client claims in forged headers; none may reach the audit.
FORGED_ADDRESSES = ("203.0.113.7", "203.0.113.8", "203.0.113.9", "203.0.113.10")


@pytest.fixture(scope="module", params=["optional", "optional_no_ca"])
def caddy_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    if find_proxy("caddy") is None:
        if os.geteuid() == 0:
            pytest.fail("caddy is not installed: run scripts/install-system-deps.sh")
        pytest.skip("caddy is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    mode = request.param
    upstream = "unix" if mode == "optional" else "tcp"
    base = tmp_path_factory.mktemp(f"e2e-caddy-{mode}")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with database_for(var, f"certauth_e2e_caddy_{mode.replace('_', '')}") as database_url:
        for handle in _run_stack(mode, pki, var, database_url, proxy="caddy", upstream=upstream):
            handle.manage(
                "certauth", "register", "--identity", "intermediate-client",
                "--cert", str(pki.path("via-intermediate")), "--scope", "orders:read",
            )  # fmt: skip
            yield handle


def _refusal(response: requests.Response) -> str:
    assert response.status_code == 401, (response.status_code, response.text[:500])
    assert "WWW-Authenticate" in response.headers
    return str(response.json()["reason"])


def _base64_der(pki: DevPKI, name: str) -> str:
    """Certificate ``name`` as Caddy forwards it (base64 DER): a forgery in exactly the dialect certauth reads."""
    certificate = x509.load_pem_x509_certificate(pki.path(name).read_bytes())
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


def _audit(stack: E2EStack) -> dict[str, int]:
    """Refusal counts by ``reason@client_ip`` from the stack's database."""
    script = (
        "import json; from django.db.models import Sum; from certauth.models import AuthenticationFailure as F; "
        "rows = F.objects.values('reason', 'client_ip').annotate(n=Sum('count')); "
        "print(json.dumps({f\"{r['reason']}@{r['client_ip']}\": r['n'] for r in rows}))"
    )
    return dict(json.loads(stack.manage("shell", "-c", script).stdout.strip().splitlines()[-1]))


def _audit_reaches(stack: E2EStack, key: str, count: int) -> dict[str, int]:
    """The audit once ``key`` counts at least ``count`` refusals (waits up to 10 s for the worker's write)."""
    deadline = time.monotonic() + 10
    while True:
        audit = _audit(stack)
        if audit.get(key, 0) >= count or time.monotonic() > deadline:
            return audit
        time.sleep(0.1)


def test_registered_client_gets_its_identity(caddy_stack: E2EStack) -> None:
    response = caddy_stack.session("client").get(caddy_stack.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "demo-client"
    assert response.json()["thumbprint"] == caddy_stack.pki.thumbprint("client")


def test_intermediate_issued_client_gets_its_identity(caddy_stack: E2EStack) -> None:
    pki = caddy_stack.pki
    # The leaf and its intermediate, as such a client sends them.
    session = requests_session(
        cert=pki.out_dir / "via-intermediate-chain.pem", key=pki.path("via-intermediate", "key"), ca=pki.path("ca")
    )
    response = session.get(caddy_stack.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "intermediate-client"


def test_unregistered_certificate_is_unknown(caddy_stack: E2EStack) -> None:
    response = caddy_stack.session("unregistered").get(caddy_stack.url("/api/whoami/"), timeout=10)
    assert _refusal(response) == "unknown_certificate"


def test_no_certificate_is_missing_certificate_not_a_placeholder(caddy_stack: E2EStack) -> None:
    """Caddy without a certificate would forward ``{http.request.tls.client.certificate_der_base64}`` literally
    (certauth answered malformed_certificate); the rendered matcher sends no certificate header at all."""
    before = _audit(caddy_stack)
    response = caddy_stack.session(None).get(caddy_stack.url("/api/whoami/"), timeout=10)
    assert _refusal(response) == "missing_certificate"
    after = _audit_reaches(
        caddy_stack, "missing_certificate@127.0.0.1", before.get("missing_certificate@127.0.0.1", 0) + 1
    )
    assert not [key for key in after if key.startswith("malformed_certificate@")]


def test_healthz_needs_no_certificate(caddy_stack: E2EStack) -> None:
    assert caddy_stack.session(None).get(caddy_stack.url("/healthz"), timeout=10).status_code == 200


def test_refusal_view_is_not_reachable(caddy_stack: E2EStack) -> None:
    response = caddy_stack.session(None).get(caddy_stack.url("/-/certauth/refused"), timeout=10)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "spelling",
    [
        {"cert": "X-SSL-Client-Cert", "verify": "X-SSL-Client-Verify", "ip": "X-Real-IP", "xff": "X-Forwarded-For"},
        {"cert": "x-ssl-client-cert", "verify": "x-ssl-client-verify", "ip": "x-real-ip", "xff": "x-forwarded-for"},
        {"cert": "X-SSL_Client_Cert", "verify": "X-SSL_Client_Verify", "ip": "X-Real_IP", "xff": "X-Forwarded_For"},
        {"cert": "X_SSL_CLIENT_CERT", "verify": "X_SSL_CLIENT_VERIFY", "ip": "X_REAL_IP", "xff": "X_FORWARDED_FOR"},
    ],
    ids=["dashes", "lowercase", "mixed-underscores", "underscores"],
)
def test_forged_headers_without_a_certificate_are_ignored(caddy_stack: E2EStack, spelling: dict[str, str]) -> None:
    """A client without a certificate sends a certificate, a verdict and two addresses of its own: certauth sees
    none of them (missing_certificate) and audits the real address."""
    headers = {
        spelling["cert"]: _base64_der(caddy_stack.pki, "client"),
        spelling["verify"]: "SUCCESS",
        spelling["ip"]: FORGED_ADDRESSES[0],
        spelling["xff"]: f"{FORGED_ADDRESSES[1]}, {FORGED_ADDRESSES[2]}",
        "Forwarded": f"for={FORGED_ADDRESSES[3]}",
    }
    key = "missing_certificate@127.0.0.1"
    before = _audit(caddy_stack).get(key, 0)
    session = caddy_stack.session(None)
    for _ in range(3):
        assert _refusal(session.get(caddy_stack.url("/api/whoami/"), headers=headers, timeout=10)) == (
            "missing_certificate"
        )
    audit = _audit_reaches(caddy_stack, key, before + 3)
    assert audit.get(key, 0) >= before + 3, audit
    assert not [entry for entry in audit if entry.split("@", 1)[1] in FORGED_ADDRESSES], audit


def test_forged_header_cannot_replace_the_presented_certificate(caddy_stack: E2EStack) -> None:
    forged = _base64_der(caddy_stack.pki, "client")
    response = caddy_stack.session("unregistered").get(
        caddy_stack.url("/api/whoami/"),
        headers={"X-SSL-Client-Cert": forged, "X-SSL_Client_Cert": forged, "X-Real-IP": FORGED_ADDRESSES[0]},
        timeout=10,
    )
    assert _refusal(response) == "unknown_certificate"


@pytest.mark.parametrize(("name", "reason"), [("other-ca", "untrusted_issuer"), ("expired", "certificate_expired")])
def test_certificate_caddy_cannot_verify(caddy_stack: E2EStack, name: str, reason: str) -> None:
    """``optional``: Caddy (Go's TLS) refuses it during the handshake, no HTTP answer at all.  ``optional_no_ca``:
    Caddy checks nothing and certauth refuses it with the reason."""
    session = caddy_stack.session(name)
    if caddy_stack.stack.mode == "optional":
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(caddy_stack.url("/api/whoami/"), timeout=10)
    else:
        assert _refusal(session.get(caddy_stack.url("/api/whoami/"), timeout=10)) == reason


@pytest.fixture(scope="module")
def caddy_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    """A third, small stack: ``on`` (``require_and_verify``), over the unix socket."""
    if find_proxy("caddy") is None:
        if os.geteuid() == 0:
            pytest.fail("caddy is not installed: run scripts/install-system-deps.sh")
        pytest.skip("caddy is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp("e2e-caddy-on")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with database_for(var, "certauth_e2e_caddy_on") as database_url:
        yield from _run_stack("on", pki, var, database_url, proxy="caddy")


def test_on_serves_a_verified_client_and_refuses_the_rest_at_the_handshake(caddy_on: E2EStack) -> None:
    """With ``on`` Caddy lets nothing through without a verified certificate: no certificate, another CA's or an
    expired one end the TLS handshake (no JSON 401: Caddy cannot route them to certauth)."""
    response = caddy_on.session("client").get(caddy_on.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "demo-client"
    assert _refusal(caddy_on.session("unregistered").get(caddy_on.url("/api/whoami/"), timeout=10)) == (
        "unknown_certificate"
    )
    for name in (None, "other-ca", "expired"):
        with pytest.raises(requests.exceptions.ConnectionError):
            caddy_on.session(name).get(caddy_on.url("/healthz"), timeout=10)
