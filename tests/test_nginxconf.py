"""The nginx config renderer (certauth.nginxconf), its CLI, the committed examples in nginx/, what a real
nginx sends upstream (an echo server stands in for gunicorn), and certauth's refusal view behind
``error_page 495 496``."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import CommandError, call_command
from django.test import Client, RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from certauth import devpki, nginxconf
from certauth.views import original_request_line

from .conftest import CertClient, FixturePKI, failures

REPO = Path(__file__).resolve().parent.parent

# The arguments the committed examples were rendered with (nginx/README.md shows the same commands).
_PRODUCTION_COMMON = {
    "listen": "443",
    "server_name": "api.example.com",
    "server_cert": "/etc/certauth/server.pem",
    "server_key": "/etc/certauth/server.key",
    "upstream": ["unix:/run/certauth/gunicorn.sock"],
    "static_root": "/var/lib/certauth/static",
    "proxy_secret": nginxconf.PROXY_SECRET_PLACEHOLDER,
}
PRODUCTION_EXAMPLES = {
    "production-verify-on.conf": {
        "mode": "on",
        "client_ca": "/etc/certauth/ca-bundle.pem",
        "crl": "/etc/certauth/ca.crl.pem",
        **_PRODUCTION_COMMON,
    },
    "production-optional-no-ca.conf": {"mode": "optional_no_ca", **_PRODUCTION_COMMON},
}


def _render(**overrides: object) -> str:
    arguments: dict = {
        "mode": "on",
        "server_cert": "/pki/server.pem",
        "server_key": "/pki/server.key",
        "client_ca": "/pki/ca-bundle.pem",
        "upstream": ["127.0.0.1:8000"],
    }
    arguments.update(overrides)
    return nginxconf.render(**arguments)


def _blocks(text: str, opener: str) -> list[str]:
    """The bodies of every ``opener {...}`` block (brace-matched)."""
    bodies = []
    for match in re.finditer(re.escape(opener) + r"[^{;]*\{", text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                bodies.append(text[start:index])
                break
    return bodies


def _directives(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _server_level(text: str) -> list[str]:
    """The directives directly in the ``server {}`` block (none from its locations)."""
    [server] = _blocks(text, "server")
    depth, directives = 0, []
    for line in _directives(server):
        if depth == 0 and not line.endswith("{"):
            directives.append(line)
        depth += line.count("{") - line.count("}")
    return directives


def _header_directives(directives: list[str]) -> set[str]:
    return {line for line in directives if line.startswith("proxy_set_header ")}


@pytest.mark.parametrize("filename", sorted(PRODUCTION_EXAMPLES))
def test_committed_examples_match_the_renderer(filename: str) -> None:
    committed = (REPO / "nginx" / filename).read_text()
    assert committed == nginxconf.render(**PRODUCTION_EXAMPLES[filename]), (
        f"nginx/{filename} drifted from certauth.nginxconf: regenerate it (see nginx/README.md)"
    )


@pytest.mark.parametrize("mode", nginxconf.MODES)
def test_every_mode_forwards_and_overwrites_the_security_headers(mode: str) -> None:
    text = _render(mode=mode)
    directives = _directives(text)
    for expected in [
        f"ssl_verify_client {mode};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;",
        "proxy_set_header X-SSL-Client-Verify $ssl_client_verify;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto https;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "underscores_in_headers off;",
        "ignore_invalid_headers on;",
        "ssl_session_cache shared:certauth_ssl:10m;",
        "error_page 495 496 = @certauth_refused;",
        "keepalive 16;",
    ]:
        assert expected in directives, expected
    server_level = _header_directives(_server_level(text))
    assert server_level <= set(directives) and len(server_level) == len(nginxconf.UPSTREAM_HEADERS)
    # Inheritance trap: one proxy_set_header inside a location drops all the server-level ones there.  Only
    # the refusal location has its own (Content-Length), and it repeats every server-level one.
    [refused] = _blocks(text, "location @certauth_refused")
    assert _header_directives(_directives(refused)) == server_level | {'proxy_set_header Content-Length "";'}
    for body in _blocks(text, "location"):
        if body != refused:
            assert "proxy_set_header" not in body
    assert "location = /healthz" in text


@pytest.mark.parametrize("mode", nginxconf.MODES)
def test_refused_requests_reach_only_the_refusal_view(mode: str) -> None:
    """nginx's 495/496 never forward the refused request (its view would run: "on" would act like
    "optional"): a bodiless GET to certauth's refusal view, the original request line in headers."""
    text = _render(mode=mode, static_root="/srv/static")
    [refused] = _blocks(text, "location @certauth_refused")
    directives = _directives(refused)
    # The static rescue first (a "last" rewrite ends the rewrites), then everything else to the view.
    assert directives[:2] == ["rewrite ^/static/ $uri last;", "rewrite ^ /-/certauth/refused? break;"]
    for expected in [
        "proxy_method GET;",
        "proxy_pass_request_body off;",
        # Else nginx sends the client's Content-Length without the body, and gunicorn waits for it.
        'proxy_set_header Content-Length "";',
        "proxy_set_header X-Certauth-Original-URI $request_uri;",
        "proxy_set_header X-Certauth-Original-Method $request_method;",
        "proxy_pass http://certauth_django;",
    ]:
        assert expected in directives, expected
    # Set for every request, so a client cannot send its own original-URI header.
    assert "proxy_set_header X-Certauth-Original-URI $request_uri;" in _server_level(text)
    # The view is reachable only through the error page.
    [direct] = _blocks(text, "location = /-/certauth/refused")
    assert _directives(direct) == ["return 404;"]
    # Without a static root, no rescue.
    [no_static] = _blocks(_render(mode=mode), "location @certauth_refused")
    assert _directives(no_static)[0] == "rewrite ^ /-/certauth/refused? break;"


