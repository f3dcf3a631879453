"""The Caddy renderer (certauth.proxyconf.caddy): the rendered Caddyfile's security properties, refused values,
``caddy validate`` on every rendering, and what a real Caddy 2.6 sends upstream (an echo server stands in for
gunicorn) -- including the placeholder Caddy forwards literally when the header is set unconditionally."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from certauth import proxies
from certauth.devpki import DevPKI, create_dev_pki
from certauth.proxyconf import FOREIGN_CERTIFICATE_HEADERS, ProxyOptions, caddy, find_proxy, renderer

CADDY = find_proxy("caddy")
SECRET = "caddy-test-secret-0123456789abcdef"
needs_caddy = pytest.mark.skipif(
    CADDY is None and os.geteuid() != 0, reason="caddy is not installed (scripts/install-system-deps.sh installs it)"
)


def _options(mode: str = "optional", **overrides: Any) -> ProxyOptions:
    values: dict[str, Any] = {
        "mode": mode,
        "server_cert": Path("/etc/certauth/server.pem"),
        "server_key": Path("/etc/certauth/server.key"),
        "client_ca": None if mode == "optional_no_ca" else Path("/etc/certauth/ca-bundle.pem"),
        "listen": "127.0.0.1:8443",
        "upstream": ("unix:/run/certauth/gunicorn.sock",),
        "proxy_secret": SECRET,
    }
    values.update(overrides)
    return ProxyOptions(**values)


def _route(text: str) -> list[str]:
    """The directives of the site's ``route`` block, in order, stripped (comments left out)."""
    block = text[text.index("\troute {") :]
    lines = [line.strip() for line in block.splitlines()[1:]]
    return [line for line in lines if line and not line.startswith("#")]


# --- the rendered text -------------------------------------------------------------------------------------


def test_renderer_is_found_by_name() -> None:
    assert renderer("caddy") is caddy
    assert set(caddy.MODES) == {"on", "optional", "optional_no_ca"}


@pytest.mark.parametrize(
    ("mode", "client_auth"),
    [("on", "require_and_verify"), ("optional", "verify_if_given"), ("optional_no_ca", "request")],
)
def test_client_auth_mode_and_ca(mode: str, client_auth: str) -> None:
    text = caddy.render(_options(mode))
    assert f"\t\t\tmode {client_auth}\n" in text
    assert ("trusted_ca_cert_file /etc/certauth/ca-bundle.pem" in text) == (mode != "optional_no_ca")
    assert "protocols tls1.2 tls1.3" in text
    assert "tls /etc/certauth/server.pem /etc/certauth/server.key {" in text


def test_certificate_and_verdict_only_under_the_certificate_matcher() -> None:
    """The trap: an unconditional ``{http.request.tls.client.certificate_der_base64}`` is forwarded as that
    text when no certificate came.  Both headers are set only when the placeholder holds base64."""
    text = caddy.render(_options("optional"))
    matcher = f"@certauth_certificate vars_regexp {caddy.CERTIFICATE_PLACEHOLDER} ^[A-Za-z0-9+/]+=*$"
    assert matcher in text
    sets = [line for line in text.splitlines() if "X-SSL-Client-Cert " in line or "X-SSL-Client-Verify " in line]
    assert [line.strip() for line in sets] == [
        f"request_header @certauth_certificate X-SSL-Client-Cert {caddy.CERTIFICATE_PLACEHOLDER}",
        "request_header @certauth_certificate X-SSL-Client-Verify SUCCESS",
    ]
    assert caddy.CERTIFICATE_PLACEHOLDER not in text.replace(matcher, "").replace(sets[0], "")
    # The expression matcher the issue suggested is true without a certificate on Caddy 2.6: not used.
    assert "expression" not in text


def test_no_verdict_without_verification() -> None:
    text = caddy.render(_options("optional_no_ca"))
    assert "X-SSL-Client-Verify SUCCESS" not in text
    assert "request_header -X-SSL-Client-Verify" in _route(text)
    settings = caddy.certauth_settings(_options("optional_no_ca"))
    assert settings["PROXY_VERIFIES_CERTIFICATE"] is False


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_client_copies_are_deleted_before_anything_is_set(mode: str) -> None:
    route = _route(caddy.render(_options(mode)))
    deletions = [line for line in route if line.startswith("request_header -")]
    expected = {
        "X-SSL-Client-Cert",
        "X-SSL-Client-Verify",
        "X-Real-IP",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Certauth-Original-URI",
        "X-Certauth-Original-Method",
        "X-Certauth-Proxy-Secret",
        *FOREIGN_CERTIFICATE_HEADERS,
    }
    assert {line.removeprefix("request_header -") for line in deletions} == expected | {"*_*"}
    # Every deletion comes before the first header Caddy sets itself (a route block runs in the order written).
    first_set = next(i for i, line in enumerate(route) if line.startswith("request_header @"))
    assert max(route.index(line) for line in deletions) < first_set
    assert route[0] == "respond /-/certauth/refused 404"


