"""The operator CLI, ``python manage.py certauth <subcommand>``: what it prints, what it stores, and that
bad input is a clear error with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.core.management.base import CommandError

from certauth.certificates import format_thumbprint
from certauth.cli import load_subcommands
from certauth.models import CertificateIdentity, RegisteredCertificate

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def certauth(*args: str) -> str:
    out = StringIO()
    call_command("certauth", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def files(tmp_path: Path, pki) -> dict[str, Path]:
    paths = {
        "pem": tmp_path / "client.pem",
        "der": tmp_path / "client.der",
        "p12": tmp_path / "client.p12",
        "password": tmp_path / "password.txt",
        "key": tmp_path / "client.key",
    }
    paths["pem"].write_bytes(pki.client.cert_pem())
    paths["der"].write_bytes(pki.client.certificate.public_bytes(serialization.Encoding.DER))
    paths["p12"].write_bytes(pki.client.pkcs12("s3cret"))
    paths["password"].write_text("s3cret\n")
    paths["key"].write_bytes(pki.client.key_pem())
    return paths


def test_register_pem_creates_identity_with_scopes_and_prints_the_thumbprint(files, pki) -> None:
    out = certauth("register", "--identity", "billing", "--cert", str(files["pem"]), "--scope", "orders:read",
                   "--scope", "orders:write", "--label", "issued 2026-11")  # fmt: skip
    assert pki.client.thumbprint in out and format_thumbprint(pki.client.thumbprint) in out
    entry = RegisteredCertificate.objects.get()
    assert entry.identity.name == "billing" and entry.identity.scope_list == ["orders:read", "orders:write"]
    assert entry.label == "issued 2026-11" and entry.subject_cn == "billing-service"


@pytest.mark.parametrize("kind", ["der", "p12"])
def test_register_der_and_pkcs12_keep_only_the_public_certificate(files, pki, kind) -> None:
    args = ["register", "--identity", "billing", "--cert", str(files[kind])]
    if kind == "p12":
        args += ["--password-file", str(files["password"])]
    certauth(*args)
    entry = RegisteredCertificate.objects.get()
    assert entry.thumbprint_sha256 == pki.client.thumbprint
    assert "PRIVATE KEY" not in entry.certificate_pem and "BEGIN CERTIFICATE" in entry.certificate_pem


def test_register_again_is_idempotent_but_never_moves_a_certificate(files) -> None:
    certauth("register", "--identity", "billing", "--cert", str(files["pem"]))
    assert "already registered" in certauth("register", "--identity", "billing", "--cert", str(files["pem"]))
    with pytest.raises(CommandError, match="is already registered for identity 'billing'"):
        certauth("register", "--identity", "someone-else", "--cert", str(files["pem"]))
    assert RegisteredCertificate.objects.count() == 1


def test_register_a_typed_thumbprint_in_any_spelling(pki) -> None:
    spelled = format_thumbprint(pki.client.thumbprint)  # AB:CD:...
    certauth("register", "--identity", "billing", "--thumbprint", spelled, "--not-after", "2030-01-31")
    entry = RegisteredCertificate.objects.get()
    assert entry.thumbprint_sha256 == pki.client.thumbprint
    assert entry.not_after.isoformat().startswith("2030-01-31T00:00:00")
    assert entry.source == RegisteredCertificate.Source.THUMBPRINT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thumbprint", "abc", "--not-after", "2030-01-01"], "64 hexadecimal"),
        (["--thumbprint", "ab" * 32], "--not-after"),
        (["--thumbprint", "ab" * 32, "--not-after", "next tuesday"], "Not an ISO date"),
        (["--cert", "/nonexistent/client.pem"], "Cannot read"),
        (["--cert", "KEY"], "private key"),
        (["--cert", "P12"], "wrong password"),
    ],
)
def test_register_bad_input_is_a_clear_error(files, args, message) -> None:
    args = [str(files["key"]) if a == "KEY" else str(files["p12"]) if a == "P12" else a for a in args]
    with pytest.raises(CommandError, match=message):
        certauth("register", "--identity", "billing", *args)
    assert not RegisteredCertificate.objects.exists()


def test_revoke_by_full_thumbprint_or_unique_prefix(files, pki, register) -> None:
    first = register(pki.client)
    second = register(pki.client2)
    assert "reason key_compromise" in certauth("revoke", "--thumbprint", format_thumbprint(first.thumbprint_sha256),
                                               "--reason", "key_compromise")  # fmt: skip
    certauth("revoke", "--thumbprint", second.thumbprint_sha256[:10].upper())
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revocation_reason == "key_compromise" and second.revoked_at is not None
    assert "already revoked" in certauth("revoke", "--thumbprint", first.thumbprint_sha256)


def test_revoke_errors(pki, register) -> None:
    entry = register(pki.client)
    with pytest.raises(CommandError, match="No registered certificate"):
        certauth("revoke", "--thumbprint", "00" * 32)
    with pytest.raises(CommandError, match="neither a SHA-256 thumbprint"):
        certauth("revoke", "--thumbprint", entry.thumbprint_sha256[:4])
    with pytest.raises(CommandError, match="starts with"):
        certauth("revoke", "--thumbprint", "0123456789")
    entry.refresh_from_db()
    assert entry.revoked_at is None


def test_list_text_and_json(pki, register) -> None:
    entry = register(pki.client, identity="billing", scopes="orders:read")
    entry.revoke("superseded")
    register(pki.client2, identity="billing")
    CertificateIdentity.objects.create(name="idle", is_active=False)
    text = certauth("list")
    assert "billing  [active]  scopes: orders:read" in text and "idle  [DISABLED]" in text
    assert "revoked" in text and "never used" in text
    data = json.loads(certauth("list", "--format", "json"))
    billing = next(item for item in data if item["identity"] == "billing")
    assert {c["status"] for c in billing["certificates"]} == {"revoked", "valid"}


def test_devpki_writes_and_reuses(tmp_path: Path) -> None:
    out = certauth("devpki", "--out", str(tmp_path / "pki"))
    assert "development only" in out and (tmp_path / "pki" / "client.p12").is_file()
    assert certauth("devpki", "--out", str(tmp_path / "pki")) == out  # reused, same thumbprints


def test_every_subcommand_has_help() -> None:
    names = [cls.name for cls in load_subcommands()]
    assert {"register", "revoke", "list", "devpki", "expiring", "nginx-config", "prune-audit"} <= set(names)
    for name in names:
        result = subprocess.run(
            [sys.executable, "manage.py", "certauth", name, "--help"], cwd=REPO, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0 and "usage:" in result.stdout, (name, result.stderr)


def test_bad_input_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    env: dict[str, Any] = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}", "CERTAUTH_VAR_DIR": str(tmp_path)}
    import os

    env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    result = subprocess.run(
        [sys.executable, "manage.py", "certauth", "revoke", "--thumbprint", "nope"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "neither a SHA-256 thumbprint" in result.stderr and "Traceback" not in result.stderr