def test_the_refusal_path_is_certauths_url() -> None:
    from django.urls import reverse

    assert reverse("certauth-refused") == nginxconf.REFUSED_PATH


@pytest.mark.parametrize("mode", nginxconf.MODES)
def test_other_proxies_certificate_headers_are_cleared(mode: str) -> None:
    """Every dialect's certificate header (and RFC 9440's chain header) is emptied, so CERTIFICATE_HEADER or
    CHAIN_HEADER pointed at one of them cannot be fed by a client through this nginx."""
    from certauth.forwarding import RECOMMENDED_HEADERS

    server_level = _server_level(_render(mode=mode))
    foreign = {*RECOMMENDED_HEADERS.values(), "Client-Cert-Chain"} - {"X-SSL-Client-Cert"}
    assert foreign <= set(nginxconf.FOREIGN_CERTIFICATE_HEADERS)
    for name in nginxconf.FOREIGN_CERTIFICATE_HEADERS:
        assert f'proxy_set_header {name} "";' in server_level, name


def test_nginx_verifies_only_when_given_a_ca() -> None:
    on = _directives(_render(mode="on", crl="/pki/ca.crl.pem", verify_depth=2))
    assert "ssl_client_certificate /pki/ca-bundle.pem;" in on
    assert "ssl_crl /pki/ca.crl.pem;" in on
    assert "ssl_verify_depth 2;" in on
    no_ca = _render(mode="optional_no_ca", client_ca=None)
    assert "ssl_client_certificate" not in "\n".join(_directives(no_ca))
    assert "ssl_crl" not in "\n".join(_directives(no_ca))


def test_snippet_has_no_main_context_directives() -> None:
    text = _render(upstream=["127.0.0.1:8000", "unix:/run/certauth.sock"])
    assert "server 127.0.0.1:8000;" in text and "server unix:/run/certauth.sock;" in text
    for directive in ("daemon", "pid", "events", "http {", "user", "worker_processes"):
        assert not any(line.startswith(directive) for line in _directives(text)), directive


def test_standalone_keeps_everything_under_the_prefix(tmp_path: Path) -> None:
    text = _render(standalone=True, prefix=tmp_path, static_root=tmp_path / "static")
    directives = _directives(text)
    assert "daemon off;" in directives and "master_process on;" in directives
    assert f"pid {tmp_path}/nginx.pid;" in directives
    assert not any(line.startswith("user ") for line in directives)
    for line in directives:
        if line.split()[0].endswith(("_temp_path", "access_log", "error_log")):
            assert line.split()[1].startswith(str(tmp_path)), line
    static = _blocks(text, "location /static/")
    assert static and f"root {tmp_path}/static;" in static[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "off"}, "mode"),
        ({"client_ca": None}, "client_ca"),
        ({"mode": "optional_no_ca", "client_ca": None, "crl": "/pki/crl.pem"}, "crl"),
        ({"upstream": []}, "upstream"),
        ({"standalone": True}, "prefix"),
        ({"server_cert": "/pki/my cert.pem"}, "server_cert"),
        ({"server_key": "/pki/k;evil"}, "server_key"),
        ({"upstream": ["127.0.0.1:8000; } server {"]}, "upstream"),
        ({"listen": "$x"}, "listen"),
        ({"verify_depth": 0}, "verify_depth"),
    ],
)
def test_bad_arguments_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _render(**overrides)