def test_real_address_proto_host_and_secret_are_set_by_caddy() -> None:
    route = _route(caddy.render(_options("on", listen="0.0.0.0:443")))
    assert "header_up X-Real-IP {remote_host}" in route
    assert "header_up X-Forwarded-For {remote_host}" in route
    assert "header_up X-Forwarded-Proto https" in route
    assert "header_up Host {http.request.hostport}" in route
    assert f"header_up X-Certauth-Proxy-Secret {SECRET}" in route
    assert not [line for line in route if line.startswith("header_up +")]  # nothing appended


def test_upstreams_unix_and_tcp() -> None:
    text = caddy.render(_options(upstream=("unix:/run/a.sock", "127.0.0.1:8001")))
    assert "reverse_proxy unix//run/a.sock 127.0.0.1:8001 {" in text
    assert "lb_try_duration 5s" in text
    assert "lb_try_duration" not in caddy.render(_options(upstream=("127.0.0.1:8001",)))


def test_names_and_addresses_accepted() -> None:
    assert "https://*.example.com:8443 {" in caddy.render(_options(server_name="*.example.com"))
    assert "reverse_proxy [::1]:8000 gunicorn.internal:8000 {" in caddy.render(
        _options(upstream=("[::1]:8000", "gunicorn.internal:8000"))
    )


def test_listen_forms() -> None:
    assert "\tbind 127.0.0.1\n" in caddy.render(_options(listen="127.0.0.1:8443"))
    assert "\tbind ::1\n" in caddy.render(_options(listen="[::1]:8443"))
    text = caddy.render(_options(listen="443", server_name="api.example.com"))
    assert "https://api.example.com:443 {" in text
    assert "\tbind" not in text


def test_standalone_stays_under_the_prefix(tmp_path: Path) -> None:
    text = caddy.render(_options(standalone=True, prefix=tmp_path))
    for line in ("admin off", "auto_https off", "skip_install_trust", f"storage file_system {tmp_path}/caddy/data"):
        assert f"\t{line}\n" in text
    assert "protocols h1 h2\n" in text  # no HTTP/3 listener
    assert "strict_sni_host insecure_off" in text
    assert f"output file {tmp_path}/logs/access.log" in text
    assert text.count("https://:8443 {") == 1  # every host name and address on the port
    command = caddy.command("/usr/bin/caddy", tmp_path / "caddy.conf", tmp_path)
    assert command[0] == "env"
    assert f"HOME={tmp_path}/caddy" in command
    assert f"XDG_CONFIG_HOME={tmp_path}/caddy/config" in command
    assert command[command.index("/usr/bin/caddy") :] == [
        "/usr/bin/caddy", "run", "--config", f"{tmp_path}/caddy.conf", "--adapter", "caddyfile",
        "--pidfile", f"{tmp_path}/caddy.pid",
    ]  # fmt: skip


