"""Issue 12 through real nginx and real TLS: each PKI tool's client certificate (tests/pkitools.py) presented by
``requests`` to nginx, which forwards it to gunicorn.  Two stacks for the module:

* ``optional_no_ca``: nginx asks for a certificate and verifies nothing, certauth builds and checks the chain;
* ``optional``: nginx verifies the certificate against its ``ssl_client_certificate`` bundle, so the bundle holds
  the dev CAs AND every tool's CA and intermediate (written into the dev PKI's ``ca-bundle.pem``, which Stack
  hands nginx, before nginx starts).

Each tool's CA is added with the ``certauth authority add`` command and each client with ``certauth register``,
from the files the tool wrote, as an operator would, before the stack starts (no worker has a cached registry
yet); all in one ``manage.py shell`` process (see _COMMANDS_SCRIPT)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certauth.client import requests_session
from certauth.devpki import create_dev_pki
from scripts.stack import REPO, find_nginx

from ..pkitools import ACCEPTED, BUILDERS, RealIssuers, ToolPKI, cfssl, tool_present
from .conftest import E2EStack, _run_stack, database_for

pytestmark = pytest.mark.e2e


@dataclass
class IssuerStack:
    e2e: E2EStack
    issuers: dict[str, ToolPKI]
    #: case -> what `manage.py` said when adding its CA or registering its client failed.
    setup_errors: dict[str, str]


#: Runs the ``certauth authority add`` / ``certauth register`` commands given as JSON on standard input, case by
#: case, in ONE ``manage.py shell`` process: the same management commands as on the command line, without a
#: Django start-up per command (23 of them: a minute on a busy two-core machine).
_COMMANDS_SCRIPT = """
import json, sys
from django.core.management import call_command
errors = {}
for case, commands in json.loads(sys.stdin.read()).items():
    for command in commands:
        try:
            call_command(*command)
        except BaseException as error:  # CommandError, or SystemExit from argument parsing
            errors[case] = f"manage.py {' '.join(command)}: {type(error).__name__}: {error}"
            break
print("ERRORS=" + json.dumps(errors))
"""


def _add_tools(handle: E2EStack, issuers: dict[str, ToolPKI]) -> dict[str, str]:
    """Add each tool's CA(s) and register its client from the files the tool wrote; returns case -> error."""
    commands = {
        case: [
            *(
                ["certauth", "authority", "add", "--name", f"{case} CA {number}", "--cert", str(path)]
                for number, path in enumerate(issued.authorities)
            ),
            ["certauth", "register", "--identity", issued.identity, "--cert", str(issued.client_cert)],
        ]
        for case, issued in issuers.items()
    }
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "shell", "-c", _COMMANDS_SCRIPT],
        cwd=REPO,
        env=handle.env,
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    reported = [line for line in result.stdout.splitlines() if line.startswith("ERRORS=")]
    assert result.returncode == 0 and reported, f"{result.stdout}{result.stderr}"
    return dict(json.loads(reported[-1].removeprefix("ERRORS=")))


@pytest.fixture(scope="module", params=["optional_no_ca", "optional"])
def issuer_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, real_issuers: RealIssuers
) -> Iterator[IssuerStack]:
    if find_nginx() is None:
        pytest.skip("nginx is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    mode = request.param
    # Only the tools present (a missing one skips or fails its own tests, see tests/pkitools.require_tool).
    issuers = {case: real_issuers[case] for case, (program, _) in BUILDERS.items() if tool_present(program)}
    base = tmp_path_factory.mktemp(f"e2e-issuers-{mode}")
    pki = create_dev_pki(base / "pki")
    # nginx verifies against ca-bundle.pem in `optional` mode: the dev root + intermediate, then the tools' CAs.
    bundle = pki.out_dir / "ca-bundle.pem"
    # The tools' files as they wrote them (certtool puts a text description before each PEM block), as `cat` would.
    bundle.write_bytes(
        b"\n".join([bundle.read_bytes(), *(p.read_bytes() for i in issuers.values() for p in i.authorities)])
    )
    var = base / "var"
    var.mkdir()
    errors: dict[str, str] = {}
    with database_for(var, f"certauth_e2e_issuers{mode.replace('_', '')}") as database_url:
        for started in _run_stack(
            mode, pki, var, database_url, prepare=lambda h: errors.update(_add_tools(h, issuers))
        ):
            yield IssuerStack(started, issuers, errors)


def whoami(stack: IssuerStack, case: str) -> tuple[int, dict[str, str]]:
    assert case not in stack.setup_errors, stack.setup_errors[case]
    issued = stack.issuers[case]
    session = requests_session(cert=issued.client_cert, key=issued.client_key, ca=stack.e2e.pki.path("ca"))
    response = session.get(stack.e2e.url("/api/whoami/"), timeout=10)
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[:500]
    return response.status_code, response.json()


@pytest.mark.parametrize("case", ACCEPTED)
def test_each_tools_client_through_nginx(issuer_stack: IssuerStack, real_issuers: RealIssuers, case: str) -> None:
    issued = real_issuers[case]  # skips or fails here when the tool is missing
    status, body = whoami(issuer_stack, case)
    assert status == 200, body
    assert body["identity"] == issued.identity


def test_the_tutorial_recipe_v1_client_is_refused_through_nginx(
    issuer_stack: IssuerStack, real_issuers: RealIssuers
) -> None:
    """The v1 certificate cannot even be registered (`certauth register` says how to re-issue it), and presented
    anyway it is refused with the same fix."""
    real_issuers["openssl-seed-v1"]
    refusal = issuer_stack.setup_errors.get("openssl-seed-v1", "")
    assert "could never authenticate (unsupported_certificate)" in refusal and "-extfile" in refusal, refusal
    issued = issuer_stack.issuers["openssl-seed-v1"]
    session = requests_session(cert=issued.client_cert, key=issued.client_key, ca=issuer_stack.e2e.pki.path("ca"))
    response = session.get(issuer_stack.e2e.url("/api/whoami/"), timeout=10)
    body = response.json()
    assert (response.status_code, body["reason"]) == (401, "unsupported_certificate"), body
    assert "-extfile" in body["detail"], body


def test_a_look_alike_tool_ca_is_refused(issuer_stack: IssuerStack, real_issuers: RealIssuers, tmp_path: Path) -> None:
    """A second cfssl CA made with the same recipe (same subject as the trusted cfssl CA, another key), in
    neither nginx's bundle nor the registry: in ``optional`` mode nginx's own verification fails (so the bundle
    is what let the other tools' clients through nginx); in ``optional_no_ca`` certauth finds the trusted CA's
    name but its signature does not verify."""
    real_issuers["cfssl"]  # skips or fails when cfssl is missing
    look_alike = cfssl(tmp_path)
    session = requests_session(
        cert=look_alike.client_cert, key=look_alike.client_key, ca=issuer_stack.e2e.pki.path("ca")
    )
    response = session.get(issuer_stack.e2e.url("/api/whoami/"), timeout=10)
    assert response.status_code == 401, response.text[:500]
    body = response.json()
    if issuer_stack.e2e.stack.mode == "optional":
        assert body["reason"] == "untrusted_issuer", body
        assert body["detail"].startswith("The TLS proxy refused the certificate"), body
    else:
        assert body["reason"] == "chain_invalid", body
