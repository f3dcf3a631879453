"""The nginx config renderer (certauth.nginxconf), its CLI, and the committed examples in nginx/."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import CommandError, call_command

from certauth import nginxconf

REPO = Path(__file__).resolve().parent.parent

# The arguments the committed examples were rendered with (nginx/README.md shows the same commands).
_PRODUCTION_COMMON = {
    "listen": "443",
    "server_name": "api.example.com",
    "server_cert": "/etc/certauth/server.pem",
    "server_key": "/etc/certauth/server.key",
    "upstream": ["127.0.0.1:8000"],
    "static_root": "/var/lib/certauth/static",
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
    # Inheritance trap: one proxy_set_header inside a location would drop all the server-level ones.
    for body in _blocks(text, "location"):
        assert "proxy_set_header" not in body
    refused = _blocks(text, "location @certauth_refused")
    assert len(refused) == 1 and "proxy_pass http://certauth_django;" in refused[0]
    assert "location = /healthz" in text


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