def test_settings_match_the_rendering() -> None:
    settings = caddy.certauth_settings(_options("optional"))
    assert settings["FORWARDING_FORMAT"] == "base64_der"
    assert settings["CERTIFICATE_HEADER"] == "X-SSL-Client-Cert"
    assert settings["VERIFY_HEADER"] == "X-SSL-Client-Verify"
    assert settings["CLIENT_IP_HEADER"] == "X-Real-IP"
    assert settings["PROXY_VERIFIES_CERTIFICATE"] is True
    assert settings["TRUSTED_PROXIES"] == ["unix:"]
    assert caddy.certauth_settings(_options(upstream=("127.0.0.1:8000",)))["TRUSTED_PROXIES"] == ["127.0.0.1", "::1"]
    # The verdict this configuration sends is the one certauth reads as "the proxy verified it".
    assert proxies.reason_for_proxy_verdict("SUCCESS") is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen": "127.0.0.1:84 43"}, "listen"),
        ({"listen": "localhost:8443"}, "IP address"),
        ({"listen": "127.0.0.1:0"}, "port"),
        ({"listen": "127.0.0.1:99999"}, "port"),
        ({"server_cert": Path("/etc/cert{s}.pem")}, "server_cert"),
        ({"client_ca": Path('/etc/"ca".pem')}, "client_ca"),
        ({"upstream": ("unix:/run/a b.sock",)}, "upstream"),
        ({"upstream": ("gunicorn",)}, "upstream"),
        ({"upstream": ("http://127.0.0.1:8000/admin",)}, "upstream"),
        ({"server_name": "api.example.com/admin"}, "server_name"),
        ({"server_name": "api.example.com:8443"}, "server_name"),
        ({"server_name": "api.example.com\nadmin 0.0.0.0:2019"}, "server_name"),
        ({"proxy_secret": "short"}, "at least"),
        ({"proxy_secret": "{env.HOME}-0123456789abcdef"}, "proxy_secret"),
        ({"proxy_secret": "0123456789abcdef 0123"}, "proxy_secret"),
        ({"proxy_secret_header": "X_Secret"}, "proxy_secret_header"),
        ({"static_root": Path("/srv/static#x")}, "static_root"),
        ({"crl": Path("/etc/certauth/ca.crl.pem")}, "no CRL support"),
    ],
)
def test_bad_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        caddy.render(_options("on", **overrides))


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = caddy.render(_options(server_key=Path("relative.key"), upstream=("unix:run/g.sock",)))
    assert f"tls /etc/certauth/server.pem {tmp_path}/relative.key {{" in text
    assert f"reverse_proxy unix/{tmp_path}/run/g.sock {{" in text


def test_standalone_prefix_is_checked() -> None:
    with pytest.raises(ValueError, match="prefix"):
        caddy.render(_options(standalone=True, prefix=Path("/tmp/with space")))


# --- Caddy's own checker ---------------------------------------------------------------------------------


def _caddy() -> str:
    if CADDY is None:
        pytest.fail("caddy is not installed: run scripts/install-system-deps.sh")  # root: CI installs it
    return CADDY


def _validate(config: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **caddy.environment(prefix)}
    return subprocess.run(
        [_caddy(), "validate", "--config", str(config), "--adapter", "caddyfile"],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("caddy-pki"))


def _real_options(pki: DevPKI, mode: str, prefix: Path, **overrides: Any) -> ProxyOptions:
    return _options(
        mode,
        server_cert=pki.path("server"),
        server_key=pki.path("server", "key"),
        client_ca=None if mode == "optional_no_ca" else pki.out_dir / "ca-bundle.pem",
        standalone=True,
        prefix=prefix,
        **overrides,
    )


@needs_caddy
@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_caddy_validate_accepts_the_standalone_config(pki: DevPKI, tmp_path: Path, mode: str) -> None:
    config = tmp_path / "caddy.conf"
    config.write_text(caddy.render(_real_options(pki, mode, tmp_path, static_root=tmp_path)))
    result = _validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


@needs_caddy
def test_caddy_validate_accepts_the_site_block(pki: DevPKI, tmp_path: Path) -> None:
    options = replace(_real_options(pki, "on", tmp_path), standalone=False, listen="127.0.0.1:8443")
    config = tmp_path / "Caddyfile"
    config.write_text(
        f"{{\n\tadmin off\n\tauto_https off\n\tskip_install_trust\n\tstorage file_system {tmp_path}/data\n}}\n\n"
        + caddy.render(options)
    )
    result = _validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_caddy
def test_caddy_validate_refuses_a_broken_config(tmp_path: Path) -> None:
    """The checker the tests above rely on does refuse something."""
    config = tmp_path / "caddy.conf"
    config.write_text("https://:8443 {\n\trequest_header @nosuchmatcher X-A b\n}\n")
    assert _validate(config, tmp_path).returncode != 0


