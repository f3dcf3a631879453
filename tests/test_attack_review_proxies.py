"""Attack review of the rendered TLS-proxy configurations (issue 12 part 2), renderer level: what the
text of each configuration lets a client or an option value do.  The same attacks through the real
proxies are in tests/e2e/test_attack_review_proxies.py.

Found and fixed: the Apache dialect's chain header (``X-SSL-Client-Chain``, certauth's ``CHAIN_HEADER``
in the Apache recipe) was passed through by the nginx, HAProxy and Caddy configurations, so an operator who
moved from Apache to another proxy and kept ``CHAIN_HEADER`` let clients write the chain certauth builds
with (docs/SECURITY.md §45)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from certauth import nginxconf
from certauth.proxyconf import FOREIGN_CERTIFICATE_HEADERS, ProxyOptions, apache, caddy, haproxy

SECRET = "s3cret-0123456789_abcdefghij-XYZ"
ROOT = Path("/etc/certauth")


def _options(mode: str = "optional", **overrides: Any) -> ProxyOptions:
    values: dict[str, Any] = {
        "mode": mode,
        "server_cert": ROOT / "server.pem",
        "server_key": ROOT / "server.pem",
        "client_ca": None if mode == "optional_no_ca" else ROOT / "ca-bundle.pem",
        "listen": "127.0.0.1:8443",
        "upstream": ("unix:/run/certauth/gunicorn.sock",),
        "proxy_secret": SECRET,
    }
    values.update(overrides)
    return ProxyOptions(**values)


def _nginx(mode: str = "optional") -> str:
    return nginxconf.render(
        mode=mode,  # type: ignore[arg-type]
        server_cert=ROOT / "server.pem",
        server_key=ROOT / "server.key",
        client_ca=None if mode == "optional_no_ca" else ROOT / "ca-bundle.pem",
        upstream=("unix:/run/certauth/gunicorn.sock",),
        proxy_secret=SECRET,
    )


# --- the chain header of the Apache dialect ------------------------------------------------------------------


def test_the_apache_chain_header_is_one_of_the_foreign_headers() -> None:
    assert apache.CHAIN_HEADER in FOREIGN_CERTIFICATE_HEADERS


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_haproxy_deletes_a_client_sent_chain_header_in_every_spelling(mode: str) -> None:
    [line] = [line for line in haproxy.render(_options(mode)).splitlines() if "del-header" in line]
    pattern = re.compile(line.split("'")[1].replace("^(?i)", "(?i)^"))
    for name in ("X-SSL-Client-Chain", "x_ssl_client_chain", "X-Ssl_Client-CHAIN"):
        assert pattern.match(name), name


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_caddy_deletes_a_client_sent_chain_header(mode: str) -> None:
    lines = [line.strip() for line in caddy.render(_options(mode)).splitlines()]
    assert "request_header -X-SSL-Client-Chain" in lines
    assert lines.index("request_header -X-SSL-Client-Chain") < lines.index(
        "request_header @certauth_certificate X-SSL-Client-Cert {http.request.tls.client.certificate_der_base64}"
    )


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_nginx_clears_a_client_sent_chain_header(mode: str) -> None:
    assert 'proxy_set_header X-SSL-Client-Chain "";' in _nginx(mode)


def test_apache_still_sets_its_chain_header_after_unsetting_every_spelling_once() -> None:
    lines = [line.strip() for line in apache.render(_options("optional")).splitlines()]
    unsets = [line for line in lines if line.startswith("RequestHeader unset ")]
    assert len(unsets) == len(set(unsets))  # the chain header is Apache's own and a foreign one: once
    for spelling in apache.spellings(apache.CHAIN_HEADER):
        assert f"RequestHeader unset {spelling}" in unsets
    [chain] = [line for line in lines if line.startswith(f"RequestHeader set {apache.CHAIN_HEADER} ")]
    assert lines.index(chain) > max(lines.index(line) for line in unsets)


# --- the verdict ---------------------------------------------------------------------------------------------


def test_haproxy_maps_no_error_code_to_success() -> None:
    assert 0 not in haproxy.VERIFY_ERRORS
    assert all(text and "SUCCESS" not in text.upper() for text in haproxy.VERIFY_ERRORS.values())
    lines = [line.strip() for line in haproxy.render(_options("optional_no_ca")).splitlines()]
    success = [line for line in lines if "X-SSL-Client-Verify SUCCESS" in line]
    assert success == [
        "http-request set-header X-SSL-Client-Verify SUCCESS if certauth_certificate !certauth_unverified"
    ]
    # Every later verdict line applies to unverified certificates only (a later set-header wins).
    later = lines[lines.index(success[0]) + 1 :]
    assert all(
        "certauth_unverified" in line or "{ ssl_c_verify " in line
        for line in later
        if line.startswith("http-request set-header X-SSL-Client-Verify")
    )
    assert all(
        re.search(r"\{ ssl_c_verify [1-9][0-9]* \}", line)
        for line in later
        if line.startswith("http-request set-header X-SSL-Client-Verify") and "certauth_unverified" not in line
    )


# --- option values that would write configuration -------------------------------------------------------------

HOSTILE_PATHS = [
    "/etc/certauth/ca bundle.pem",
    "/etc/certauth/ca.pem\n    verify none",
    "/etc/certauth/ca.pem}",
    "/etc/certauth/ca.pem#",
    "/etc/certauth/%{SSL_CLIENT_CERT}.pem",
    "/etc/certauth/$HOME.pem",
    '/etc/certauth/ca".pem',
    "/etc/certauth/ca'.pem",
    "/etc/certauth/ca;.pem",
    "/etc/certauth/ca\\.pem",
]
HOSTILE_SECRETS = [
    SECRET + "'\n    http-request set-header X-SSL-Client-Verify SUCCESS",
    SECRET + '"\n    RequestHeader set X-SSL-Client-Verify SUCCESS',
    SECRET + "\n\t\theader_up X-SSL-Client-Verify SUCCESS",
    SECRET + "%[src]",
    SECRET + "%{SSL_CLIENT_CERT}s",
    SECRET + "{http.request.header.X-Real-IP}",
    SECRET + "$remote_addr",
    SECRET + " x",
    SECRET + "#",
]


@pytest.mark.parametrize("module", [haproxy, apache, caddy], ids=["haproxy", "apache", "caddy"])
@pytest.mark.parametrize("field", ["server_cert", "server_key", "client_ca", "static_root"])
@pytest.mark.parametrize("value", HOSTILE_PATHS)
def test_a_path_that_would_write_configuration_is_refused(module: Any, field: str, value: str) -> None:
    overrides: dict[str, Any] = {field: Path(value)}
    if module is haproxy and field in ("server_cert", "server_key"):
        overrides = {"server_cert": Path(value), "server_key": Path(value)}
    if module is haproxy and field == "static_root":
        pytest.skip("HAProxy serves no static files")
    with pytest.raises(ValueError):
        module.render(_options(**overrides))


@pytest.mark.parametrize("module", [haproxy, apache, caddy], ids=["haproxy", "apache", "caddy"])
@pytest.mark.parametrize("secret", HOSTILE_SECRETS)
def test_a_secret_that_would_write_configuration_is_refused(module: Any, secret: str) -> None:
    if module is haproxy and "{http." in secret:
        pytest.skip("braces are literal inside HAProxy's single quotes (its samples start with %)")
    with pytest.raises(ValueError):
        module.render(_options(proxy_secret=secret))


@pytest.mark.parametrize("module", [haproxy, apache, caddy], ids=["haproxy", "apache", "caddy"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("server_name", "localhost\n    SSLVerifyClient none"),
        ("server_name", "localhost }"),
        ("server_name", "localhost #"),
        ("server_name", "local%host"),
        ("listen", "127.0.0.1:8443\n"),
        ("listen", "127.0.0.1:8443 }"),
        ("upstream", ("127.0.0.1:8000\n    server evil 203.0.113.1:80",)),
        ("upstream", ("unix:/run/x.sock}",)),
        ("upstream", ("unix:/run/x y.sock",)),
        ("proxy_secret_header", "X-Certauth-Proxy-Secret\n"),
        ("proxy_secret_header", "X-Real-IP X"),
        ("prefix", Path("/tmp/x\ny")),
    ],
)
def test_a_name_or_address_that_would_write_configuration_is_refused(module: Any, field: str, value: Any) -> None:
    extra: dict[str, Any] = {"standalone": True, "prefix": Path("/tmp/certauth-proxy")}
    extra[field] = value
    with pytest.raises(ValueError):
        module.render(_options(**extra))


# --- the command line --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("proxy", ["haproxy", "apache", "caddy"])
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--server-name", "localhost\n    SSLVerifyClient none"),
        ("--server-name", "localhost }"),
        ("--listen", "127.0.0.1:8443 #"),
        ("--upstream", "127.0.0.1:8000\n    server evil 203.0.113.1:80"),
        ("--client-ca", "/etc/certauth/ca bundle.pem"),
        ("--proxy-secret-file", "<hostile secret>"),
    ],
)
def test_the_command_refuses_values_that_would_write_configuration(
    proxy: str, option: str, value: str, tmp_path: Path
) -> None:
    """``certauth proxy-config``: a value the renderer refuses is a CommandError naming it, never a
    configuration with the value in it (the secret file's content too: only the first and last blanks go)."""
    from django.core.management import CommandError, call_command

    server = tmp_path / "server.pem"
    server.write_text("not read without --check-files\n")
    if option == "--proxy-secret-file":
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET + "'\n    http-request set-header X-SSL-Client-Verify SUCCESS\n")
        value = str(secret_file)
    arguments = {
        "--proxy": proxy,
        "--mode": "optional",
        "--server-cert": str(server),
        "--server-key": str(server),
        "--client-ca": "/etc/certauth/ca-bundle.pem",
        "--upstream": "unix:/run/certauth/gunicorn.sock",
        option: value,
    }
    # The same command with a harmless value works: the refusal below is the value's doing.
    (tmp_path / "good").write_text(SECRET + "\n")
    harmless = {
        "--server-name": "api.example.com",
        "--listen": "127.0.0.1:8443",
        "--upstream": "127.0.0.1:8000",
        "--client-ca": "/etc/certauth/ca-bundle.pem",
        "--proxy-secret-file": str(tmp_path / "good"),
    }
    control = {**arguments, option: harmless[option]}
    call_command("certauth", "proxy-config", *[item for pair in control.items() for item in pair], stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("certauth", "proxy-config", *[item for pair in arguments.items() for item in pair])
