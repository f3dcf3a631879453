"""certauth.proxyconf.apache: what the rendered Apache httpd configuration promises, the values it refuses, and
that Apache's own checker (``apache2 -t -f``) accepts it.  The e2e tests (tests/e2e/test_apache.py) run it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from certauth.devpki import DevPKI, create_dev_pki
from certauth.proxies import reason_for_proxy_verdict
from certauth.proxyconf import (
    FOREIGN_CERTIFICATE_HEADERS,
    ProxyOptions,
    apache,
    find_proxy,
    renderer,
)
from certauth.reasons import Reason

SECRET = "kT3-vQ_9xYz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0u"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("apache-pki"))


def _options(pki: DevPKI, run_dir: Path, **changes: object) -> ProxyOptions:
    options = ProxyOptions(
        mode="optional",
        server_cert=pki.path("server"),
        server_key=pki.path("server", "key"),
        client_ca=pki.out_dir / "ca-bundle.pem",
        listen="127.0.0.1:18443",
        upstream=(f"unix:{run_dir}/gunicorn/gunicorn.sock",),
        standalone=True,
        prefix=run_dir,
        proxy_secret=SECRET,
    )
    return replace(options, **changes)  # type: ignore[arg-type]


def _directives(text: str) -> list[str]:
    """The configuration's lines without comments and indentation."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_module_is_the_apache_renderer() -> None:
    assert renderer("apache") is apache
    assert set(apache.MODES) == {"on", "optional", "optional_no_ca"}


@pytest.mark.parametrize(
    ("mode", "verify"), [("on", "require"), ("optional", "optional"), ("optional_no_ca", "optional_no_ca")]
)
def test_each_mode_verifies_as_promised(pki: DevPKI, tmp_path: Path, mode: str, verify: str) -> None:
    client_ca = None if mode == "optional_no_ca" else pki.out_dir / "ca-bundle.pem"
    lines = _directives(apache.render(_options(pki, tmp_path, mode=mode, client_ca=client_ca)))
    assert f"SSLVerifyClient {verify}" in lines
    assert "SSLProtocol -all +TLSv1.2 +TLSv1.3" in lines
    ca_lines = [line for line in lines if line.startswith("SSLCACertificateFile")]
    assert ca_lines == ([] if mode == "optional_no_ca" else [f'SSLCACertificateFile "{client_ca}"'])
    settings = apache.certauth_settings(_options(pki, tmp_path, mode=mode, client_ca=client_ca))
    assert settings["PROXY_VERIFIES_CERTIFICATE"] is (mode != "optional_no_ca")
    assert settings["FORWARDING_FORMAT"] == "nginx_escaped"
    assert settings["CERTIFICATE_HEADER"] == "X-SSL-Client-Cert"
    assert settings["TRUSTED_PROXIES"] == ["unix:"]


def test_certificate_header_only_when_a_certificate_came(pki: DevPKI, tmp_path: Path) -> None:
    """Not ``"%{SSL_CLIENT_CERT}s"`` (``(null)`` without a certificate, line breaks as spaces): the escaped PEM,
    under the condition that there is one."""
    lines = _directives(apache.render(_options(pki, tmp_path)))
    sets = [line for line in lines if line.lower().startswith("requestheader set x-ssl-client-cert ")]
    assert sets == [
        'RequestHeader set X-SSL-Client-Cert "expr=%{escape:%{SSL_CLIENT_CERT}}" "expr=-n %{SSL_CLIENT_CERT}"'
    ]
    assert not [line for line in lines if "%{SSL_CLIENT_CERT}s" in line]
    chain = [line for line in lines if line.lower().startswith("requestheader set x-ssl-client-chain ")]
    assert chain == [
        'RequestHeader set X-SSL-Client-Chain "expr=%{escape:%{SSL_CLIENT_CERT_CHAIN_0}}'
        '%{escape:%{SSL_CLIENT_CERT_CHAIN_1}}%{escape:%{SSL_CLIENT_CERT_CHAIN_2}}" "expr=-n %{SSL_CLIENT_CERT_CHAIN_0}"'
    ]
    assert apache.certauth_settings(_options(pki, tmp_path))["CHAIN_HEADER"] == "X-SSL-Client-Chain"
    assert 'RequestHeader set X-SSL-Client-Verify "expr=%{SSL_CLIENT_VERIFY}"' in lines


