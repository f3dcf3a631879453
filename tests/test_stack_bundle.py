"""`make run` (scripts/stack.py) gives the proxy the registry's CA bundle and tells certauth which file that is
(issue 12): the dev stack's nginx trusts exactly the enabled authorities, and `certauth doctor` can check it."""

from __future__ import annotations

from pathlib import Path

import pytest

from certauth.certificates import load_certificates, thumbprint_of
from certauth.devpki import create_dev_pki
from scripts import stack


def thumbprints(path: Path) -> set[str]:
    return {thumbprint_of(c) for c in load_certificates(path.read_bytes())}


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_dev_pki(tmp_path_factory.mktemp("pki") / "pki").out_dir


def test_stack_verifies_against_its_client_ca_and_names_it_to_certauth(tmp_path: Path, pki_dir: Path) -> None:
    bundle = tmp_path / "registry.pem"
    configured = stack.Stack(tmp_path / "a", pki_dir=pki_dir, port=0, mode="optional", client_ca=bundle)
    assert f"ssl_client_certificate {bundle};" in configured.render_proxy_conf()
    assert configured.env["CERTAUTH_PROXY_CA_BUNDLE"] == str(bundle)
    default = stack.Stack(tmp_path / "b", pki_dir=pki_dir, port=0, mode="on")
    assert default.client_ca == pki_dir / "ca-bundle.pem"  # what the end-to-end tests rely on
    assert f"ssl_client_certificate {pki_dir / 'ca-bundle.pem'};" in default.render_proxy_conf()
    assert default.env["CERTAUTH_PROXY_CA_BUNDLE"] == str(pki_dir / "ca-bundle.pem")
    unverified = stack.Stack(tmp_path / "c", pki_dir=pki_dir, port=0, mode="optional_no_ca", client_ca=bundle)
    assert "ssl_client_certificate" not in unverified.render_proxy_conf()
    assert "CERTAUTH_PROXY_CA_BUNDLE" not in unverified.env


def test_make_run_prepares_the_registry_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SECRET_KEY", "CERTAUTH_ADMIN_PASSWORD", "CERTAUTH_PROXY_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    var_dir = tmp_path / "var"
    prepared = stack.prepare(var_dir)
    assert prepared.client_ca == var_dir / stack.PROXY_BUNDLE_NAME
    # The dev root and intermediate, which prepare() trusts: the same certificates as the dev PKI's bundle.
    assert thumbprints(prepared.client_ca) == thumbprints(prepared.pki_dir / "ca-bundle.pem")


def test_make_run_registers_the_demo_client_without_a_false_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dev CAs are trusted before the demo client is registered: registering it first printed "No trusted
    authority is enabled … will still be refused" on every fresh `make run`, above a demo that worked."""
    for name in ("DATABASE_URL", "SECRET_KEY", "CERTAUTH_ADMIN_PASSWORD", "CERTAUTH_PROXY_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    stack.prepare(tmp_path / "var")
    printed = capsys.readouterr().out
    assert "registered " in printed and "trusted authority dev root CA" in printed, printed
    assert "warning" not in printed.lower(), printed
    # The demo client may read the metrics `make run` serves (metrics_env: METRICS_ALLOW=scope).
    assert stack.METRICS_SCOPE in printed, printed


def test_make_run_serves_metrics_to_the_scope_from_a_fresh_multiprocess_directory(tmp_path: Path) -> None:
    stale = tmp_path / "run" / "prometheus" / "counter_4242.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's worker")
    env = stack.metrics_env(tmp_path)
    directory = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    assert directory == stale.parent and list(directory.iterdir()) == []  # an earlier run's counts never add up
    assert directory.stat().st_mode & 0o777 == 0o700
    assert env["CERTAUTH_METRICS_ENABLED"] == "true" and env["CERTAUTH_METRICS_ALLOW"] == "scope"
