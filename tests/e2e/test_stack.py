"""End to end through real TLS: nginx (the shipped template, in modes ``on`` and ``optional_no_ca``) ->
gunicorn with two workers -> certauth, with certificates from the project's own dev PKI.  Every test runs
once per mode (the ``e2e`` fixture is parametrized)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests

from scripts.stack import REPO

from .conftest import E2EStack

pytestmark = pytest.mark.e2e


def _refusal(response: requests.Response) -> str:
    assert response.status_code == 401, (response.status_code, response.text[:500])
    assert "WWW-Authenticate" in response.headers
    return str(response.json()["reason"])


def test_registered_client_gets_its_identity(e2e: E2EStack) -> None:
    response = e2e.session("client").get(e2e.url("/api/whoami/"), timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identity"] == "demo-client"
    assert body["thumbprint"] == e2e.pki.thumbprint("client")


def test_no_certificate_is_missing_certificate(e2e: E2EStack) -> None:
    # "on": nginx's 496 is routed to certauth, which sees no certificate header; "optional_no_ca": the
    # request reaches certauth without one.
    assert _refusal(e2e.session(None).get(e2e.url("/api/whoami/"), timeout=10)) == "missing_certificate"


def test_unregistered_certificate_is_unknown(e2e: E2EStack) -> None:
    response = e2e.session("unregistered").get(e2e.url("/api/whoami/"), timeout=10)
    assert _refusal(response) == "unknown_certificate"


def test_expired_certificate_refused_by_nginx_reaches_certauth(e2e: E2EStack) -> None:
    # nginx answers 495 itself (in optional_no_ca too); error_page hands the request to certauth with the
    # certificate and nginx's verdict.
    response = e2e.session("expired").get(e2e.url("/api/whoami/"), timeout=10)
    assert _refusal(response) == "certificate_expired"


def test_certificate_from_another_ca_is_refused(e2e: E2EStack) -> None:
    response = e2e.session("other-ca").get(e2e.url("/api/whoami/"), timeout=10)
    assert _refusal(response) in {"untrusted_issuer", "proxy_verification_failed"}


@pytest.mark.parametrize(
    "header",
    [
        "X-SSL-Client-Cert",  # the real name: proxy_set_header overwrites it
        "x-ssl-client-cert",
        "X-SSL_Client_Cert",  # underscore alias, same META key in Django: nginx drops it
        "X_SSL_CLIENT_CERT",
    ],
)
def test_forged_certificate_header_without_a_certificate_is_refused(e2e: E2EStack, header: str) -> None:
    forged = quote(e2e.pki.path("client").read_text(), safe="")
    response = e2e.session(None).get(
        e2e.url("/api/whoami/"),
        headers={header: forged, "X-SSL-Client-Verify": "SUCCESS", "X-Real-IP": "127.0.0.1"},
        timeout=10,
    )
    assert _refusal(response) == "missing_certificate"


def test_forged_header_cannot_replace_the_presented_certificate(e2e: E2EStack) -> None:
    forged = quote(e2e.pki.path("client").read_text(), safe="")
    response = e2e.session("unregistered").get(
        e2e.url("/api/whoami/"), headers={"X-SSL_Client_Cert": forged, "X-SSL-Client-Cert": forged}, timeout=10
    )
    assert _refusal(response) == "unknown_certificate"


def test_healthz_needs_no_certificate(e2e: E2EStack) -> None:
    assert e2e.session(None).get(e2e.url("/healthz"), timeout=10).status_code == 200


def _access_log_pids(e2e: E2EStack, marker: str) -> set[str]:
    lines = [line for line in e2e.stack.access_log.read_text().splitlines() if marker in line]
    return {match.group(1) for line in lines if (match := re.search(r"pid=<?(\d+)", line))}


def _burst(e2e: E2EStack, name: str, marker: str, count: int = 20) -> list[requests.Response]:
    """``count`` requests, each on a fresh TLS connection, several at once so both workers answer."""

    def one(index: int) -> requests.Response:
        with e2e.session(name) as session:
            return session.get(e2e.url(f"/api/whoami/?probe={marker}-{index}"), timeout=10)

    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(one, range(count)))


def test_revocation_reaches_every_worker_within_two_seconds(e2e: E2EStack) -> None:
    # Its own certificate, so the other tests keep a valid demo client whatever the order.
    e2e.manage(
        "certauth", "register", "--identity", "revocation-probe", "--cert", str(e2e.pki.path("client2")),
        "--scope", "orders:read",
    )  # fmt: skip
    warm = f"warm-{uuid.uuid4().hex[:8]}"
    # Both workers have answered for this certificate (and may have cached the decision).
    for _attempt in range(5):
        assert all(r.status_code == 200 for r in _burst(e2e, "client2", warm))
        if len(_access_log_pids(e2e, warm)) >= 2:
            break
    assert len(_access_log_pids(e2e, warm)) >= 2, "the requests did not reach both gunicorn workers"

    e2e.manage("certauth", "revoke", "--thumbprint", e2e.pki.thumbprint("client2"), "--reason", "key_compromise")
    time.sleep(1.5)
    after = f"after-{uuid.uuid4().hex[:8]}"
    responses = _burst(e2e, "client2", after)
    assert [_refusal(r) for r in responses] == ["certificate_revoked"] * len(responses)
    assert len(_access_log_pids(e2e, after)) >= 2, "the refusals did not come from both workers"


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("GET", "/api/whoami/", {"X-SSL-Client-Cert": "%%%garbage"}, None),
        ("GET", "/api/whoami/", {"X-SSL-Client-Verify": "FAILED:" + "x" * 4000}, None),
        ("GET", "/api/whoami/", {"X-Forwarded-For": "not-an-ip, ::zz"}, None),
        ("GET", "/api/whoami/", {"Host": "evil.example"}, None),
        ("GET", "/api/orders/", {}, None),
        ("POST", "/api/orders/", {"Content-Type": "application/json"}, b"{not json"),
        ("POST", "/api/orders/", {"Content-Type": "application/json"}, b'{"item": "x"}'),
        ("GET", "/api/whoami/%00", {}, None),
        ("GET", "/" + "a" * 3000, {}, None),
        ("GET", "/admin/", {}, None),
        ("GET", "/static/admin/css/base.css", {}, None),
    ],
)
@pytest.mark.parametrize("name", [None, "client", "expired", "self-signed"])
def test_no_request_gets_a_server_error(
    e2e: E2EStack, name: str | None, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    response = e2e.session(name).request(method, e2e.url(path), headers=headers, data=body, timeout=10)
    assert response.status_code < 500, (response.status_code, response.text[:500])


def test_plain_http_to_the_tls_port_is_not_a_server_error(e2e: E2EStack) -> None:
    response = requests.get(f"http://127.0.0.1:{e2e.stack.port}/api/whoami/", timeout=10)
    assert response.status_code == 400


def test_stack_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.stack", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