def test_cli_prints_the_rendered_config() -> None:
    out = io.StringIO()
    call_command(
        "certauth",
        "nginx-config",
        "--mode",
        "optional_no_ca",
        "--server-cert",
        "/pki/server.pem",
        "--server-key",
        "/pki/server.key",
        "--upstream",
        "127.0.0.1:9000",
        "--listen",
        "127.0.0.1:9443",
        stdout=out,
    )
    assert out.getvalue() == nginxconf.render(
        mode="optional_no_ca",
        listen="127.0.0.1:9443",
        server_cert="/pki/server.pem",
        server_key="/pki/server.key",
        upstream=["127.0.0.1:9000"],
    )


@pytest.mark.parametrize(
    "arguments",
    [
        ["--mode", "on"],
        ["--standalone"],
        ["--check-files", "--client-ca", "/nonexistent/ca.pem"],
    ],
)
def test_cli_refuses_missing_paths(arguments: list[str]) -> None:
    with pytest.raises(CommandError):
        call_command(
            "certauth",
            "nginx-config",
            "--server-cert",
            "/pki/server.pem",
            "--server-key",
            "/pki/server.key",
            *arguments,
            stdout=io.StringIO(),
        )


def _self_signed_server(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/install-system-deps.sh installs it)")
@pytest.mark.parametrize("mode", nginxconf.MODES)
def test_nginx_accepts_the_standalone_config(tmp_path: Path, mode: str) -> None:
    cert, key = _self_signed_server(tmp_path)
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        nginxconf.render(
            mode=mode,
            listen="127.0.0.1:1",
            server_cert=cert,
            server_key=key,
            client_ca=None if mode == "optional_no_ca" else cert,
            upstream=["127.0.0.1:2"],
            standalone=True,
            prefix=tmp_path,
            static_root=tmp_path / "static",
        )
    )
    assert NGINX is not None
    result = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/install-system-deps.sh installs it)")
@pytest.mark.parametrize("mode", nginxconf.MODES)
def test_nginx_accepts_the_conf_d_snippet(tmp_path: Path, mode: str) -> None:
    cert, key = _self_signed_server(tmp_path)
    snippet = nginxconf.render(
        mode=mode,
        listen="127.0.0.1:1",
        server_cert=cert,
        server_key=key,
        client_ca=None if mode == "optional_no_ca" else cert,
        upstream=["127.0.0.1:2"],
    )
    # The snippet goes into the http {} block of a distribution's nginx.conf; a minimal one here.
    temp_paths = "".join(
        f"{name}_temp_path {tmp_path}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n{temp_paths}\naccess_log off;\n{snippet}\n}}\n")
    assert NGINX is not None
    result = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# What a real nginx ("on", the rendered standalone config) sends upstream: an echo server records it.