def test_every_spelling_of_every_header_is_unset_before_anything_is_set(pki: DevPKI, tmp_path: Path) -> None:
    lines = _directives(apache.render(_options(pki, tmp_path)))
    unset = [line.split()[2] for line in lines if line.startswith("RequestHeader unset ")]
    first_set = next(i for i, line in enumerate(lines) if line.startswith("RequestHeader set "))
    last_unset = max(i for i, line in enumerate(lines) if line.startswith("RequestHeader unset "))
    assert last_unset < first_set  # a false condition must not leave the client's copy in place
    expected = [
        "X-SSL-Client-Cert", "X-SSL-Client-Chain", "X-SSL-Client-Verify", "X-Real-IP", "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Certauth-Proxy-Secret", "X-Certauth-Original-URI", "X-Certauth-Original-Method",
        "X-Forwarded-Host", "X-Forwarded-Server", *FOREIGN_CERTIFICATE_HEADERS,
    ]  # fmt: skip
    for name in expected:
        for spelling in apache.spellings(name):
            assert spelling in unset, spelling
    assert "X_SSL_Client_Cert" in unset and "X-SSL_Client-Cert" in unset and "X_Real_IP" in unset
    assert len(unset) == len(set(unset))


def test_spellings() -> None:
    assert apache.spellings("X-Real-IP") == ["X-Real-IP", "X-Real_IP", "X_Real-IP", "X_Real_IP"]
    assert apache.spellings("Host") == ["Host"]
    assert len(apache.spellings("X-Amzn-Mtls-Clientcert-Leaf")) == 16


def test_real_address_overwritten_and_proxy_headers_not_appended(pki: DevPKI, tmp_path: Path) -> None:
    lines = _directives(apache.render(_options(pki, tmp_path)))
    assert 'RequestHeader set X-Real-IP "expr=%{CONN_REMOTE_ADDR}"' in lines
    assert 'RequestHeader set X-Forwarded-For "expr=%{CONN_REMOTE_ADDR}"' in lines
    assert "RequestHeader set X-Forwarded-Proto https" in lines
    assert "ProxyAddHeaders Off" in lines
    assert "ProxyPreserveHost On" in lines
    assert 'RequestHeader set Host "expr=%{SERVER_NAME}:%{SERVER_PORT}"' in lines
    vhost = _directives(apache.render(_options(pki, tmp_path, standalone=False, prefix=None)))
    assert "UseCanonicalName Off" in vhost and "UseCanonicalPhysicalPort On" in vhost  # the port, in the snippet too
    assert f'RequestHeader set X-Certauth-Proxy-Secret "{SECRET}"' in lines


def test_no_secret_no_secret_header(pki: DevPKI, tmp_path: Path) -> None:
    lines = _directives(apache.render(_options(pki, tmp_path, proxy_secret=None)))
    assert not [line for line in lines if line.startswith("RequestHeader set X-Certauth-Proxy-Secret")]
    assert "RequestHeader unset X-Certauth-Proxy-Secret" in lines  # a client's copy still goes


def test_upstreams(pki: DevPKI, tmp_path: Path) -> None:
    unix = _directives(apache.render(_options(pki, tmp_path, upstream=("unix:/run/g.sock",))))
    assert 'ProxyPass "/" "unix:/run/g.sock|http://localhost/"' in unix
    tcp = apache.render(_options(pki, tmp_path, upstream=("127.0.0.1:8000",)))
    assert 'ProxyPass "/" "http://127.0.0.1:8000/"' in _directives(tcp)
    assert apache.certauth_settings(_options(pki, tmp_path, upstream=("127.0.0.1:8000",)))["TRUSTED_PROXIES"] == [
        "127.0.0.1",
        "::1",
    ]
    both = _directives(apache.render(_options(pki, tmp_path, upstream=("unix:/run/g.sock", "[::1]:8001"))))
    assert 'BalancerMember "unix:/run/g.sock|http://localhost/"' in both
    assert 'BalancerMember "http://[::1]:8001/"' in both
    assert 'ProxyPass "/" "balancer://certauth/"' in both


def test_crl_must_cover_every_ca(pki: DevPKI, tmp_path: Path) -> None:
    text = apache.render(_options(pki, tmp_path, crl=pki.out_dir / "ca.crl.pem"))
    assert f'SSLCARevocationFile "{pki.out_dir / "ca.crl.pem"}"' in _directives(text)
    assert "SSLCARevocationCheck chain" in _directives(text)
    assert "EVERY CA" in text


