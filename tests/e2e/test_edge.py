"""The host is hostile too (issue 15, classes 2 and 5), against the real stack: another local user trying
to be the proxy, a certificate too large for the usual header limits, and a flood of half-open
connections from another loopback address.  Everything stays on loopback and is bounded in count."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth import devpki

from .conftest import E2EStack
from .support import ClientCert, audit_counts, dev_client, make_stack, setup_registry

#: A local account with no business with certauth.
NEIGHBOUR = "nobody"
#: The system interpreter (the test virtualenv may live where the neighbour cannot read).
SYSTEM_PYTHON = "/usr/bin/python3"

# What the neighbour runs: the request nginx would send, straight to every upstream address nginx uses.
_NEIGHBOUR_SCRIPT = r"""
import http.client, json, socket, sys
spec = json.loads(sys.stdin.read())
results = []
for target in spec["targets"]:
    try:
        if target.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(20)
            sock.connect(target[len("unix:"):])
            connection = http.client.HTTPConnection("localhost", timeout=20)
            connection.sock = sock
        else:
            host, port = target.rsplit(":", 1)
            connection = http.client.HTTPConnection(host, int(port), timeout=20)
        connection.request("GET", "/api/whoami/", headers=spec["headers"])
        response = connection.getresponse()
        results.append([target, response.status, response.read().decode("utf-8", "replace")[:2000]])
    except OSError as error:
        results.append([target, "error", type(error).__name__])
