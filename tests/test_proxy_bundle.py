"""The proxy's CA bundle follows the registry (issue 12): ``certauth authority bundle`` writes it from the
enabled authorities; ``certauth doctor``, the system check certauth.W019 and the admin say when the file the
proxy verifies against (``PROXY_CA_BUNDLE``) and the enabled authorities disagree, with the fix."""

from __future__ import annotations

import os
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.urls import reverse

from certauth import devpki
from certauth.authorities import add_authority
from certauth.certificates import load_certificates, thumbprint_of
from certauth.models import TrustedAuthority
from certauth.proxybundle import Authority, compare, describe_report, render_bundle

pytestmark = pytest.mark.django_db


def certauth(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("certauth", *args, stdout=out, stderr=StringIO())
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


def thumbprints(path: Path) -> set[str]:
    return {thumbprint_of(c) for c in load_certificates(path.read_bytes())}


# --- pure comparison -------------------------------------------------------------------------------------


def test_compare_names_missing_and_extra(tmp_path: Path, pki) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(render_bundle([pki.root.certificate, pki.other_ca.certificate]))
    enabled = [Authority("root", pki.root.certificate), Authority("intermediate", pki.intermediate.certificate)]
    report = compare(bundle, enabled)
    assert not report.ok
    assert [a.name for a in report.missing] == ["intermediate"]
    assert [thumbprint_of(c) for c in report.extra] == [pki.other_ca.thumbprint]
    lines = describe_report(report)
    assert any("'intermediate'" in line and "untrusted_issuer" in line for line in lines)
    assert all(f"certauth authority bundle --output {bundle}" in line for line in lines)
    assert compare(bundle, [Authority("root", pki.root.certificate), Authority("o", pki.other_ca.certificate)]).ok


def test_a_reissued_ca_with_the_same_subject_and_key_is_the_same_anchor(tmp_path: Path, pki) -> None:
    """OpenSSL finds the issuer in its CA file by subject and checks with its key: a CA certificate re-issued
    for the same subject and key (new validity, new serial) verifies the same clients."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    old = pki.root.certificate
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    renewed = builder.sign(pki.root.private_key, hashes.SHA256())
    assert thumbprint_of(renewed) != pki.root.thumbprint
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(render_bundle([renewed]))
    assert compare(bundle, [Authority("root", old)]).ok


@pytest.mark.parametrize("content", [None, b"", b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_an_unreadable_bundle_is_reported(tmp_path: Path, pki, content: bytes | None) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    report = compare(bundle, [Authority("root", pki.root.certificate)])
    assert report.unreadable and not report.ok
    assert describe_report(report)[0].startswith(f"the proxy's CA bundle {bundle}")


# --- certauth authority bundle ---------------------------------------------------------------------------


@pytest.fixture
def authorities(pki) -> dict[str, TrustedAuthority]:
    return {
        "root": add_authority("root", pki.root.cert_pem()),
        "intermediate": add_authority("intermediate", pki.intermediate.cert_pem()),
        "other": add_authority("other", pki.other_ca.cert_pem(), enabled=False),
    }


def test_bundle_prints_the_enabled_authorities(authorities, pki) -> None:
    code, out = certauth("authority", "bundle")
    assert code == 0
    printed = {thumbprint_of(c) for c in load_certificates(out.encode())}
    assert printed == {pki.root.thumbprint, pki.intermediate.thumbprint}


def test_bundle_output_writes_the_file_atomically(authorities, pki, tmp_path: Path) -> None:
    target = tmp_path / "proxy-ca.pem"
    target.write_text("old content\n")
    code, out = certauth("authority", "bundle", "--output", str(target))
    assert code == 0 and "wrote 2 enabled authorities" in out and "reload the proxy" in out
    assert thumbprints(target) == {pki.root.thumbprint, pki.intermediate.thumbprint}
    assert stat.S_IMODE(target.stat().st_mode) & 0o600 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    # Disable one, enable the other: the file follows.
    TrustedAuthority.objects.filter(name="intermediate").update(is_enabled=False)
    TrustedAuthority.objects.filter(name="other").update(is_enabled=True)
    certauth("authority", "bundle", "--output", str(target))
    assert thumbprints(target) == {pki.root.thumbprint, pki.other_ca.thumbprint}


def test_bundle_without_an_enabled_authority_is_an_error(pki, tmp_path: Path) -> None:
    add_authority("off", pki.root.cert_pem(), enabled=False)
    with pytest.raises(CommandError, match="No enabled trusted authority"):
        certauth("authority", "bundle", "--output", str(tmp_path / "x.pem"))
    assert not (tmp_path / "x.pem").exists()


# --- certauth doctor ------------------------------------------------------------------------------------


def test_doctor_without_a_bundle_setting_says_it_did_not_check(authorities) -> None:
    code, out = certauth("doctor")
    assert code == 0 and "not checked" in out and "PROXY_CA_BUNDLE" in out


def test_doctor_follows_the_registry(authorities, pki, tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    certauth("authority", "bundle", "--output", str(bundle))
    with override_settings(CERTAUTH={"PROXY_CA_BUNDLE": str(bundle)}):
        ok = f"ok: the proxy's CA bundle {bundle} holds exactly the 2 enabled authorities\n"
        assert certauth("doctor") == (0, ok)
        # Trusted in the admin (or `authority add`), unknown to the proxy:
        TrustedAuthority.objects.filter(name="other").update(is_enabled=True)
        code, out = certauth("doctor")
        assert code == 1
        assert "'other'" in out and pki.other_ca.thumbprint in out and "missing from the proxy's CA bundle" in out
        assert f"certauth authority bundle --output {bundle}" in out
        certauth("authority", "bundle", "--output", str(bundle))
        assert certauth("doctor")[0] == 0
        # Disabled in certauth, still in the proxy's file: the proxy trusts more than certauth.
        TrustedAuthority.objects.filter(name="root").update(is_enabled=False)
        code, out = certauth("doctor")
        assert code == 1 and pki.root.thumbprint in out and "no enabled authority" in out
        bundle.unlink()
        code, out = certauth("doctor")
        assert code == 1 and "cannot be read" in out


def test_doctor_takes_a_bundle_argument(authorities, pki, tmp_path: Path) -> None:
    bundle = tmp_path / "other.pem"
    bundle.write_bytes(pki.root.cert_pem())
    code, out = certauth("doctor", "--ca-bundle", str(bundle))
    assert code == 1 and "'intermediate'" in out


# --- system check certauth.W019 --------------------------------------------------------------------------


def _w019(**settings: str) -> list[str]:
    with override_settings(CERTAUTH=settings):
        return [m.msg for m in run_checks(databases=["default"]) if m.id == "certauth.W019"]


def test_w019_when_the_bundle_misses_an_enabled_authority(authorities, pki, tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_bytes(pki.root.cert_pem())
    [message] = _w019(PROXY_CA_BUNDLE=str(bundle))
    assert "'intermediate'" in message and "certauth authority bundle --output" in message
    bundle.write_bytes(render_bundle([pki.root.certificate, pki.intermediate.certificate, pki.other_ca.certificate]))
    assert _w019(PROXY_CA_BUNDLE=str(bundle)) == []  # more than certauth: the doctor's to say, not a start-up warning
    assert _w019() == []  # not configured: not checked
    assert _w019(PROXY_CA_BUNDLE=str(tmp_path / "absent.pem"))  # unreadable
    with override_settings(CERTAUTH={"PROXY_CA_BUNDLE": str(tmp_path / "absent.pem")}):
        assert not [m for m in run_checks() if m.id == "certauth.W019"]  # no database: no query, no check


# --- the admin -------------------------------------------------------------------------------------------


def test_admin_warns_when_an_enabled_authority_is_missing_from_the_bundle(admin_client, authorities, pki, tmp_path):
    bundle = tmp_path / "proxy-ca.pem"
    certauth("authority", "bundle", "--output", str(bundle))
    changelist = reverse("admin:certauth_trustedauthority_changelist")
    other = authorities["other"]
    with override_settings(CERTAUTH={"PROXY_CA_BUNDLE": str(bundle)}):
        response = admin_client.post(changelist, {"action": "enable", "_selected_action": [other.pk]}, follow=True)
        texts = [str(m) for m in response.context["messages"]]
        missing = [t for t in texts if "'other'" in t and "missing from the proxy's CA bundle" in t]
        assert missing and "reload the proxy" in missing[0]
        certauth("authority", "bundle", "--output", str(bundle))
        response = admin_client.post(changelist, {"action": "disable", "_selected_action": [other.pk]}, follow=True)
        texts = [str(m) for m in response.context["messages"]]
        assert any(pki.other_ca.thumbprint in t and "no enabled authority" in t for t in texts)
    # Without the setting: no warning.
    response = admin_client.post(changelist, {"action": "enable", "_selected_action": [other.pk]}, follow=True)
    assert not [m for m in response.context["messages"] if "bundle" in str(m)]


def test_the_dev_pki_bundle_is_what_the_registry_writes(tmp_path: Path) -> None:
    """`make run` gives nginx the registry's bundle: with the dev CAs trusted it is the dev PKI's ca-bundle.pem."""
    pki = devpki.create_dev_pki(tmp_path / "pki")
    for name in ("ca", "intermediate-ca"):
        add_authority(name, pki.path(name).read_bytes())
    certauth("authority", "bundle", "--output", str(tmp_path / "registry.pem"))
    assert thumbprints(tmp_path / "registry.pem") == thumbprints(pki.ca_bundle)
    assert os.path.getsize(tmp_path / "registry.pem") > 0


def test_admin_warns_when_an_added_authority_is_missing_from_the_bundle(admin_client, pki, tmp_path: Path) -> None:
    add_authority("root", pki.root.cert_pem())
    bundle = tmp_path / "proxy-ca.pem"
    certauth("authority", "bundle", "--output", str(bundle))
    data = {
        "name": "partner",
        "is_enabled": "on",
        "notes": "",
        "crl_url": "",
        "ocsp_url": "",
        "certificate_text": pki.other_ca.cert_pem().decode(),
    }
    with override_settings(CERTAUTH={"PROXY_CA_BUNDLE": str(bundle)}):
        response = admin_client.post(reverse("admin:certauth_trustedauthority_add"), data, follow=True)
    assert TrustedAuthority.objects.filter(name="partner", is_enabled=True).exists(), response.content[:2000]
    texts = [str(m) for m in response.context["messages"]]
    assert any("'partner'" in t and f"certauth authority bundle --output {bundle}" in t for t in texts), texts
