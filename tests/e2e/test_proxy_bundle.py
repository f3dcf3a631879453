"""The real nginx's CA file follows certauth's registry (issue 12), end to end: a CA added with
``manage.py certauth authority add`` is refused by nginx until ``certauth doctor`` (which says so) is
followed: ``certauth authority bundle --output`` and a reload of nginx; then a client of that CA gets 200
through nginx in mode ``optional`` (what ``make run`` runs).  Also: the no-certificate values of issue 12 reach
certauth as ``missing_certificate`` through the real stack, and the admin login page leaves no refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certauth import devpki
from certauth.client import requests_session
from certauth.devpki import create_dev_pki
from scripts.stack import Stack, find_nginx, trust_dev_authorities

from .conftest import E2EStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def registry_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    """nginx (``optional``) verifying against the registry's bundle, as ``make run`` sets it up."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp("e2e-bundle")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    bundle = var / "proxy-ca-bundle.pem"
    stack = Stack(
        var,
        pki_dir=pki.out_dir,
        port=0,
        mode="optional",
        client_ca=bundle,
        env={"DATABASE_URL": f"sqlite:///{var / 'e2e.sqlite3'}", "CERTAUTH_VAR_DIR": str(var), "DEBUG": "false"},
    )
    handle = E2EStack(stack=stack, pki=pki, env=stack.env)
    handle.manage("migrate", "--noinput", "--verbosity", "0")
    trust_dev_authorities(handle.env, pki.out_dir)
    handle.manage("certauth", "authority", "bundle", "--output", str(bundle))
    handle.manage("certauth", "register", "--identity", "demo-client", "--cert", str(pki.path("client")))
    with stack:
        yield handle


def test_a_new_authority_reaches_nginx_through_the_bundle(registry_stack: E2EStack, tmp_path: Path) -> None:
    e2e = registry_stack
    assert e2e.env["CERTAUTH_PROXY_CA_BUNDLE"] == str(e2e.stack.client_ca)
    assert f"ssl_client_certificate {e2e.stack.client_ca};" in e2e.stack.proxy_conf.read_text()
    assert e2e.manage("certauth", "doctor").returncode == 0

    ca = devpki.make_ca("certauth e2e partner CA")
    client = devpki.issue_client(ca, "partner-service")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "client.pem").write_bytes(client.cert_pem())
    (tmp_path / "client.key").write_bytes(client.key_pem())
    e2e.manage("certauth", "authority", "add", "--name", "partner", "--cert", str(tmp_path / "ca.pem"))
    e2e.manage("certauth", "register", "--identity", "partner", "--cert", str(tmp_path / "client.pem"))

    def whoami() -> tuple[int, dict[str, str]]:
        session = requests_session(cert=tmp_path / "client.pem", key=tmp_path / "client.key", ca=e2e.pki.path("ca"))
        with session:
            response = session.get(e2e.url("/api/whoami/"), timeout=10)
            return response.status_code, response.json()

    # Trusted by certauth, not by nginx: nginx refuses it (its verdict, through certauth's JSON 401) ...
    status, body = whoami()
    assert status == 401 and body["reason"] in {"untrusted_issuer", "proxy_verification_failed"}, body
    # ... which the doctor reports, with the fix.
    doctor = e2e.manage("certauth", "doctor", check=False)
    assert doctor.returncode == 1, doctor.stdout
    assert "'partner'" in doctor.stdout and ca.thumbprint in doctor.stdout
    assert f"certauth authority bundle --output {e2e.stack.client_ca}" in doctor.stdout
    # migrate (and `check --database default`) warns too.
    assert "certauth.W019" in e2e.manage("check", "--database", "default").stderr

    # The fix: the bundle from the registry, and nginx reloaded.
    e2e.manage("certauth", "authority", "bundle", "--output", str(e2e.stack.client_ca))
    e2e.stack.reload_proxy()
    assert e2e.manage("certauth", "doctor").returncode == 0
    status, body = whoami()
    assert status == 200 and body["identity"] == "partner", body
    # The demo client of the dev CAs still passes.
    with e2e.session("client") as session:
        assert session.get(e2e.url("/api/whoami/"), timeout=10).status_code == 200


def test_admin_login_through_nginx_leaves_no_refusal(registry_stack: E2EStack) -> None:
    """nginx sends an empty certificate header and NONE without a client certificate: the admin's login page
    answers 200 and writes no audit row."""
    e2e = registry_stack
    with e2e.session(None) as session:
        assert session.get(e2e.url("/admin/login/"), timeout=10).status_code == 200
        response = session.get(e2e.url("/api/whoami/"), timeout=10)
    assert response.status_code == 401 and response.json()["reason"] == "missing_certificate"
    script = (
        "from certauth.models import AuthenticationFailure as F; "
        "print(F.objects.filter(path__startswith='/admin').count())"
    )
    count = e2e.manage("shell", "--no-imports", "-c", script)
    assert count.stdout.strip() == "0"
