"""certauth.E013: the unrelated ``certauth`` distribution from PyPI (a CA for MITM proxies, same import
package) installed next to this app is reported with the fix; this app's own metadata, under either name it
has been installed by, is not.  Real ``*.dist-info`` metadata on ``sys.path``, read by importlib.metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.checks.registry import registry

from certauth.checks import check_distribution_clash


def install_metadata(site: Path, name: str, version: str, summary: str, requires: list[str]) -> None:
    """What pip leaves in site-packages for an installed distribution (the files it lists are not needed)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: {summary}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def e013(messages: list) -> list:
    return [message for message in messages if message.id == "certauth.E013"]


def test_the_check_is_registered() -> None:
    assert check_distribution_clash in registry.get_checks()


def test_this_environment_has_no_clash() -> None:
    assert e013(check_distribution_clash()) == []


def test_the_unrelated_certauth_distribution_is_an_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_metadata(
        tmp_path, "certauth", "1.3.0", "Simple Certificate Authority for MITM proxies", ["pyopenssl", "tldextract"]
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    [message] = e013(check_distribution_clash())
    assert message.is_serious()
    assert "'certauth' 1.3.0 (Simple Certificate Authority for MITM proxies)" in message.msg
    assert "pip uninstall certauth && pip install --force-reinstall django-certauth" in message.hint


def test_this_app_installed_under_its_old_name_is_not_a_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `pip install -e .` from a checkout before 0.2.0 installed this app as `certauth`.
    install_metadata(
        tmp_path,
        "certauth",
        "0.1.0",
        "X.509 client-certificate authentication for Django and Django REST framework",
        ["Django<6.0,>=5.1", "djangorestframework>=3.15", "cryptography>=44"],
    )
    install_metadata(tmp_path, "django-certauth", "0.2.0", "this app", ["Django>=5.2"])
    monkeypatch.syspath_prepend(str(tmp_path))
    assert e013(check_distribution_clash()) == []
