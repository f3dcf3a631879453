"""End to end through the real Apache httpd 2.4 (``certauth.proxyconf.apache``, standalone) -> gunicorn -> certauth,
with the dev PKI, in each mode Apache renders: ``optional`` (unix socket upstream), ``on`` (``SSLVerifyClient
require``, loopback TCP upstream) and ``optional_no_ca`` (certauth verifies the chain).

Where Apache refuses a certificate itself it does so in the TLS handshake (no certificate with ``on``; an
expired or unknown-CA one with ``optional``; an expired one with ``optional_no_ca``): there is no request to
route to certauth's JSON 401, the client sees a TLS error (docs/proxies.md)."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from certauth.client import build_ssl_context, requests_session
from certauth.devpki import create_dev_pki
from certauth.proxyconf import find_proxy
from scripts.stack import Stack

from .conftest import E2EStack, database_for

pytestmark = pytest.mark.e2e

#: A loopback address that is not Apache's own, so the audit can tell the client's address from the proxy's.
CLIENT_SOURCE = "127.0.0.2"


@pytest.fixture(
    scope="module",
    params=[("optional", "unix", "dangerous"), ("on", "tcp", "drop"), ("optional_no_ca", "unix", "drop")],
    ids=["optional-unix", "on-tcp", "optional_no_ca-unix"],
)
def apache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    if find_proxy("apache") is None:
        if os.geteuid() == 0:
            pytest.fail("apache2 is not installed: run scripts/install-system-deps.sh")
        pytest.skip("apache2 is not installed: `make test` installs it (scripts/install-system-deps.sh, as root)")
    # gunicorn's --header-map: "dangerous" hands underscore spellings (X_SSL_Client_Cert) to Django under the
    # same META key as the real header, as uvicorn does: then only Apache's unset lines stop a forgery.
    mode, upstream, header_map = request.param
    base = tmp_path_factory.mktemp(f"e2e-apache-{mode}")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with database_for(var, f"certauth_e2e_apache_{mode.replace('_', '')}") as database_url:
        stack = Stack(
            var,
            pki_dir=pki.out_dir,
            port=0,
            mode=mode,
            workers=2,
            proxy="apache",
            upstream=upstream,
            server_args=["--header-map", header_map],
            env={
                "DATABASE_URL": database_url,
                "CERTAUTH_VAR_DIR": str(var),
                "SECRET_KEY": "e2e-not-secret",
                "DEBUG": "false",
            },
        )
        handle = E2EStack(stack=stack, pki=pki, env=stack.env)
        handle.manage("migrate", "--noinput", "--verbosity", "0")
        # The root only, as in production: an intermediate-issued client authenticates only because Apache
        # forwards the intermediate it sent (CHAIN_HEADER).
        handle.manage("certauth", "authority", "add", "--name", "dev root CA", "--cert", str(pki.path("ca")))
        for identity, name in (("demo-client", "client"), ("intermediate-client", "via-intermediate")):
            handle.manage(
                "certauth", "register", "--identity", identity, "--cert", str(pki.path(name)), "--scope", "orders:read"
            )
        with stack:
            yield handle


def _refusal(response: requests.Response) -> str:
    assert response.status_code == 401, (response.status_code, response.text[:500])
    assert "WWW-Authenticate" in response.headers
    return str(response.json()["reason"])


def _refused_at_tls(apache: E2EStack, session: requests.Session, path: str = "/api/whoami/") -> None:
    """Apache refuses in the handshake: the client gets no HTTP answer at all."""
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        session.get(apache.url(path), timeout=10)


def _get_from(
    apache: E2EStack, name: str | None, path: str, headers: dict[str, str], *, source: str = CLIENT_SOURCE
) -> tuple[int, dict[str, Any]]:
    """GET ``path`` from loopback address ``source`` with certificate ``name`` (None: none) and raw ``headers``
    (http.client sends underscore names as given)."""
    pki = apache.pki
    context = build_ssl_context(
        ca=pki.path("ca"), cert=pki.path(name) if name else None, key=pki.path(name, "key") if name else None
    )
    connection = http.client.HTTPSConnection(
        apache.stack.host, apache.stack.port, context=context, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def _audit(apache: E2EStack, **filters: object) -> list[dict[str, str]]:
    """The audit rows (reason, client_ip, proxy_ip, thumbprint, path) matching ``filters``, from the database."""
    script = (
        "import json; from certauth.models import AuthenticationFailure as F; "
        f"print(json.dumps([dict(reason=r.reason, client_ip=r.client_ip, proxy_ip=r.proxy_ip, "
        f"thumbprint=r.thumbprint_sha256, path=r.path) for r in F.objects.filter(**{filters!r})]))"
    )
    return list(json.loads(apache.manage("shell", "-c", script).stdout.strip().splitlines()[-1]))


def _forgeries(apache: E2EStack) -> dict[str, str]:
    """A forged certificate, verdict, client address and request line, in dash and underscore spellings."""
    forged = quote(apache.pki.path("client").read_text(), safe="")
    return {
        "X-SSL-Client-Cert": forged,
        "X_SSL_Client_Cert": forged,
        "X-SSL_Client-Cert": forged,
        "X-SSL-Client-Verify": "SUCCESS",
        "X_SSL_Client_Verify": "SUCCESS",
        "X-Real-IP": "203.0.113.7",
        "X_Real_IP": "203.0.113.8",
        "X-Forwarded-For": "203.0.113.9",
        "X_Forwarded_For": "203.0.113.10",
        "Client-Cert": f":{forged}:",
        "X-Certauth-Original-URI": "/forged/",
        "X_Certauth_Original_Method": "DELETE",
    }


def test_registered_client_gets_its_identity(apache: E2EStack) -> None:
    response = apache.session("client").get(apache.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "demo-client"
    assert response.json()["thumbprint"] == apache.pki.thumbprint("client")


def test_intermediate_issued_client_gets_its_identity(apache: E2EStack) -> None:
    pki = apache.pki
    session = requests_session(
        cert=pki.path("via-intermediate", "chain"), key=pki.path("via-intermediate", "key"), ca=pki.path("ca")
    )
    response = session.get(apache.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "intermediate-client"


def test_unregistered_certificate_is_unknown(apache: E2EStack) -> None:
    assert _refusal(apache.session("unregistered").get(apache.url("/api/whoami/"), timeout=10)) == "unknown_certificate"


def test_no_certificate(apache: E2EStack) -> None:
    if apache.stack.mode == "on":
        # SSLVerifyClient require: no handshake without a certificate, /healthz included.
        _refused_at_tls(apache, apache.session(None))
        _refused_at_tls(apache, apache.session(None), "/healthz")
        return
    assert _refusal(apache.session(None).get(apache.url("/api/whoami/"), timeout=10)) == "missing_certificate"
    assert apache.session(None).get(apache.url("/healthz"), timeout=10).status_code == 200


def test_password_logins_leave_no_refusal_of_a_null_certificate(apache: E2EStack) -> None:
    """The issue's trap: ``"%{SSL_CLIENT_CERT}s"`` sends ``(null)`` without a certificate, and certauth logged a
    malformed certificate for every admin page.  The header is set only when a certificate came."""
    if apache.stack.mode == "on":
        pytest.skip("with on, nothing without a certificate reaches Django")
    session = apache.session(None)
    response = session.get(apache.url("/admin/login/"), timeout=10)
    assert response.status_code == 200 and "csrftoken" in response.cookies
    # The CSRF origin check passes: Django sees the Host with the port the browser used.
    response = session.post(
        apache.url("/admin/login/"),
        data={"username": "admin", "password": "wrong", "csrfmiddlewaretoken": response.cookies["csrftoken"]},
        headers={"Referer": apache.url("/admin/login/"), "Origin": apache.base_url},
        timeout=10,
    )
    assert response.status_code == 200, response.status_code  # the form again, not 403 (CSRF)
    # With "(null)" in the header certauth would read a certificate that does not parse, with Apache's verdict
    # NONE: proxy_verification_failed instead of missing_certificate, audited for every such request.
    assert _refusal(session.get(apache.url("/api/whoami/"), timeout=10)) == "missing_certificate"
    assert _audit(apache, reason__in=["malformed_certificate", "proxy_verification_failed"]) == []


def test_forged_headers_without_a_certificate_are_ignored(apache: E2EStack) -> None:
    """A client without a certificate forging the certificate, the verdict and its address, in dash and
    underscore spellings: refused as missing_certificate, audited under its real address."""
    if apache.stack.mode == "on":
        pytest.skip("with on, a client without a certificate does not get past the handshake")
    status, body = _get_from(apache, None, "/api/whoami/", _forgeries(apache))
    assert (status, body.get("reason")) == (401, "missing_certificate")
    addresses = {row["client_ip"] for row in _audit(apache, reason="missing_certificate")}
    assert CLIENT_SOURCE in addresses and addresses <= {"127.0.0.1", CLIENT_SOURCE}, addresses


def test_forged_headers_cannot_replace_the_presented_certificate(apache: E2EStack) -> None:
    status, body = _get_from(apache, "unregistered", "/api/whoami/", _forgeries(apache))
    assert (status, body.get("reason")) == (401, "unknown_certificate")
    rows = _audit(apache, reason="unknown_certificate", thumbprint_sha256=apache.pki.thumbprint("unregistered"))
    addresses = {row["client_ip"] for row in rows}
    assert CLIENT_SOURCE in addresses and addresses <= {"127.0.0.1", CLIENT_SOURCE}, rows


def test_every_audited_address_is_a_real_one(apache: E2EStack) -> None:
    """After the forgeries above: no audit row in this stack names an address a client wrote."""
    addresses = {row["client_ip"] for row in _audit(apache)}
    assert addresses <= {"127.0.0.1", CLIENT_SOURCE}, addresses


def test_certificate_from_another_ca_is_refused(apache: E2EStack) -> None:
    session = apache.session("other-ca")
    if apache.stack.mode == "optional_no_ca":
        # Apache lets it through (its verdict is not SUCCESS); certauth checks the chain and refuses it.
        assert _refusal(session.get(apache.url("/api/whoami/"), timeout=10)) == "untrusted_issuer"
    else:
        _refused_at_tls(apache, session)


def test_expired_certificate_is_refused_at_tls(apache: E2EStack) -> None:
    # mod_ssl refuses an expired certificate in the handshake in every mode, optional_no_ca included.
    _refused_at_tls(apache, apache.session("expired"))


def test_refusal_view_is_not_reachable_directly(apache: E2EStack) -> None:
    session = apache.session("client")
    for path in ["/-/certauth/refused", "/%2D/certauth/refused", "/-/certauth/refused?x=1"]:
        assert session.get(apache.url(path), timeout=10).status_code == 403, path
