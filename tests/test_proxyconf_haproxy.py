"""The HAProxy renderer (certauth.proxyconf.haproxy): the rendered text, the values it refuses, HAProxy's own
checker (``haproxy -c``) on every mode, and what a real HAProxy sends upstream (an echo server stands in for
gunicorn): the certificate, the verdict in nginx's words, the routed refusals and no client-sent copy of any
header it sets, in any spelling."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth.devpki import DevPKI, create_dev_pki
from certauth.proxies import reason_for_proxy_verdict
from certauth.proxyconf import FOREIGN_CERTIFICATE_HEADERS, ProxyOptions, find_binary, haproxy, renderer
from certauth.reasons import Reason

from .test_nginxconf import _EchoServer

HAPROXY = find_binary(haproxy.BINARIES)
SECRET = "s3cret-0123456789_abcdefghij"


def _require_haproxy() -> str:
    if HAPROXY is None:
        if os.geteuid() == 0:
            pytest.fail("haproxy is missing: scripts/install-system-deps.sh installs it")
        pytest.skip("haproxy is not installed (scripts/install-system-deps.sh installs it)")
    return HAPROXY


def _options(**overrides: Any) -> ProxyOptions:
    values: dict[str, Any] = {
        "mode": "on",
        "server_cert": Path("/etc/certauth/server-combined.pem"),
        "server_key": Path("/etc/certauth/server-combined.pem"),
        "client_ca": Path("/etc/certauth/ca-bundle.pem"),
        "listen": "127.0.0.1:8443",
        "upstream": ("unix:/run/certauth/gunicorn.sock",),
        "proxy_secret": SECRET,
    }
    values.update(overrides)
    if values["mode"] == "optional_no_ca" and "client_ca" not in overrides:
        values["client_ca"] = None
    return ProxyOptions(**values)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_module_is_the_renderer_for_haproxy() -> None:
    assert renderer("haproxy") is haproxy
    assert haproxy.certauth_settings(_options())["FORWARDING_FORMAT"] == "base64_der"
    settings = haproxy.certauth_settings(_options(mode="optional_no_ca"))
    assert settings["PROXY_VERIFIES_CERTIFICATE"] is False and settings["TRUSTED_PROXIES"] == ["unix:"]
    assert haproxy.command("/usr/sbin/haproxy", Path("/x/haproxy.conf"), Path("/x")) == [
        "/usr/sbin/haproxy",
        "-db",
        "-f",
        "/x/haproxy.conf",
    ]


@pytest.mark.parametrize(
    ("mode", "verify", "routed"),
    [
        ("on", "verify required", True),
        ("optional", "verify optional", True),
        ("optional_no_ca", "verify optional", False),
    ],
)
def test_each_mode_verifies_and_routes_as_documented(mode: str, verify: str, routed: bool) -> None:
    lines = _lines(haproxy.render(_options(mode=mode)))
    [bind] = [line for line in lines if line.startswith("bind ")]
    assert f" {verify} " in f" {bind} "
    assert "ssl-min-ver TLSv1.2" in bind and "no-tls-tickets" in bind
    assert "crt-ignore-err all" in bind and "ca-ignore-err all" in bind
    if mode == "optional_no_ca":
        # No CA given: the server's own file stands in, and its names are not offered.
        assert "ca-file /etc/certauth/server-combined.pem" in bind and "no-ca-names" in bind
    else:
        assert "ca-file /etc/certauth/ca-bundle.pem" in bind and "no-ca-names" not in bind
    refusal = [line for line in lines if "/-/certauth/refused" in line and "set-uri" in line]
    assert bool(refusal) is routed
    if routed:
        assert "http-request set-method GET if certauth_certificate certauth_unverified" in lines
        assert refusal == ["http-request set-uri /-/certauth/refused if certauth_certificate certauth_unverified"]


def test_success_only_for_a_verified_certificate_and_the_certificate_only_when_one_came() -> None:
    lines = _lines(haproxy.render(_options(mode="optional")))
    verdicts = [line for line in lines if line.startswith("http-request set-header X-SSL-Client-Verify ")]
    assert verdicts[0] == "http-request set-header X-SSL-Client-Verify NONE unless certauth_certificate"
    assert (
        verdicts[1]
        == "http-request set-header X-SSL-Client-Verify SUCCESS if certauth_certificate !certauth_unverified"
    )
    assert all("FAILED:" in line and " if certauth_certificate " in line for line in verdicts[2:])
    # Unverified: any of OpenSSL's verify result, the first leaf error, the first issuer error.
    assert {line for line in lines if line.startswith("acl certauth_unverified ")} == {
        "acl certauth_unverified ssl_c_verify gt 0",
        "acl certauth_unverified ssl_c_err gt 0",
        "acl certauth_unverified ssl_c_ca_err gt 0",
    }
    assert "http-request set-header X-SSL-Client-Cert %[ssl_c_der,base64] if certauth_certificate" in lines
    # The security headers come after the client's copies are deleted.
    first_delete = next(i for i, line in enumerate(lines) if line.startswith("http-request del-header"))
    first_set = next(i for i, line in enumerate(lines) if line.startswith("http-request set-header"))
    assert first_delete < first_set


def test_client_address_is_the_connection_and_the_secret_is_sent() -> None:
    lines = _lines(haproxy.render(_options()))
    assert "http-request set-header X-Real-IP %[src]" in lines
    assert "http-request set-header X-Forwarded-For %[src]" in lines  # overwritten, not `option forwardfor`
    assert "http-request set-header X-Forwarded-Proto https" in lines
    assert f"http-request set-header X-Certauth-Proxy-Secret '{SECRET}'" in lines
    assert "http-request set-header X-Certauth-Original-URI %[pathq]" in lines
    assert "http-request set-header X-Certauth-Original-Method %[method]" in lines
    assert not [line for line in lines if "forwardfor" in line]


def test_the_delete_pattern_covers_every_header_in_both_spellings() -> None:
    import re

    [line] = [line for line in _lines(haproxy.render(_options())) if line.startswith("http-request del-header")]
    pattern = line.split("'")[1]
    assert pattern.startswith("^(?i)(")
    # Python wants the inline flag first; HAProxy's PCRE2 takes it after "^".
    regex = re.compile(pattern.replace("^(?i)", "^"), re.IGNORECASE)
    names = [
        "X-SSL-Client-Cert",
        "X-SSL-Client-Verify",
        "X-Real-IP",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Certauth-Original-URI",
        "X-Certauth-Original-Method",
        "X-Certauth-Proxy-Secret",
        *FOREIGN_CERTIFICATE_HEADERS,
    ]
    for name in names:
        for spelling in (name, name.replace("-", "_"), name.lower().replace("-", "_", 1), name.upper()):
            assert regex.fullmatch(spelling.lower()), spelling
    assert not regex.fullmatch("x-ssl-client-certs") and not regex.fullmatch("accept")


def test_the_crl_comment_asks_for_every_cas_crl() -> None:
    text = haproxy.render(_options(crl=Path("/etc/certauth/crls.pem")))
    assert "crl-file /etc/certauth/crls.pem" in text
    assert "the CRL of EVERY CA in ca-file, intermediates included" in text


def test_upstreams_unix_and_tcp() -> None:
    text = haproxy.render(_options(upstream=("unix:/run/a.sock", "127.0.0.1:8000", "[::1]:8001")))
    assert "server certauth_django_1 /run/a.sock" in text
    assert "server certauth_django_2 127.0.0.1:8000" in text
    assert "server certauth_django_3 [::1]:8001" in text


def test_standalone_keeps_its_state_under_the_prefix_and_runs_as_the_user(tmp_path: Path) -> None:
    text = haproxy.render(_options(standalone=True, prefix=tmp_path))
    lines = _lines(text)
    assert f"pidfile {tmp_path}/haproxy.pid" in lines
    assert "log stderr format raw local0 info" in lines
    for word in ("daemon", "master-worker", "user", "group", "chroot"):
        assert not [line for line in lines if line.split()[0] == word], word
    snippet = haproxy.render(_options())
    assert "global" not in _lines(snippet) and "defaults" not in _lines(snippet)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen": "127.0.0.1:8443; evil"}, "listen"),
        ({"listen": "8443"}, "host:port"),
        ({"server_name": "a b"}, "server_name"),
        ({"client_ca": Path("/etc/ca bundle.pem")}, "client_ca"),
        ({"client_ca": Path("/etc/ca'.pem")}, "client_ca"),
        ({"crl": Path("/etc/crl\n.pem")}, "crl"),
        ({"upstream": ("unix:relative.sock",)}, "absolute path"),
        ({"upstream": ("127.0.0.1:8000 backup",)}, "upstream"),
        ({"upstream": ("127.0.0.1",)}, "host:port"),
        ({"proxy_secret": "short"}, "at least"),
        ({"proxy_secret": "has a space in it, 1234567890"}, "printable ASCII"),
        ({"proxy_secret": "quote'0123456789abcdef"}, "printable ASCII"),
        ({"proxy_secret": "percent%[src]0123456789"}, "printable ASCII"),
        ({"proxy_secret_header": "X-Secret: y"}, "header name"),
        ({"server_key": Path("/etc/certauth/server.key")}, "concatenate"),
        ({"mode": "optional_no_ca", "crl": Path("/etc/crl.pem")}, "crl"),
        ({"verify_depth": 0}, "verify_depth"),
    ],
)
def test_bad_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        haproxy.render(_options(**overrides))


def test_the_key_next_to_the_certificate_is_accepted() -> None:
    text = haproxy.render(
        _options(server_cert=Path("/etc/certauth/server.pem"), server_key=Path("/etc/certauth/server.pem.key"))
    )
    assert "crt /etc/certauth/server.pem " in text


def _libcrypto_error_string(code: int) -> str | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    function = ctypes.CDLL(name).X509_verify_cert_error_string
    function.restype = ctypes.c_char_p
    function.argtypes = [ctypes.c_long]
    return bytes(function(code)).decode()


def test_the_verdict_words_are_openssls_and_name_the_right_reason() -> None:
    if _libcrypto_error_string(10) is None:
        pytest.skip("no libcrypto to compare with")
    for code, text in haproxy.VERIFY_ERRORS.items():
        assert _libcrypto_error_string(code) == text, code
    expected = {
        2: Reason.UNTRUSTED_ISSUER,
        3: Reason.CRL_UNAVAILABLE,
        # A stale CRL is no expired certificate (certauth.proxies read these as certificate_expired and
        # certificate_not_yet_valid before).
        11: Reason.CRL_UNAVAILABLE,
        12: Reason.CRL_UNAVAILABLE,
        33: Reason.CRL_UNAVAILABLE,
        9: Reason.CERTIFICATE_NOT_YET_VALID,
        10: Reason.CERTIFICATE_EXPIRED,
        18: Reason.SELF_SIGNED_NOT_ALLOWED,
        19: Reason.UNTRUSTED_ISSUER,
        20: Reason.UNTRUSTED_ISSUER,
        21: Reason.UNTRUSTED_ISSUER,
        23: Reason.CRL_REVOKED,
        26: Reason.WRONG_USAGE,
        7: Reason.PROXY_VERIFICATION_FAILED,
    }
    for code, reason in expected.items():
        assert reason_for_proxy_verdict(f"FAILED:{haproxy.VERIFY_ERRORS[code]}") is reason, code
    assert reason_for_proxy_verdict("FAILED:verify error 77 (leaf 77, issuer 0 at depth 0)") is (
        Reason.PROXY_VERIFICATION_FAILED
    )


# --- the real program ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("haproxy-pki"))


def _combined(pki: DevPKI, directory: Path) -> Path:
    combined = directory / "server-combined.pem"
    combined.write_bytes(pki.path("server").read_bytes() + pki.path("server", "key").read_bytes())
    combined.chmod(0o600)
    return combined


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_require_haproxy(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", haproxy.MODES)
def test_haproxy_accepts_the_standalone_config(tmp_path: Path, pki: DevPKI, mode: str) -> None:
    _require_haproxy()
    combined = _combined(pki, tmp_path)
    config = tmp_path / "haproxy.conf"
    config.write_text(
        haproxy.render(
            _options(
                mode=mode,
                server_cert=combined,
                server_key=combined,
                client_ca=None if mode == "optional_no_ca" else pki.ca_bundle,
                crl=None if mode == "optional_no_ca" else pki.crl,
                upstream=(f"unix:{tmp_path}/gunicorn.sock", "127.0.0.1:8000"),
                standalone=True,
                prefix=tmp_path,
            )
        )
    )
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    # Not just any file passes: a config naming a missing CA file is refused.
    broken = tmp_path / "broken.conf"
    broken.write_text(config.read_text().replace(str(combined), str(tmp_path / "missing.pem")))
    assert _check(broken).returncode != 0


def test_haproxy_accepts_the_snippet_after_the_distributions_defaults(tmp_path: Path, pki: DevPKI) -> None:
    _require_haproxy()
    combined = _combined(pki, tmp_path)
    config = tmp_path / "haproxy.cfg"
    # Debian's haproxy.cfg, shortened: the snippet sets its own mode and timeouts.
    config.write_text(
        "global\n    log /dev/log local0\n\ndefaults\n    log global\n    mode tcp\n    timeout connect 1s\n\n"
        + haproxy.render(_options(mode="optional", server_cert=combined, server_key=combined, client_ca=pki.ca_bundle))
    )
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class LiveHAProxy:
    base_url: str
    pki: DevPKI
    echo: _EchoServer

    def send(self, method: str, path: str, cert: str | None = None, **kwargs: Any) -> list[Any]:
        """Send one request; return what reached the upstream for it (and the response)."""
        before = len(self.echo.seen)
        certificate = None if cert is None else (str(self.pki.path(cert)), str(self.pki.path(cert, "key")))
        response = requests.request(
            method, self.base_url + path, cert=certificate, verify=str(self.pki.path("ca")), timeout=10, **kwargs
        )
        response.close()
        self.last_status = response.status_code
        return self.echo.seen[before:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _running(base: Path, pki: DevPKI, **overrides: Any) -> Iterator[LiveHAProxy]:
    """A real HAProxy (mode optional unless ``overrides`` say otherwise) in front of an echo server."""
    binary = _require_haproxy()
    combined = _combined(pki, base)
    port = _free_port()
    echo = _EchoServer()
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    config = base / "haproxy.conf"
    values: dict[str, Any] = {
        "mode": "optional",
        "server_cert": combined,
        "server_key": combined,
        "client_ca": pki.ca_bundle,
        "listen": f"127.0.0.1:{port}",
        "upstream": (f"127.0.0.1:{echo.server_address[1]}",),
        "standalone": True,
        "prefix": base,
        **overrides,
    }
    config.write_text(haproxy.render(_options(**values)))
    stderr = (base / "stderr.log").open("wb")
    process = subprocess.Popen(
        haproxy.command(binary, config, base), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"haproxy did not start: {(base / 'stderr.log').read_text()}") from None
                time.sleep(0.05)
        yield LiveHAProxy(f"https://localhost:{port}", pki, echo)
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.close()
        echo.shutdown()
        echo.server_close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, pki: DevPKI) -> Iterator[LiveHAProxy]:
    with _running(tmp_path_factory.mktemp("live-haproxy"), pki) as running:
        yield running


def _der_base64(pki: DevPKI, name: str) -> str:
    certificate = x509.load_pem_x509_certificate(pki.path(name).read_bytes())
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


#: What a client without a certificate forges, every header in dash and underscore spellings.
def _forgeries(pki: DevPKI) -> dict[str, str]:
    forged_cert = _der_base64(pki, "client")
    headers = {
        "X-SSL-Client-Cert": forged_cert,
        "X_SSL_Client_Cert": forged_cert,
        "X-SSL_Client-Cert": forged_cert,
        "X-SSL-Client-Verify": "SUCCESS",
        "X_SSL_Client_Verify": "SUCCESS",
        "X-Real-IP": "203.0.113.9",
        "X_Real_IP": "203.0.113.9",
        "X-Forwarded-For": "203.0.113.9",
        "X_Forwarded_For": "203.0.113.9",
        "X-Forwarded-Proto": "http",
        "X-Certauth-Proxy-Secret": "forged-secret-0123456789",
        "X_Certauth_Proxy_Secret": "forged-secret-0123456789",
        "X_Certauth_Original_URI": "/forged",
    }
    for name in FOREIGN_CERTIFICATE_HEADERS:
        headers[name] = forged_cert
        headers[name.replace("-", "_")] = forged_cert
    return headers


def test_live_no_client_copy_of_any_header_reaches_the_upstream(live: LiveHAProxy) -> None:
    [seen] = live.send("GET", "/api/whoami/?x=1", headers=_forgeries(live.pki))
    assert (seen.method, seen.path) == ("GET", "/api/whoami/?x=1")
    assert "x-ssl-client-cert" not in seen.headers
    assert not [value for value in seen.headers.values() if "203.0.113.9" in value or "forged" in value]
    assert not [name for name in seen.headers if "_" in name], seen.headers
    assert not {name.lower() for name in FOREIGN_CERTIFICATE_HEADERS} & set(seen.headers)
    assert seen.headers["x-ssl-client-verify"] == "NONE"
    assert seen.headers["x-real-ip"] == "127.0.0.1"
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"
    assert seen.headers["x-forwarded-proto"] == "https"
    assert seen.headers["x-certauth-proxy-secret"] == SECRET
    assert seen.headers["x-certauth-original-uri"] == "/api/whoami/?x=1"
    assert seen.headers["host"] == f"localhost:{live.base_url.rsplit(':', 1)[1]}"


def test_live_verified_certificate_is_forwarded_as_base64_der(live: LiveHAProxy) -> None:
    for name in ("client", "via-intermediate"):
        [seen] = live.send("POST", "/api/orders/?page=2", cert=name, data=b"payload", headers=_forgeries(live.pki))
        assert (seen.method, seen.path, seen.body) == ("POST", "/api/orders/?page=2", b"payload")
        assert seen.headers["x-ssl-client-cert"] == _der_base64(live.pki, name)
        assert seen.headers["x-ssl-client-verify"] == "SUCCESS"
        assert seen.headers["x-real-ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("expired", "FAILED:certificate has expired"),
        ("not-yet-valid", "FAILED:certificate is not yet valid"),
        # Every error is ignored in turn, so OpenSSL's result is its last one: 20 (no local issuer), then 21.
        ("other-ca", "FAILED:unable to verify the first certificate"),
        ("self-signed", "FAILED:self-signed certificate"),
        ("server-usage", "FAILED:unsuitable certificate purpose"),
    ],
)
def test_live_failed_verification_goes_to_the_refusal_view_with_the_reason(
    live: LiveHAProxy, name: str, verdict: str
) -> None:
    forged = {"X-SSL-Client-Verify": "SUCCESS", "X-Certauth-Original-URI": "/forged"}
    [seen] = live.send("POST", "/api/orders/?q=1", cert=name, json={"item": "x"}, headers=forged)
    assert (seen.method, seen.path) == ("GET", "/-/certauth/refused")
    assert seen.headers["x-ssl-client-verify"] == verdict
    assert seen.headers["x-ssl-client-cert"] == _der_base64(live.pki, name)
    assert seen.headers["x-certauth-original-uri"] == "/api/orders/?q=1"
    assert seen.headers["x-certauth-original-method"] == "POST"


def test_live_the_refusal_path_itself_is_a_404(live: LiveHAProxy) -> None:
    for path in ("/-/certauth/refused", "/-/certauth/%72efused"):
        assert live.send("GET", path, cert="client") == []
        assert live.last_status == 404


def test_live_a_crl_file_must_hold_every_cas_crl(tmp_path: Path, pki: DevPKI) -> None:
    """The dev PKI's CRL is the root's only: the revoked client is refused as revoked, and so is, for want of
    its CA's CRL, every client of the intermediate (what the rendered comment and docs/proxies.md warn of)."""
    with _running(tmp_path, pki, mode="on", crl=pki.crl) as running:
        [seen] = running.send("GET", "/api/whoami/", cert="crl-revoked")
        assert (seen.path, seen.headers["x-ssl-client-verify"]) == ("/-/certauth/refused", "FAILED:certificate revoked")
        [seen] = running.send("GET", "/api/whoami/", cert="via-intermediate")
        assert seen.path == "/-/certauth/refused"
        assert seen.headers["x-ssl-client-verify"] == "FAILED:unable to get certificate CRL"
        [seen] = running.send("GET", "/api/whoami/", cert="client")
        assert (seen.path, seen.headers["x-ssl-client-verify"]) == ("/api/whoami/", "SUCCESS")
        # verify required: no certificate, no handshake.
        with pytest.raises(requests.exceptions.ConnectionError):
            running.send("GET", "/api/whoami/")


def test_live_optional_no_ca_forwards_any_certificate_to_certauth(tmp_path: Path, pki: DevPKI) -> None:
    """certauth verifies in optional_no_ca: a certificate of an unknown CA reaches the view it asked for (with
    HAProxy's honest verdict, which certauth does not read there); without a CA file, none is offered."""
    with _running(tmp_path, pki, mode="optional_no_ca", client_ca=None) as running:
        for name in ("other-ca", "expired", "client"):
            [seen] = running.send("POST", "/api/orders/", cert=name, data=b"x")
            assert (seen.method, seen.path) == ("POST", "/api/orders/")
            assert seen.headers["x-ssl-client-cert"] == _der_base64(pki, name)
            assert seen.headers["x-ssl-client-verify"] != "SUCCESS"  # the stand-in CA file trusts none of them
        [seen] = running.send("GET", "/api/whoami/")
        assert seen.headers["x-ssl-client-verify"] == "NONE" and "x-ssl-client-cert" not in seen.headers
