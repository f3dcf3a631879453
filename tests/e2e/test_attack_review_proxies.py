"""Attack review of the rendered proxy configurations through the REAL proxies (issue 12 part 2).

Part one: HAProxy, Apache httpd and Caddy each run their rendered standalone configuration (mode
``optional``) in front of an echo upstream that records the raw request head, and a client speaks raw
HTTP/1.x over TLS: names with trailing spaces or tabs, obs-fold, duplicates and case/underscore variants,
HTTP/1.0 without Host, absolute-form targets, Transfer-Encoding + Content-Length, Host games, and every
spelling of the refusal path.  What reached the upstream is read the way Django reads it (``HTTP_`` +
upper case, ``-`` and ``_`` alike, as uvicorn or gunicorn's ``--header-map dangerous`` hand it over): no
header certauth reads may hold a value the client wrote, and no request may reach certauth's refusal view.

Part two: a whole Apache ``optional_no_ca`` stack (certauth verifies the chain itself, and Apache forwards the
intermediates the client sent in ``X-SSL-Client-Chain``): a client that sends its own CA in the TLS chain, or
a genuine intermediate plus its own CA in the chain header, is not trusted."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth.client import build_ssl_context, requests_session
from certauth.devpki import DevPKI, create_dev_pki
from certauth.proxyconf import (
    CERTIFICATE_HEADER,
    CLIENT_IP_HEADER,
    FOREIGN_CERTIFICATE_HEADERS,
    ORIGINAL_METHOD_HEADER,
    ORIGINAL_URI_HEADER,
    PROXY_SECRET_HEADER,
    REFUSED_PATH,
    VERIFY_HEADER,
    ProxyOptions,
    apache,
    find_proxy,
    renderer,
)
from scripts.stack import Stack, free_port

from .conftest import E2EStack, database_for

pytestmark = pytest.mark.e2e

SECRET = "s3cret-0123456789_abcdefghij-XYZ"
#: The META keys certauth reads (its own headers, the chain header of the Apache dialect, the other dialects').
READ = {
    "HTTP_" + name.upper().replace("-", "_")
    for name in (
        CERTIFICATE_HEADER,
        VERIFY_HEADER,
        CLIENT_IP_HEADER,
        "X-Forwarded-For",
        PROXY_SECRET_HEADER,
        ORIGINAL_URI_HEADER,
        ORIGINAL_METHOD_HEADER,
        apache.CHAIN_HEADER,
        *FOREIGN_CERTIFICATE_HEADERS,
    )
}
#: What the client writes in every forgery: none of these may reach a header certauth reads.
FORGED = re.compile(r"6\.6\.6\.|forged|Zm9yZ2Vk|mine", re.IGNORECASE)


class _Echo:
    """An upstream that records each request head and answers 200 with it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        data = b""
        with contextlib.suppress(OSError), connection:
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0]
            self.heads.append(head)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


@dataclass
class LiveProxy:
    name: str
    port: int
    pki: DevPKI
    echo: _Echo
    contexts: dict[str | None, ssl.SSLContext] = field(default_factory=dict)

    def send(self, request: bytes, cert: str | None = None) -> tuple[bytes, list[bytes]]:
        """Send raw ``request`` over TLS (certificate ``cert``); the status line and the heads the upstream got."""
        if cert not in self.contexts:
            context = build_ssl_context(
                ca=self.pki.path("ca"),
                cert=self.pki.path(cert) if cert else None,
                key=self.pki.path(cert, "key") if cert else None,
            )
            context.check_hostname = False
            self.contexts[cert] = context
        before = len(self.echo.heads)
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            self.contexts[cert].wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(request)
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := tls.recv(65536):
                    answer += chunk
        # The upstream recorded the head before it answered, so everything it got is in by now.
        return answer.split(b"\r\n", 1)[0], self.echo.heads[before:]