# --------------------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.seen: list[Seen] = []


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # nginx keeps upstream connections alive
    server: _EchoServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, headers, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class LiveNginx:
    base_url: str
    ca: Path
    certs: dict[str, tuple[Path, Path]]
    echo: _EchoServer

    def send(self, method: str, path: str, cert: str | None = None, **kwargs: Any) -> list[Seen]:
        """Send one request; return what reached the upstream for it."""
        before = len(self.echo.seen)
        requests.request(
            method,
            self.base_url + path,
            cert=None if cert is None else tuple(map(str, self.certs[cert])),
            verify=str(self.ca),
            timeout=10,
            **kwargs,
        ).close()
        return self.echo.seen[before:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNginx]:
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/install-system-deps.sh installs it)")
    base = tmp_path_factory.mktemp("live-nginx")
    now = dt.datetime.now(dt.UTC)
    root = devpki.make_ca("nginx test root")
    issued = {
        "server": devpki.issue_server(root, ("localhost", "127.0.0.1")),
        "client": devpki.issue_client(root, "client"),
        "expired": devpki.issue_client(
            root, "expired", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
        ),
    }
    certs = {}
    for name, item in issued.items():
        cert, key = base / f"{name}.pem", base / f"{name}.key"
        cert.write_bytes(item.cert_pem())
        key.write_bytes(item.key_pem())
        certs[name] = (cert, key)
    ca = base / "ca.pem"
    ca.write_bytes(root.cert_pem())
    (base / "static" / "admin").mkdir(parents=True)
    (base / "static" / "admin" / "base.css").write_text("body {}\n")
    (base / "logs").mkdir()
    port = _free_port()
    echo = _EchoServer()
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    conf = base / "nginx.conf"
    conf.write_text(
        nginxconf.render(
            mode="on",
            listen=f"127.0.0.1:{port}",
            server_cert=certs["server"][0],
            server_key=certs["server"][1],
            client_ca=ca,
            upstream=[f"127.0.0.1:{echo.server_address[1]}"],
            standalone=True,
            prefix=base,
            static_root=base / "static",
        )
    )
    assert NGINX is not None
    command = [NGINX, "-p", str(base), "-c", str(conf), "-e", "stderr"]
    if os.geteuid() == 0:
        command += ["-g", "user root;"]  # workers as "nobody" could not enter pytest's 0700 tmp dirs
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {process.communicate()[1]!r}") from None
                time.sleep(0.05)
        yield LiveNginx(f"https://localhost:{port}", ca, certs, echo)
    finally:
        process.terminate()
        process.wait(timeout=10)
        echo.shutdown()
        echo.server_close()


_FOREIGN = {
    "Client-Cert": ":MIIB:",
    "Client-Cert-Chain": ":MIIB:",
    "X-Forwarded-Client-Cert": 'Hash=00;Cert="x"',
    "X-Forwarded-Tls-Client-Cert": "MIIB",
    "X-Amzn-Mtls-Clientcert": "MIIB",
    "X-Amzn-Mtls-Clientcert-Leaf": "MIIB",
    "X-ARR-ClientCert": "MIIB",
}


def test_live_refusal_reaches_the_upstream_as_a_bodiless_get(live_nginx: LiveNginx) -> None:
    """The report's proof of concept: a POST to the admin login without a certificate reached Django as
    that POST, body included.  Now only GET /-/certauth/refused arrives, with the original request line."""
    forged = {"X-Certauth-Original-URI": "/forged", "X-Certauth-Original-Method": "DELETE", **_FOREIGN}
    [seen] = live_nginx.send("POST", "/admin/login/?next=/x", data="username=a&password=b", headers=forged)
    assert (seen.method, seen.path, seen.body) == ("GET", "/-/certauth/refused", b"")
    assert "content-length" not in seen.headers and "transfer-encoding" not in seen.headers
    assert seen.headers["x-certauth-original-uri"] == "/admin/login/?next=/x"
    assert seen.headers["x-certauth-original-method"] == "POST"
    assert seen.headers["x-ssl-client-verify"] == "NONE"
    assert "x-ssl-client-cert" not in seen.headers
    assert not {name.lower() for name in _FOREIGN} & set(seen.headers)
    # The server-level headers are all there (the location repeats them).
    assert seen.headers["x-real-ip"] == "127.0.0.1" and seen.headers["x-forwarded-proto"] == "https"

    [chunked] = live_nginx.send("PUT", "/api/ping/", data=iter([b"hello"]))  # Transfer-Encoding: chunked
    assert (chunked.method, chunked.path, chunked.body) == ("GET", "/-/certauth/refused", b"")
    assert chunked.headers["x-certauth-original-method"] == "PUT"


def test_live_refused_certificate_is_forwarded_with_the_verdict(live_nginx: LiveNginx) -> None:
    [seen] = live_nginx.send("POST", "/api/orders/", cert="expired", json={"item": "x"})
    assert (seen.method, seen.path, seen.body) == ("GET", "/-/certauth/refused", b"")
    assert seen.headers["x-ssl-client-verify"] == "FAILED:certificate has expired"
    assert seen.headers["x-ssl-client-cert"].startswith("-----BEGIN%20CERTIFICATE-----")
    assert seen.headers["x-certauth-original-uri"] == "/api/orders/"