def test_refusal_view_is_closed(pki: DevPKI, tmp_path: Path) -> None:
    text = apache.render(_options(pki, tmp_path))
    assert re.search(r'<Location "/-/certauth/refused">\s+Require all denied\s+</Location>', text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"listen": "127.0.0.1:8443 ssl"}, "listen"),
        ({"listen": "localhost"}, "listen"),
        ({"server_name": 'evil"name'}, "server_name"),
        ({"server_name": "a\nb"}, "server_name"),
        ({"server_cert": Path("/tmp/a b.pem")}, "server_cert"),
        ({"server_key": Path("/tmp/%{ENV}.key")}, "server_key"),
        ({"client_ca": Path("/tmp/$x.pem")}, "client_ca"),
        ({"crl": Path('/tmp/c".pem')}, "crl"),
        ({"upstream": ("unix:relative.sock",)}, "absolute"),
        ({"upstream": ("unix:/tmp/a|http://evil/",)}, "upstream socket path"),
        ({"upstream": ("http://127.0.0.1:8000",)}, "upstream"),
        ({"proxy_secret": "short"}, "at least"),
        ({"proxy_secret": "a" * 20 + "%{SSL_CLIENT_CERT}s"}, "proxy_secret"),
        ({"proxy_secret": "a" * 20 + '" "expr=true'}, "proxy_secret"),
        ({"proxy_secret_header": "X Secret"}, "proxy_secret_header"),
        ({"prefix": Path("/tmp/with space")}, "prefix"),
        ({"static_root": Path("/tmp/<Directory>")}, "static_root"),
        ({"verify_depth": 0}, "verify_depth"),
        ({"mode": "optional_no_ca", "client_ca": None, "crl": Path("/tmp/c.pem")}, "crl"),
        ({"extra": {"modules_dir": "/usr/lib/apache2/modules\nLoadModule x"}}, "modules_dir"),
    ],
)
def test_bad_values_are_refused(pki: DevPKI, tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apache.render(_options(pki, tmp_path, **change))


def test_generous_is_not_verified() -> None:
    """Apache's ``SSL_CLIENT_VERIFY`` words, forwarded as they are: only SUCCESS counts."""
    assert reason_for_proxy_verdict("SUCCESS") is None
    assert reason_for_proxy_verdict("GENEROUS") is Reason.PROXY_VERIFICATION_FAILED
    assert reason_for_proxy_verdict("NONE") is Reason.PROXY_VERIFICATION_FAILED
    assert reason_for_proxy_verdict("FAILED:unable to verify the first certificate") is Reason.UNTRUSTED_ISSUER


def test_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "apache.conf"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert apache.command("/usr/sbin/apache2", config, tmp_path) == [
        "/usr/sbin/apache2",
        "-f",
        str(config),
        "-DFOREGROUND",
    ]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv (util-linux) here: as root the workers stay root")
    as_root = apache.command("/usr/sbin/apache2", config, tmp_path)
    assert as_root[0].endswith("setpriv") and "--reuid=65534" in as_root and "--ambient-caps=+dac_override" in as_root
    assert as_root[-4:] == ["/usr/sbin/apache2", "-f", str(config), "-DFOREGROUND"]


# --- Apache's own checker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apache2() -> str:
    binary = find_proxy("apache")
    if binary is None:
        if os.geteuid() == 0:
            pytest.fail("apache2 is not installed: run scripts/install-system-deps.sh")
        pytest.skip("apache2 is not installed (scripts/install-system-deps.sh, as root)")
    return binary


def _check(binary: str, config: Path) -> None:
    result = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "Syntax OK" in result.stderr + result.stdout, result.stderr + result.stdout


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_apache_accepts_the_standalone_configuration(apache2: str, pki: DevPKI, tmp_path: Path, mode: str) -> None:
    (tmp_path / "logs").mkdir()
    static = tmp_path / "static"
    static.mkdir()
    verifies = mode != "optional_no_ca"
    options = _options(
        pki,
        tmp_path,
        mode=mode,
        client_ca=pki.out_dir / "ca-bundle.pem" if verifies else None,
        crl=pki.out_dir / "ca.crl.pem" if verifies else None,
        static_root=static,
        upstream=(f"unix:{tmp_path}/g.sock", "127.0.0.1:8001") if mode == "on" else (f"unix:{tmp_path}/g.sock",),
    )
    config = tmp_path / "apache.conf"
    config.write_text(apache.render(options))
    _check(apache2, config)


def test_apache_accepts_the_virtual_host(apache2: str, pki: DevPKI, tmp_path: Path) -> None:
    """The part an operator includes: a minimal server configuration around it, as Debian's would be."""
    (tmp_path / "logs").mkdir()
    vhost = tmp_path / "certauth.conf"
    vhost.write_text(apache.render(_options(pki, tmp_path, standalone=False, prefix=None)))
    standalone = apache.render(_options(pki, tmp_path))
    server_part = standalone[: standalone.index("<VirtualHost")]
    config = tmp_path / "apache.conf"
    config.write_text(f"{server_part}\nInclude {vhost}\n")
    _check(apache2, config)
    assert "a2enmod headers proxy proxy_http ssl" in vhost.read_text()