print(json.dumps(results))
"""


def _world_traversable_base(name: str) -> Path:
    """A directory the neighbour may traverse (pytest's own tmp dirs are 0700): so what stops it is the
    stack's own permissions, not the test's."""
    base = Path(tempfile.mkdtemp(prefix=f"certauth-{name}-"))
    base.chmod(0o755)
    return base


def _start(name: str, **kwargs: object) -> Iterator[E2EStack]:
    base = _world_traversable_base(name)
    try:
        e2e = make_stack(base, mode="optional", **kwargs)  # type: ignore[arg-type]
        (base / "var").chmod(0o755)
        setup_registry(e2e, [("demo-client", dev_client(e2e.pki, "client"), ["orders:read"])])
        with e2e.stack:
            yield e2e
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[E2EStack]:
    """The reference stack as `make run` starts it (upstream as the stack chooses by default)."""
    yield from _start("edge")


@pytest.fixture(scope="module")
def tcp_stack() -> Iterator[E2EStack]:
    """nginx reaching gunicorn over loopback TCP, which every local user reaches too."""
    yield from _start("edge-tcp", upstream="tcp")


def _upstreams(e2e: E2EStack) -> list[str]:
    """The addresses nginx proxies to, read from the nginx.conf the stack runs with."""
    return re.findall(r"^\s*server (\S+);", e2e.stack.nginx_conf.read_text(), flags=re.MULTILINE)


def _as_neighbour(e2e: E2EStack, cert: ClientCert) -> list[list[object]]:
    """The attack of issue 15 as an unprivileged local user: a registered certificate (public data) with a
    SUCCESS verdict and a guessed proxy secret, sent straight to gunicorn."""
    if shutil.which("runuser") is None or not Path(SYSTEM_PYTHON).exists():
        pytest.skip("needs runuser and /usr/bin/python3")
    spec = {
        "targets": _upstreams(e2e),
        "headers": {
            "X-SSL-Client-Cert": quote(cert.cert.read_text(), safe=""),
            "X-SSL-Client-Verify": "SUCCESS",
            "X-Certauth-Proxy-Secret": "guessed-by-the-neighbour-0123456789",
            "X-Forwarded-Proto": "https",
            "Host": "localhost",
        },
    }
    try:
        result = subprocess.run(
            ["runuser", "-u", NEIGHBOUR, "--", SYSTEM_PYTHON, "-c", _NEIGHBOUR_SCRIPT],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except PermissionError:
        pytest.skip("runuser needs root")
    if result.returncode != 0 and "may not be used by non-root" in result.stderr + result.stdout:
        pytest.skip("runuser needs root")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# --- class 2: other local users are not the proxy -------------------------------------------------------
def test_a_neighbour_cannot_open_the_reference_stacks_gunicorn(stack: E2EStack) -> None:
    client = dev_client(stack.pki, "client")
    results = _as_neighbour(stack, client)
    assert results, "nginx.conf names no upstream"
    for target, status, body in results:
        assert status != 200, f"{NEIGHBOUR} authenticated as demo-client through {target}: {body}"
        if str(target).startswith("unix:"):
            assert (status, body) == ("error", "PermissionError"), (target, status, body)
        else:
            assert status == 401 and json.loads(str(body))["reason"] == "untrusted_proxy", (target, status, body)
    # The default stack listens on no TCP port for gunicorn at all, and its socket directory is private.
    assert all(target.startswith("unix:") for target, _, _ in results)
    socket_dir = Path(str(results[0][0])[len("unix:") :]).parent
    assert socket_dir.stat().st_mode & 0o077 == 0
    # nginx itself still serves the real client (it has the socket and the secret).
    assert client.session(stack.pki.path("ca")).get(stack.url("/api/whoami/"), timeout=30).status_code == 200


def test_a_neighbour_reaching_gunicorn_over_tcp_is_untrusted_proxy(tcp_stack: E2EStack) -> None:
    client = dev_client(tcp_stack.pki, "client")
    results = _as_neighbour(tcp_stack, client)
    assert results and all(not str(target).startswith("unix:") for target, _, _ in results)
    for target, status, body in results:
        assert status == 401, (target, status, body)
        answer = json.loads(str(body))
        assert answer["reason"] == "untrusted_proxy" and "X-Certauth-Proxy-Secret" in answer["detail"]
    # Audited (an untrusted sender's certificate is not parsed, so the row names no thumbprint).
    assert sum(n for (reason, _), n in audit_counts(tcp_stack).items() if reason == "untrusted_proxy") == len(results)
    assert client.session(tcp_stack.pki.path("ca")).get(tcp_stack.url("/api/whoami/"), timeout=30).status_code == 200


# --- class 5: sizes ----------------------------------------------------------------------------------------
def _big_certificate(e2e: E2EStack, name: str, *, self_signed: bool) -> tuple[ClientCert, int]:
    """A client certificate of more than 60 KB (DER), made large by subjectAltNames."""
    dns_names = [f"host-{index:05d}.{'x' * 40}.example.com" for index in range(1000)]
    if self_signed:
        leaf = devpki.self_signed_client(name, dns_names=dns_names)
    else:
        root = devpki.Issued(
            x509.load_pem_x509_certificate(e2e.pki.path("ca").read_bytes()),
            serialization.load_pem_private_key(e2e.pki.path("ca", "key").read_bytes(), password=None),  # type: ignore[arg-type]
        )
        leaf = devpki.issue_client(root, name, dns_names=dns_names)
    directory = e2e.pki.out_dir / "big"
    directory.mkdir(exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(leaf.cert_pem())
    key.write_bytes(leaf.key_pem())
    key.chmod(0o600)
    size = len(leaf.certificate.public_bytes(serialization.Encoding.DER))
    return ClientCert(name, cert, key, leaf.thumbprint), size


@pytest.mark.parametrize("self_signed", [False, True], ids=["verified-by-nginx", "refused-by-nginx-495"])
def test_a_60_kb_certificate_gets_certauths_refusal_and_an_audit_row(stack: E2EStack, self_signed: bool) -> None:
    big, size = _big_certificate(stack, f"big-{'self' if self_signed else 'chained'}", self_signed=self_signed)
    assert size >= 60 * 1024
    before = sum(n for (reason, _), n in audit_counts(stack).items())
    response = big.session(stack.pki.path("ca")).get(stack.url("/api/whoami/"), timeout=60)
    # Not gunicorn's bare 431 (nor nginx's 400): certauth's JSON refusal with a reason code.
    assert response.status_code == 401, response.text[:300]
    body = response.json()
    assert body["reason"] in {"malformed_certificate", "self_signed_not_allowed", "untrusted_issuer"}, body
    assert body["detail"]
    after = audit_counts(stack)
    assert sum(after.values()) == before + 1
    assert any(reason == body["reason"] and n for (reason, _), n in after.items())


# --- class 5: floods ---------------------------------------------------------------------------------------
#: More half-open connections than the old standalone nginx's worker_connections (1024) could hold.
FLOOD_CONNECTIONS = 1100
#: At most this long to open them.
FLOOD_SECONDS = 60


def test_a_legitimate_client_is_served_during_a_slow_header_flood_from_another_address(stack: E2EStack) -> None:
    """Each flood connection finishes its TLS handshake and starts a request it never completes: nginx
    cannot reclaim such a connection (it would an idle one) until client_header_timeout."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    port = stack.stack.port
    flood: list[socket.socket] = []
    refused = 0
    stop_at = time.monotonic() + FLOOD_SECONDS  # bounds the flood's duration, not the verdict
    try:
        while len(flood) < FLOOD_CONNECTIONS and refused < 20 and time.monotonic() < stop_at:
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            raw.bind(("127.0.0.2", 0))  # another loopback address than the client's
            raw.settimeout(5)
            try:
                raw.connect(("127.0.0.1", port))
                slow = context.wrap_socket(raw, server_hostname="localhost")
                slow.sendall(b"GET /api/whoami/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            except OSError:
                raw.close()
                refused += 1  # nginx is out of connections (the old configuration)
                continue
            flood.append(slow)
        client = dev_client(stack.pki, "client")
        # One attempt, no retries (certauth.client's session retries): served now, not once the flood expires.
        response = requests.get(
            stack.url("/api/whoami/"), cert=(str(client.cert), str(client.key)), verify=stack.pki.path("ca"), timeout=20
        )
        assert response.status_code == 200, response.text[:300]
    finally:
        for sock in flood:
            sock.close()