def _meta(head: bytes) -> dict[str, list[str]]:
    """The request head as Django's META would hold it (values of the same key together)."""
    meta: dict[str, list[str]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        meta.setdefault("HTTP_" + name.strip().upper().replace("-", "_"), []).append(value.strip())
    return meta


def _target(head: bytes) -> str:
    return head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")


@pytest.fixture(scope="module", params=["haproxy", "apache", "caddy"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProxy]:
    name = request.param
    binary = find_proxy(name)
    if binary is None:
        if os.geteuid() == 0:
            pytest.fail(f"{name} is not installed: run scripts/install-system-deps.sh")
        pytest.skip(f"{name} is not installed (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp(f"attack-{name}")
    pki = create_dev_pki(base / "pki")
    prefix = base / "run"
    (prefix / "logs").mkdir(parents=True)
    module = renderer(name)
    cert, key = pki.path("server"), pki.path("server", "key")
    if getattr(module, "COMBINED_CERTIFICATE_AND_KEY", False):
        combined = prefix / "server-combined.pem"
        combined.write_bytes(cert.read_bytes() + key.read_bytes())
        cert = key = combined
    echo = _Echo()
    port = free_port()
    options = ProxyOptions(
        mode="optional",
        server_cert=cert,
        server_key=key,
        client_ca=pki.ca_bundle,
        listen=f"127.0.0.1:{port}",
        upstream=(f"127.0.0.1:{echo.port}",),
        standalone=True,
        prefix=prefix,
        proxy_secret=SECRET,
    )
    config = prefix / f"{name}.conf"
    config.write_text(module.render(options))
    env = dict(os.environ)
    if name == "caddy":
        env.update(
            HOME=f"{prefix}/caddy", XDG_DATA_HOME=f"{prefix}/caddy/data", XDG_CONFIG_HOME=f"{prefix}/caddy/config"
        )
    log = (prefix / "stderr.log").open("wb")
    process = subprocess.Popen(
        module.command(binary, config, prefix), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (prefix / "stderr.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, (prefix / "stderr.log").read_text()
            time.sleep(0.05)
        yield LiveProxy(name, port, pki, echo)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        log.close()
        echo.close()


FORGED_CERT = quote("-----BEGIN CERTIFICATE-----\nforged\n-----END CERTIFICATE-----\n", safe="")
SMUGGLING = {
    "trailing-space-in-name": b"X-Real-IP : 6.6.6.1\r\nX-SSL-Client-Verify : SUCCESS\r\n",
    "tab-in-name": b"X-Real-IP\t: 6.6.6.2\r\n",
    "obs-fold-after-another-header": b"X-Foo: a\r\n X-Real-IP: 6.6.6.3\r\n",
    "obs-fold-continuing-a-header": b"X-Real-IP: 127.0.0.9\r\n 6.6.6.4\r\n",
    "duplicates-and-cases": b"X-Real-IP: 6.6.6.5\r\nx-real-ip: 6.6.6.6\r\nX-REAL-IP: 6.6.6.7\r\n",
    "underscores": b"X_Real_IP: 6.6.6.8\r\nX-Real_IP: 6.6.6.9\r\nX_SSL_Client_Verify: SUCCESS\r\n"
    b"x_ssl_client_cert: " + FORGED_CERT.encode() + b"\r\n",
    "the-secret": b"X-Certauth-Proxy-Secret: mine\r\nX_Certauth_Proxy_Secret: mine\r\n",
    "the-request-line-headers": b"X-Certauth-Original-URI: /forged\r\nX_Certauth_Original_Method: forged\r\n",
    "the-chain-header": b"X-SSL-Client-Chain: " + FORGED_CERT.encode() + b"\r\nX_SSL_Client_Chain: forged\r\n",
    "foreign-dialects": b"Client-Cert: :Zm9yZ2Vk:\r\nX-Forwarded-Client-Cert: Cert=forged\r\n"
    b"X-ARR-ClientCert: Zm9yZ2Vk\r\n",
    # Latin-1 "\xdf" upper-cases to "SS" (Django's META key is name.upper()): X-\xdfL-Client-Verify would be
    # HTTP_X_SSL_CLIENT_VERIFY to an application server that let the byte through.
    "sharp-s": b"X-\xdfL-Client-Verify: SUCCESS\r\nX-\xdfL-Client-Cert: forged\r\nX-Real-\xdfIP: 6.6.6.15\r\n",
    "forwarded-for": b"X-Forwarded-For: 6.6.6.10\r\nForwarded: for=6.6.6.11\r\nX-Forwarded-Host: forged\r\n",
}


@pytest.mark.parametrize("cert", [None, "client"], ids=["no-certificate", "certificate"])
@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_no_client_value_reaches_a_header_certauth_reads(live: LiveProxy, case: str, cert: str | None) -> None:
    request = b"GET /api/whoami/ HTTP/1.1\r\nHost: localhost\r\n" + SMUGGLING[case] + b"Connection: close\r\n\r\n"
    status, heads = live.send(request, cert)
    assert status.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400", b"HTTP/1.0 200")), status
    for head in heads:
        meta = _meta(head)
        for key in READ & set(meta):
            assert not [value for value in meta[key] if FORGED.search(value)], (case, key, meta[key])
        assert meta["HTTP_X_REAL_IP"] == ["127.0.0.1"], meta.get("HTTP_X_REAL_IP")
        assert meta["HTTP_X_CERTAUTH_PROXY_SECRET"] == [SECRET]
        # Verified by the proxy only with a certificate; never a client's SUCCESS.
        verdicts = meta.get("HTTP_X_SSL_CLIENT_VERIFY", [])
        assert verdicts == (["SUCCESS"] if cert else [] if live.name == "caddy" else ["NONE"]), verdicts
        assert len(meta.get("HTTP_X_SSL_CLIENT_CERT", [])) == (1 if cert else 0)
        # No raw continuation line goes on to the application server.
        assert not [line for line in head.split(b"\r\n") if line[:1] in (b" ", b"\t")]


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param(b"GET /api/ HTTP/1.0\r\nX-Real-IP: 6.6.6.12\r\n\r\n", id="http1.0-without-host"),
        pytest.param(
            b"GET https://localhost/api/ HTTP/1.1\r\nHost: localhost\r\nX-Real-IP: 6.6.6.13\r\n\r\n", id="absolute"
        ),
        pytest.param(
            b"POST /api/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 70\r\n\r\n"
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\nX-Real-IP: 6.6.6.14\r\nConnection: close\r\n\r\n",
            id="te-cl",
        ),
        pytest.param(
            b"POST /api/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc",
            id="unknown-te",
        ),
    ],
)
def test_request_framing_games_forward_no_client_value(live: LiveProxy, request_head: bytes) -> None:
    status, heads = live.send(request_head, "client")
    assert status, "no answer"
    for head in heads:
        meta = _meta(head)
        for key in READ & set(meta):
            assert not [value for value in meta[key] if FORGED.search(value)], (key, meta[key])
        assert meta["HTTP_X_REAL_IP"] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "host",
    [b"localhost, evil.example", b"localhost@evil.example", b"evil.example:1234", b"localhost\r\nHost: evil.example"],
    ids=["comma", "userinfo", "port", "twice"],
)
def test_host_games_forward_one_host_and_nothing_else(live: LiveProxy, host: bytes) -> None:
    """The Host is the client's to choose (Django's ALLOWED_HOSTS judges it); it must stay one header and
    never carry anything into the headers certauth reads."""
    _, heads = live.send(b"GET /api/ HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n", "client")
    for head in heads:
        meta = _meta(head)
        assert len(meta["HTTP_HOST"]) == 1, meta["HTTP_HOST"]
        assert meta["HTTP_X_REAL_IP"] == ["127.0.0.1"] and meta["HTTP_X_SSL_CLIENT_VERIFY"] == ["SUCCESS"]


REFUSED_SPELLINGS = [
    REFUSED_PATH,
    "/%2d/certauth/refused",
    "/%2D/certauth/refused",
    "/-/certauth/refuse%64",
    "/-/certauth/refused?x=1",
    "/-/certauth/refused#x",
    "//-/certauth/refused",
    "/./-/certauth/refused",
    "/x/../-/certauth/refused",
    "/-/certauth/refused;x",
    "/-/certauth/refused/",
    "/-/Certauth/refused",
    "/-%2Fcertauth%2Frefused",
    "https://localhost/-/certauth/refused",
]


@pytest.mark.parametrize("target", REFUSED_SPELLINGS)
@pytest.mark.parametrize("cert", [None, "client"], ids=["no-certificate", "certificate"])
def test_no_client_reaches_the_refusal_view(live: LiveProxy, target: str, cert: str | None) -> None:
    """Django resolves the percent-decoded path exactly (no dot segments, no slash merging): no spelling may
    arrive upstream as the refusal view's path (HAProxy's own routing is for unverified certificates only)."""
    request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    _, heads = live.send(request, cert)
    for head in heads:
        path = _target(head)
        if "://" in path:
            path = "/" + path.split("://", 1)[1].split("/", 1)[1]
        assert unquote(path.split("?", 1)[0]) != REFUSED_PATH, head


# --- part two: a client's own CA in the chain, through Apache optional_no_ca to certauth ---------------------


def _own_ca_and_leaf(directory: Path) -> Path:
    """A CA the client made itself and a client certificate from it; returns the leaf+CA chain file (its key
    next to it, ``own-chain.key``)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client's own CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo-client")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = directory / "own-chain.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    (directory / "own-chain.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain


@pytest.fixture(scope="module")
def apache_no_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    if find_proxy("apache") is None:
        if os.geteuid() == 0:
            pytest.fail("apache2 is not installed: run scripts/install-system-deps.sh")
        pytest.skip("apache2 is not installed (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp("attack-apache-no-ca")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with database_for(var, "certauth_e2e_attack_apache") as database_url:
        stack = Stack(
            var,
            pki_dir=pki.out_dir,
            port=0,
            mode="optional_no_ca",
            workers=1,
            proxy="apache",
            upstream="unix",
            server_args=["--header-map", "dangerous"],
            env={"DATABASE_URL": database_url, "CERTAUTH_VAR_DIR": str(var), "SECRET_KEY": "e2e", "DEBUG": "false"},
        )
        handle = E2EStack(stack=stack, pki=pki, env=stack.env)
        handle.manage("migrate", "--noinput", "--verbosity", "0")
        handle.manage("certauth", "authority", "add", "--name", "dev root CA", "--cert", str(pki.path("ca")))
        with stack:
            yield handle


def _whoami(stack: E2EStack, chain: Path, key: Path, headers: dict[str, str] | None = None) -> tuple[int, str]:
    session = requests_session(cert=chain, key=key, ca=stack.pki.path("ca"))
    response = session.get(stack.url("/api/whoami/"), headers=headers or {}, timeout=10)
    body = response.json()
    return response.status_code, str(body.get("reason", body.get("identity")))


def test_a_ca_the_client_sends_in_the_tls_chain_is_not_trusted(apache_no_ca: E2EStack, tmp_path: Path) -> None:
    """optional_no_ca: Apache forwards the leaf and the client's own CA (X-SSL-Client-Chain); certauth must use
    the chain only to reach an authority trusted in its admin, never anchor on what the client sent."""
    chain = _own_ca_and_leaf(tmp_path)
    key = tmp_path / "own-chain.key"
    # Registered by thumbprint: only the chain decides.
    apache_no_ca.manage(
        "certauth", "register", "--identity", "self-made", "--cert", str(chain), "--scope", "orders:read", check=False
    )
    status, reason = _whoami(apache_no_ca, chain, key)
    assert (status, reason) == (401, "untrusted_issuer")


def test_a_chain_header_the_client_writes_is_not_the_one_certauth_reads(apache_no_ca: E2EStack, tmp_path: Path) -> None:
    """The intermediate-issued client without its intermediate in TLS: the chain certauth needs cannot be
    supplied in a client-written X-SSL-Client-Chain (Apache unsets every spelling and writes its own)."""
    pki = apache_no_ca.pki
    apache_no_ca.manage(
        "certauth", "register", "--identity", "via-int", "--cert", str(pki.path("via-intermediate")), "--scope", "x:y"
    )
    injected = quote(pki.path("intermediate-ca").read_text(), safe="")
    for name in ("X-SSL-Client-Chain", "X_SSL_Client_Chain", "X-SSL_Client-Chain"):
        status, reason = _whoami(
            apache_no_ca, pki.path("via-intermediate"), pki.path("via-intermediate", "key"), {name: injected}
        )
        assert (status, reason) != (200, "via-int"), name
    # With the intermediate in TLS, the same client is accepted: the refusals above were the header's doing.
    status, reason = _whoami(apache_no_ca, pki.path("via-intermediate", "chain"), pki.path("via-intermediate", "key"))
    assert (status, reason) == (200, "via-int")


def test_client_initiated_renegotiation_is_refused(live: LiveProxy) -> None:
    """TLS 1.2: a client may not renegotiate (to present another certificate mid-connection, or to flood the
    handshake): each proxy ends the connection instead (OpenSSL's s_client asks for it with ``R``)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    command = [
        openssl, "s_client", "-connect", f"127.0.0.1:{live.port}", "-tls1_2", "-servername", "localhost",
        "-CAfile", str(live.pki.path("ca")), "-cert", str(live.pki.path("client")),
        "-key", str(live.pki.path("client", "key")),
    ]  # fmt: skip
    # stdin stays open: s_client leaves only when the server ends the connection.  A proxy that renegotiated
    # would keep it open (its idle timeout is 30 s or more), and the timeout below fails the test.
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"R\n")
        process.stdin.flush()
        output = process.stdout.read().decode(errors="replace")  # until s_client exits
        process.wait(timeout=25)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert "RENEGOTIATING" in output, output[-2000:]
    assert re.search(r"no renegotiation|unexpected message", output), output[-2000:]


def test_http2_forgeries_are_deleted_too(live: LiveProxy) -> None:
    """Over HTTP/2 (Caddy speaks it; the HAProxy and Apache configurations offer HTTP/1.1 only): lower-case
    names and underscores are deleted as over HTTP/1.1."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    before = len(live.echo.heads)
    forged = [
        "x_real_ip: 6.6.6.20",
        "x-real-ip: 6.6.6.21",
        "x-ssl-client-verify: SUCCESS",
        "x-ssl-client-chain: forged",
    ]
    result = subprocess.run(
        [curl, "-s", "-o", "/dev/null", "-w", "%{http_version}", "--http2", "--cacert", str(live.pki.path("ca")),
         "--cert", str(live.pki.path("client")), "--key", str(live.pki.path("client", "key")),
         "--resolve", f"localhost:{live.port}:127.0.0.1", *[item for header in forged for item in ("-H", header)],
         f"https://localhost:{live.port}/api/whoami/"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout == ("2" if live.name == "caddy" else "1.1"), result.stdout
    [head] = live.echo.heads[before:]
    meta = _meta(head)
    for key in READ & set(meta):
        assert not [value for value in meta[key] if FORGED.search(value)], (key, meta[key])
    assert meta["HTTP_X_REAL_IP"] == ["127.0.0.1"] and meta["HTTP_X_SSL_CLIENT_VERIFY"] == ["SUCCESS"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_a_resumed_session_keeps_its_certificate_and_verdict(live: LiveProxy, version: ssl.TLSVersion) -> None:
    """Session resumption: the verified certificate is forwarded again (the same one), and on HAProxy, which lets
    an unverifiable certificate complete the handshake, a resumed session of an expired certificate is still
    FAILED and routed to the refusal view (``ssl_c_verify`` is kept in the session)."""
    names = ["client", "expired"] if live.name == "haproxy" else ["client"]
    for name in names:
        context = build_ssl_context(ca=live.pki.path("ca"), cert=live.pki.path(name), key=live.pki.path(name, "key"))
        context.check_hostname = False
        context.maximum_version = version
        session: ssl.SSLSession | None = None
        seen = []
        for attempt in range(2):
            before = len(live.echo.heads)
            with (
                socket.create_connection(("127.0.0.1", live.port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
            ):
                tls.sendall(b"GET /api/whoami/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass
                assert tls.session_reused is (attempt == 1), (name, attempt)
                session = tls.session
            [head] = live.echo.heads[before:]
            meta = _meta(head)
            seen.append((_target(head), meta.get("HTTP_X_SSL_CLIENT_VERIFY"), meta.get("HTTP_X_SSL_CLIENT_CERT")))
        assert seen[0] == seen[1], (name, seen)
        if name == "client":
            assert seen[1][0] == "/api/whoami/" and seen[1][1] == ["SUCCESS"] and seen[1][2]
        else:
            assert seen[1][0] == REFUSED_PATH and seen[1][1] == ["FAILED:certificate has expired"]
