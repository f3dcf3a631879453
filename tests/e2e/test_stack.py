"""End to end through real TLS: nginx (the shipped template, in modes ``on``, ``optional`` and
``optional_no_ca``) -> gunicorn with two workers -> certauth, with certificates from the project's own dev
PKI.  Every test runs once per mode (the ``e2e`` fixture is parametrized)."""

from __future__ import annotations

import json
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
    # "on": nginx's 496 goes to certauth's refusal view, which sees no certificate header; "optional" and
    # "optional_no_ca": the request reaches the API view without one.
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


def test_healthz_needs_no_certificate_except_with_on(e2e: E2EStack) -> None:
    response = e2e.session(None).get(e2e.url("/healthz"), timeout=10)
    if e2e.stack.mode == "on":
        assert _refusal(response) == "missing_certificate"
    else:
        assert response.status_code == 200
    # Any certificate nginx accepts will do with "on" (Stack's own health check uses the demo client's).
    assert e2e.session("unregistered").get(e2e.url("/healthz"), timeout=10).status_code == 200


def _last_refusal(e2e: E2EStack, reason: str, thumbprint: str = "") -> dict[str, str]:
    """The method and path of the latest audit row for ``reason`` (and ``thumbprint``), read from the database."""
    script = (
        "import json; from certauth.models import AuthenticationFailure as F; "
        f"row = F.objects.filter(reason={reason!r}, thumbprint_sha256={thumbprint!r}).latest('last_seen'); "
        "print(json.dumps({'method': row.method, 'path': row.path}))"
    )
    return dict(json.loads(e2e.manage("shell", "-c", script).stdout.strip().splitlines()[-1]))


_REFUSAL_LINE = '"GET /-/certauth/refused HTTP/1.1" 401'


def _access_log_after(e2e: E2EStack, before: int, refusals: int) -> list[str]:
    """gunicorn's access log after its first ``before`` lines, once it holds ``refusals`` more answers of the
    refusal view (a worker writes its line after the response has gone out; waits up to 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        lines = e2e.stack.access_log.read_text().splitlines()[before:]
        if sum(_REFUSAL_LINE in line for line in lines) >= refusals or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_on_lets_nothing_through_without_a_certificate(e2e: E2EStack) -> None:
    """With ``on``, a request without a certificate never reaches its view (the admin login, the schema,
    open API views, the health check): certauth's refusal view answers it, and audits the original line."""
    if e2e.stack.mode != "on":
        pytest.skip("optional modes let requests without a certificate through, by design")
    before = len(e2e.stack.access_log.read_text().splitlines())
    marker = f"probe-{uuid.uuid4().hex[:8]}"  # in each query string: in gunicorn's log only if a view ran
    session = e2e.session(None)
    for path in ["/api/ping/", "/api/schema/", "/healthz", "/admin/"]:
        response = session.get(e2e.url(f"{path}?{marker}"), timeout=10)
        assert _refusal(response) == "missing_certificate", path
        assert not response.cookies, (path, response.cookies)
    response = session.post(
        e2e.url(f"/admin/login/?next=/admin/&{marker}"), data={"username": "admin", "password": "guess"}, timeout=10
    )
    assert _refusal(response) == "missing_certificate"
    assert not response.cookies  # no csrftoken, no sessionid: the login view never ran
    # What gunicorn served for them: the refusal view, as a GET, five times; never the URL asked for.
    lines = _access_log_after(e2e, before, refusals=5)
    assert sum(_REFUSAL_LINE in line for line in lines) >= 5, lines
    assert not [line for line in lines if marker in line]
    assert _last_refusal(e2e, "missing_certificate") == {"method": "POST", "path": "/admin/login/"}


def test_optional_modes_serve_the_admin_without_a_certificate(e2e: E2EStack) -> None:
    if e2e.stack.mode == "on":
        pytest.skip("with on, the admin needs a client certificate too")
    response = e2e.session(None).get(e2e.url("/admin/login/"), timeout=10)
    assert response.status_code == 200 and "csrftoken" in response.cookies
    assert e2e.session(None).get(e2e.url("/api/ping/"), timeout=10).json()["ok"] is True


def test_refused_certificate_is_audited_under_the_original_path(e2e: E2EStack) -> None:
    # nginx refuses an expired certificate itself in every mode (495); the audit names what was asked for.
    path = f"/api/orders/probe-{uuid.uuid4().hex[:8]}/"
    before = len(e2e.stack.access_log.read_text().splitlines())
    response = e2e.session("expired").post(e2e.url(path + "?q=1"), json={"item": "x"}, timeout=10)
    assert _refusal(response) == "certificate_expired"
    assert _last_refusal(e2e, "certificate_expired", e2e.pki.thumbprint("expired")) == {"method": "POST", "path": path}
    lines = _access_log_after(e2e, before, refusals=1)
    assert any(_REFUSAL_LINE in line for line in lines) and not [line for line in lines if path in line]


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