def test_live_foreign_certificate_headers_never_reach_the_upstream(live_nginx: LiveNginx) -> None:
    [seen] = live_nginx.send("POST", "/api/orders/?page=2", cert="client", data=b"payload", headers=_FOREIGN)
    assert (seen.method, seen.path, seen.body) == ("POST", "/api/orders/?page=2", b"payload")
    assert seen.headers["x-ssl-client-verify"] == "SUCCESS"
    assert not {name.lower() for name in _FOREIGN} & set(seen.headers)


def test_live_static_files_and_the_refusal_path_itself(live_nginx: LiveNginx) -> None:
    # Without a certificate, static files are still served by nginx (the rescue), nothing goes upstream.
    before = len(live_nginx.echo.seen)
    response = requests.get(live_nginx.base_url + "/static/admin/base.css", verify=str(live_nginx.ca), timeout=10)
    assert (response.status_code, response.text) == (200, "body {}\n")
    # Asked for directly, the refusal view is a plain 404 from nginx.
    direct = requests.get(
        live_nginx.base_url + "/-/certauth/refused",
        cert=tuple(map(str, live_nginx.certs["client"])),
        verify=str(live_nginx.ca),
        timeout=10,
    )
    assert direct.status_code == 404
    assert len(live_nginx.echo.seen) == before


# --------------------------------------------------------------------------------------------------
# certauth's refusal view (what nginx's error page reaches)
# --------------------------------------------------------------------------------------------------

REFUSED = nginxconf.REFUSED_PATH


def _original(uri: str, method: str = "POST") -> dict[str, str]:
    """The headers nginx's refusal location sets (WSGI META keys)."""
    return {"HTTP_X_CERTAUTH_ORIGINAL_URI": uri, "HTTP_X_CERTAUTH_ORIGINAL_METHOD": method}


