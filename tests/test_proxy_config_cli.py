"""``certauth proxy-config``: the configuration of any proxy in certauth.proxyconf.PROXIES plus the matching
CERTAUTH settings as comments (the output stays a file the proxy loads: ``haproxy -c`` reads it), clear errors
for a mode or a renderer a proxy lacks, and ``nginx-config`` as its alias with exactly its former output."""

from __future__ import annotations

import importlib.util
import io
import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from certauth import nginxconf, proxyconf
from certauth.cli.proxy_config import settings_block
from certauth.devpki import DevPKI, create_dev_pki
from certauth.proxyconf import ProxyOptions, find_binary, haproxy

SECRET = "cli-secret-0123456789-abcdefgh"


def _run(*arguments: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("certauth", "proxy-config", *arguments, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("cli-pki"))


@pytest.fixture
def combined(pki: DevPKI, tmp_path: Path) -> Path:
    path = tmp_path / "server-combined.pem"
    path.write_bytes(pki.path("server").read_bytes() + pki.path("server", "key").read_bytes())
    return path


def test_haproxy_config_then_its_settings_as_comments(pki: DevPKI, combined: Path, tmp_path: Path) -> None:
    secret_file = tmp_path / "proxy-secret"
    secret_file.write_text(SECRET + "\n")
    out, err = _run(
        "--proxy", "haproxy", "--mode", "optional", "--server-cert", str(combined), "--server-key", str(combined),
        "--client-ca", str(pki.ca_bundle), "--upstream", "unix:/run/certauth/gunicorn.sock",
        "--proxy-secret-file", str(secret_file), "--check-files",
    )  # fmt: skip
    options = ProxyOptions(
        mode="optional",
        server_cert=combined,
        server_key=combined,
        client_ca=pki.ca_bundle,
        upstream=("unix:/run/certauth/gunicorn.sock",),
        proxy_secret=SECRET,
    )
    config, block = out.split("\n# --- The CERTAUTH settings", 1)
    assert config + "\n" == haproxy.render(options) + "\n"
    assert err == ""
    block_lines = ("# --- The CERTAUTH settings" + block).splitlines()
    assert all(line.startswith("#") for line in block_lines)
    assert "#     'FORWARDING_FORMAT': 'base64_der'," in block_lines
    assert "#     'TRUSTED_PROXIES': ['unix:']," in block_lines
    assert "#     'PROXY_VERIFIES_CERTIFICATE': True," in block_lines
    assert f"#     'PROXY_SECRET_FILE': {str(secret_file)!r}," in block_lines
    assert f"'{SECRET}'" in config

    # Redirected to a file, the whole output is a configuration HAProxy loads.
    binary = find_binary(haproxy.BINARIES)
    if binary is None:
        pytest.skip("haproxy is not installed (scripts/install-system-deps.sh installs it)")
    (tmp_path / "haproxy.cfg").write_text(out)
    result = subprocess.run([binary, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_settings_to_stderr_or_nowhere(pki: DevPKI) -> None:
    common = ["--proxy", "nginx", "--server-cert", "/pki/server.pem", "--server-key", "/pki/server.key"]
    common += ["--client-ca", str(pki.ca_bundle)]
    only_config = nginxconf.render(
        mode="on",
        listen="127.0.0.1:8443",
        server_cert="/pki/server.pem",
        server_key="/pki/server.key",
        client_ca=pki.ca_bundle,
        upstream=["127.0.0.1:8000"],
    )
    out, err = _run(*common, "--settings", "stderr")
    assert out == only_config
    assert err.startswith("# --- The CERTAUTH settings that match this nginx configuration")
    assert "'FORWARDING_FORMAT': 'nginx_escaped'" in err
    assert _run(*common, "--settings", "none") == (only_config, "")
    out, _ = _run(*common)
    assert out.startswith(only_config) and "'FORWARDING_FORMAT': 'nginx_escaped'" in out[len(only_config) :]


def test_nginx_config_is_proxy_config_for_nginx_without_the_settings(pki: DevPKI) -> None:
    arguments = ["--mode", "optional_no_ca", "--server-cert", "/pki/server.pem", "--server-key", "/pki/server.key"]
    arguments += ["--client-ca", str(pki.ca_bundle), "--upstream", "127.0.0.1:9000", "--listen", "127.0.0.1:9443"]
    out = io.StringIO()
    call_command("certauth", "nginx-config", *arguments, stdout=out)
    assert out.getvalue() == _run("--proxy", "nginx", *arguments, "--settings", "none")[0]
    # The CA bundle is still rendered in optional_no_ca, as nginx-config always did.
    assert f"ssl_client_certificate {pki.ca_bundle};" in out.getvalue()


@pytest.mark.parametrize("proxy", proxyconf.PROXIES)
def test_every_proxy_renders_or_says_its_renderer_is_missing(proxy: str, pki: DevPKI, combined: Path) -> None:
    arguments = ["--proxy", proxy, "--server-cert", str(combined), "--server-key", str(combined)]
    arguments += ["--client-ca", str(pki.ca_bundle), "--mode", "optional"]
    if importlib.util.find_spec(f"certauth.proxyconf.{proxy}") is None:
        with pytest.raises(CommandError, match=f"no {proxy} renderer"):
            _run(*arguments)
        return
    module = proxyconf.renderer(proxy)
    if "optional" not in module.MODES:
        with pytest.raises(CommandError, match="cannot render --mode optional"):
            _run(*arguments)
        return
    out, _ = _run(*arguments)
    assert "# --- The CERTAUTH settings that match this" in out
    assert "#     'TRUSTED_PROXIES': ['127.0.0.1', '::1']," in out.splitlines()


def test_a_renderer_that_is_not_there_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy name the list knows but this installation has no module for (an older certauth, a partial copy).
    monkeypatch.setattr(proxyconf, "PROXIES", (*proxyconf.PROXIES, "lighttpd"))
    with pytest.raises(CommandError, match=r"no lighttpd renderer \(certauth/proxyconf/lighttpd.py is missing\)"):
        _run("--proxy", "lighttpd", "--server-cert", "/a.pem", "--server-key", "/a.pem", "--client-ca", "/ca.pem")


def test_a_mode_the_proxy_cannot_render_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a proxy without an optional_no_ca would answer.
    monkeypatch.setattr(haproxy, "MODES", ("on", "optional"))
    with pytest.raises(CommandError, match="haproxy cannot render --mode optional_no_ca: it renders on, optional"):
        _run("--proxy", "haproxy", "--mode", "optional_no_ca", "--server-cert", "/a.pem", "--server-key", "/a.pem")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--mode", "on"], "needs --client-ca"),
        (["--client-ca", "/ca.pem", "--standalone"], "needs --prefix"),
        (["--client-ca", "/nonexistent/ca.pem", "--check-files"], "no such file"),
        (["--client-ca", "/ca.pem", "--server-key", "/etc/server.key"], "concatenate"),
        (["--client-ca", "/ca.pem", "--listen", "127.0.0.1:8443 ssl"], "listen"),
    ],
)
def test_bad_arguments_are_command_errors(arguments: list[str], message: str) -> None:
    base = ["--proxy", "haproxy", "--server-cert", "/a.pem"]
    if "--server-key" not in arguments:
        base += ["--server-key", "/a.pem"]
    with pytest.raises(CommandError, match=message):
        _run(*base, *arguments)


def test_settings_block_is_comment_lines_only() -> None:
    block = settings_block("caddy", {"FORWARDING_FORMAT": "base64_der", "TRUSTED_PROXIES": ["unix:"]})
    assert all(line.startswith("#") for line in block.splitlines())
    assert block.endswith("# }\n")


def test_proxy_config_is_a_subcommand_beside_nginx_config() -> None:
    from certauth.cli import load_subcommands

    assert {"proxy-config", "nginx-config"} <= {cls.name for cls in load_subcommands()}