# --- what a real Caddy sends upstream ----------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """Answers with every header it got, in order and with duplicates, one ``name: value`` per line."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = "".join(f"{name}: {value}\n" for name, value in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "echo"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UnixEcho(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def _echo(kind: str, directory: Path) -> Iterator[str]:
    """An echo upstream: ``unix:/path`` or ``127.0.0.1:port``."""
    server: socketserver.BaseServer
    if kind == "unix":
        path = directory / "echo.sock"
        server = _UnixEcho(str(path), _Echo)
        address = f"unix:{path}"
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        server.daemon_threads = True
        address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield address
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _running(
    config_text: str, prefix: Path, port: int, pki: DevPKI, env: dict[str, str] | None = None
) -> Iterator[str]:
    config = prefix / "caddy.conf"
    config.write_text(config_text)
    log = (prefix / "caddy.log").open("wb")
    process = subprocess.Popen(
        caddy.command(_caddy(), config, prefix),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (prefix / "caddy.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, (prefix / "caddy.log").read_text()
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def _headers(response: requests.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, (response.status_code, response.text[:300])
    pairs = [line.split(": ", 1) for line in response.text.splitlines()]
    return [(name.lower(), value) for name, value in pairs]


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name.lower()]


FORGED = {
    "X-SSL-Client-Cert": "forged",
    "X-SSL-Client-Verify": "SUCCESS",
    "X-Real-IP": "203.0.113.7",
    "X-Forwarded-For": "203.0.113.8",
    "X-Forwarded-Proto": "http",
    "X_Real_IP": "203.0.113.9",
    "X_Forwarded_For": "203.0.113.10",
    "X-SSL_Client_Cert": "forged-underscore",
    "x_ssl_client_verify": "SUCCESS",
    "X-Certauth-Proxy-Secret": "guess",
    "X-Certauth-Original-URI": "/forged",
    "Client-Cert": ":Zm9yZ2Vk:",
    "X-Forwarded-Client-Cert": "Cert=forged",
}


@needs_caddy
@pytest.mark.parametrize("upstream", ["unix", "tcp"])
def test_real_caddy_sends_only_what_it_vouches_for(pki: DevPKI, tmp_path: Path, upstream: str) -> None:
    port = _free_port()
    ca = str(pki.path("ca"))
    with _echo(upstream, tmp_path) as address:
        options = _real_options(pki, "optional", tmp_path, listen=f"127.0.0.1:{port}", upstream=(address,))
        with _running(caddy.render(options), tmp_path, port, pki) as base:
            # No certificate, every forgery: none survives, the address is the real one.
            seen = _headers(requests.get(base + "/api/whoami/", headers=FORGED, verify=ca, timeout=10))
            names = {name for name, _ in seen}
            assert not [name for name in names if "_" in name]
            assert "x-ssl-client-cert" not in names
            assert "x-ssl-client-verify" not in names
            assert "{" not in "".join(value for _, value in seen)  # no placeholder text anywhere
            for name in ("client-cert", "x-forwarded-client-cert", "x-certauth-original-uri", "x-forwarded-host"):
                assert name not in names, name
            assert _values(seen, "X-Real-IP") == ["127.0.0.1"]
            assert _values(seen, "X-Forwarded-For") == ["127.0.0.1"]
            assert _values(seen, "X-Forwarded-Proto") == ["https"]
            assert _values(seen, "X-Certauth-Proxy-Secret") == [SECRET]
            assert _values(seen, "Host") == [f"127.0.0.1:{port}"]
            # An IPv6 Host keeps its brackets; neither Caddy nor gunicorn names itself.
            response = requests.get(base + "/", headers={"Host": f"[::1]:{port}"}, verify=ca, timeout=10)
            assert _values(_headers(response), "Host") == [f"[::1]:{port}"]
            assert "Server" not in response.headers

            # With a certificate: its DER in base64, once, and Caddy's verdict.
            session = requests.Session()
            session.cert = (str(pki.path("client")), str(pki.path("client", "key")))
            seen = _headers(session.get(base + "/", headers=FORGED, verify=ca, timeout=10))
            (forwarded,) = _values(seen, "X-SSL-Client-Cert")
            assert proxies_thumbprint(forwarded) == pki.thumbprint("client")
            assert _values(seen, "X-SSL-Client-Verify") == ["SUCCESS"]
            assert _values(seen, "X-Real-IP") == ["127.0.0.1"]
            assert _values(seen, "X-Forwarded-For") == ["127.0.0.1"]

            # certauth's refusal view is not reachable through Caddy.
            assert requests.get(base + "/-/certauth/refused", verify=ca, timeout=10).status_code == 404


def proxies_thumbprint(value: str) -> str:
    """The SHA-256 thumbprint of a forwarded base64 DER certificate, as certauth parses it."""
    from certauth.certificates import thumbprint_of
    from certauth.forwarding import parse_forwarded

    return thumbprint_of(parse_forwarded(value, "base64_der").leaf)


@needs_caddy
def test_real_caddy_without_verification_sends_no_verdict(pki: DevPKI, tmp_path: Path) -> None:
    port = _free_port()
    ca = str(pki.path("ca"))
    with _echo("unix", tmp_path) as address:
        options = _real_options(pki, "optional_no_ca", tmp_path, listen=f"127.0.0.1:{port}", upstream=(address,))
        with _running(caddy.render(options), tmp_path, port, pki) as base:
            session = requests.Session()
            # A certificate from a CA nobody trusts passes Caddy: certauth is the one to refuse it.
            session.cert = (str(pki.path("other-ca")), str(pki.path("other-ca", "key")))
            seen = _headers(session.get(base + "/", headers=FORGED, verify=ca, timeout=10))
            (forwarded,) = _values(seen, "X-SSL-Client-Cert")
            assert proxies_thumbprint(forwarded) == pki.thumbprint("other-ca")
            assert _values(seen, "X-SSL-Client-Verify") == []


@needs_caddy
def test_real_caddy_refuses_unverified_certificates_at_the_handshake(pki: DevPKI, tmp_path: Path) -> None:
    port = _free_port()
    ca = str(pki.path("ca"))
    with _echo("unix", tmp_path) as address:
        options = _real_options(pki, "optional", tmp_path, listen=f"127.0.0.1:{port}", upstream=(address,))
        with _running(caddy.render(options), tmp_path, port, pki) as base:
            for name in ("other-ca", "expired"):
                session = requests.Session()
                session.cert = (str(pki.path(name)), str(pki.path(name, "key")))
                with pytest.raises(requests.exceptions.ConnectionError):
                    session.get(base + "/", verify=ca, timeout=10)


@needs_caddy
def test_the_placeholder_trap_is_real(pki: DevPKI, tmp_path: Path) -> None:
    """Why the matcher: the same configuration with the certificate header set unconditionally forwards the
    placeholder's text when no certificate came (what certauth saw as a malformed certificate), and the
    ``expression ... != ""`` matcher does not prevent it.  If a Caddy upgrade changes this, the comments in
    certauth.proxyconf.caddy need revisiting."""
    port = _free_port()
    ca = str(pki.path("ca"))
    with _echo("unix", tmp_path) as address:
        options = _real_options(pki, "optional", tmp_path, listen=f"127.0.0.1:{port}", upstream=(address,))
        text = caddy.render(options).replace(
            "@certauth_certificate vars_regexp {http.request.tls.client.certificate_der_base64} ^[A-Za-z0-9+/]+=*$",
            '@certauth_certificate expression {http.request.tls.client.certificate_der_base64} != ""',
        )
        with _running(text, tmp_path, port, pki) as base:
            seen = _headers(requests.get(base + "/", verify=ca, timeout=10))
            assert _values(seen, "X-SSL-Client-Cert") == [caddy.CERTIFICATE_PLACEHOLDER]
            assert _values(seen, "X-SSL-Client-Verify") == ["SUCCESS"]


def test_the_docs_excerpt_is_what_the_renderer_writes() -> None:
    """docs/proxies.md shows the heart of the Caddyfile: every line of it is in the rendering it describes."""
    from certauth.nginxconf import PROXY_SECRET_PLACEHOLDER

    docs = (Path(__file__).resolve().parent.parent / "docs" / "proxies.md").read_text()
    excerpt = docs.split("```caddyfile\n", 1)[1].split("```", 1)[0]
    options = _options("on", listen="443", server_name="api.example.com", proxy_secret=PROXY_SECRET_PLACEHOLDER)
    rendered = {line.strip() for line in caddy.render(options).splitlines()}
    missing = [line.strip() for line in excerpt.splitlines() if line.strip() not in rendered]
    assert not missing


@needs_caddy
def test_real_caddy_writes_nothing_outside_its_prefix(pki: DevPKI, tmp_path: Path) -> None:
    """Caddy keeps an autosave of its config in $XDG_CONFIG_HOME and its PKI library writes $HOME/.step: the
    standalone command points both under the prefix, whatever the caller's environment says."""
    home = tmp_path / "home"
    home.mkdir()
    prefix = tmp_path / "run"
    prefix.mkdir(mode=0o700)
    port = _free_port()
    callers = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local")}
    with _echo("unix", tmp_path) as address:
        options = _real_options(pki, "optional", prefix, listen=f"127.0.0.1:{port}", upstream=(address,))
        with _running(caddy.render(options), prefix, port, pki, env=callers) as base:
            assert requests.get(base + "/healthz", verify=str(pki.path("ca")), timeout=10).status_code == 200
    assert list(home.iterdir()) == []
    assert (prefix / "caddy" / "config" / "caddy" / "autosave.json").is_file()
    assert (prefix / "logs" / "access.log").is_file()