def _refusal(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == reason
    assert response["WWW-Authenticate"].startswith("ClientCertificate")
    assert "Set-Cookie" not in response and not response.cookies


@pytest.mark.django_db
def test_no_certificate_is_one_audit_row_under_the_original_request_line(api: CertClient) -> None:
    response = api.get(REFUSED, verify="NONE", **_original("/admin/login/?next=/admin/"))
    _refusal(response, "missing_certificate")
    [row] = failures()
    assert (row.reason, row.method, row.path, row.count) == ("missing_certificate", "POST", "/admin/login/", 1)


@pytest.mark.django_db
def test_refused_certificate_keeps_its_reason_and_is_recorded_once(api: CertClient, pki: FixturePKI) -> None:
    response = api.get(REFUSED, pki.expired, verify="FAILED:certificate has expired", **_original("/api/orders/"))
    _refusal(response, "certificate_expired")
    [row] = failures()
    assert (row.reason, row.method, row.path, row.count) == ("certificate_expired", "POST", "/api/orders/", 1)
    assert row.thumbprint_sha256 == pki.expired.thumbprint


@pytest.mark.django_db
def test_never_200_even_when_certauth_would_accept(api: CertClient, pki: FixturePKI, register: Any) -> None:
    """nginx refused (say, a CRL certauth does not know); its refusal stands."""
    register(pki.client, identity="billing", scopes="orders:read")
    assert api.get("/api/whoami/", pki.client).status_code == 200
    response = api.get(REFUSED, pki.client, verify="SUCCESS", **_original("/api/whoami/", "GET"))
    _refusal(response, "proxy_verification_failed")
    [row] = failures()
    assert (row.reason, row.path, row.identity.name) == ("proxy_verification_failed", "/api/whoami/", "billing")


@pytest.mark.django_db
def test_original_request_line_believed_only_from_a_trusted_proxy(api: CertClient) -> None:
    response = api.get(REFUSED, remote="198.51.100.9", **_original("/admin/login/"))
    _refusal(response, "missing_certificate")
    [row] = failures()
    assert (row.method, row.path) == ("GET", REFUSED)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_any_method_no_csrf_no_session(method: str) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.generic(method, REFUSED, REMOTE_ADDR="127.0.0.1", **_original("/admin/", method))
    _refusal(response, "missing_certificate")
    [row] = failures()
    assert row.method == method


@given(uri=st.text(st.characters(max_codepoint=0xFF), max_size=300), method=st.text(max_size=30))
def test_any_original_request_line_header_is_read_without_error(uri: str, method: str) -> None:
    request = RequestFactory().get(REFUSED, REMOTE_ADDR="127.0.0.1", **_original(uri, method))
    read_method, path = original_request_line(request)
    # Never the query string: a "?" in the path can only come from an escaped one.
    assert path == REFUSED if not uri else "?" not in path or "%3f" in uri.lower()
    assert read_method == (method.upper() if re.fullmatch(r"[A-Za-z]{1,16}", method) else "GET")


def test_original_path_is_decoded_like_request_path() -> None:
    request = RequestFactory().get(REFUSED, REMOTE_ADDR="127.0.0.1", **_original("/api/caf%C3%A9/%2e%2e?x=%41"))
    assert original_request_line(request) == ("POST", "/api/café/..")


# --- proxy identity and the edge (issue 15) ----------------------------------------------------------------
@pytest.mark.parametrize("mode", nginxconf.MODES)
def test_the_proxy_secret_is_sent_from_every_location(mode: str) -> None:
    secret = "s3cr3t-" + "x" * 24
    text = _render(mode=mode, client_ca=None if mode == "optional_no_ca" else "/pki/ca.pem", proxy_secret=secret)
    line = f"proxy_set_header {nginxconf.PROXY_SECRET_HEADER} {secret};"
    assert line in _server_level(text)
    # The refusal location has its own proxy_set_header (which drops the server-level ones): it repeats it.
    [refusal] = _blocks(text, f"location {nginxconf.ERROR_LOCATION}")
    assert line in _directives(refusal)
    for location in _blocks(text, "location"):
        if "proxy_set_header" in location:
            assert line in _directives(location)
    with pytest.raises(ValueError, match="proxy_secret"):
        _render(proxy_secret="short")
    with pytest.raises(ValueError, match="proxy_secret"):
        _render(proxy_secret="has a space in it, which nginx would split")


def test_the_committed_examples_use_a_unix_socket_and_the_secret_placeholder() -> None:
    for filename in PRODUCTION_EXAMPLES:
        text = (REPO / "nginx" / filename).read_text()
        assert "server unix:/run/certauth/gunicorn.sock;" in text
        assert f"proxy_set_header {nginxconf.PROXY_SECRET_HEADER} {nginxconf.PROXY_SECRET_PLACEHOLDER};" in text


def test_edge_limits_are_rendered(tmp_path: Path) -> None:
    server = _server_level(_render())
    for directive in (
        "client_header_timeout 10s;",
        "client_body_timeout 10s;",
        "keepalive_timeout 30s;",
        "limit_conn certauth_conn 128;",
        "limit_req zone=certauth_req burst=1000 nodelay;",
        f"large_client_header_buffers 4 {nginxconf.CLIENT_HEADER_BUFFER};",
    ):
        assert directive in server
    standalone = _render(standalone=True, prefix=tmp_path)
    assert "worker_connections 8192;" in _directives(standalone)
    # gunicorn's limits follow nginx's: a request line nginx accepts fits gunicorn's, and the largest
    # certificate OpenSSL accepts (100 KiB list, about 1.4x escaped) fits one gunicorn header field.
    assert int(nginxconf.CLIENT_HEADER_BUFFER.rstrip("k")) * 1024 <= nginxconf.GUNICORN_REQUEST_LINE + 2
    assert nginxconf.GUNICORN_FIELD_SIZE > 100 * 1024 * 3 // 2


@pytest.mark.django_db
def test_the_rendered_secret_header_is_the_one_certauth_reads(tmp_path: Path) -> None:
    """CERTAUTH["PROXY_SECRET_HEADER"] changed: `certauth nginx-config` sends the secret in that header, not
    the default one (a mismatch would refuse every forwarded certificate as untrusted_proxy)."""
    import io

    from django.core.management import call_command
    from django.test import override_settings

    secret_file = tmp_path / "proxy-secret"
    secret_file.write_text("s3cr3t-" + "y" * 24 + "\n")
    secret_file.chmod(0o600)
    out = io.StringIO()
    with override_settings(CERTAUTH={"PROXY_SECRET_HEADER": "X-Our-Proxy-Token"}):
        call_command(
            "certauth", "nginx-config", "--mode", "optional_no_ca", "--server-cert", "/pki/server.pem",
            "--server-key", "/pki/server.key", "--proxy-secret-file", str(secret_file), stdout=out,
        )  # fmt: skip
    text = out.getvalue()
    assert f"proxy_set_header X-Our-Proxy-Token s3cr3t-{'y' * 24};" in text
    assert nginxconf.PROXY_SECRET_HEADER not in text
