"""``certauth expiring``: the list, its formats, its exit status and the mail to ADMINS."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from certauth import services
from certauth.models import CertificateIdentity

from .conftest import admins

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``manage.py certauth expiring ...``."""
    out, err = StringIO(), StringIO()
    try:
        call_command("certauth", "expiring", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def entry(identity: str, days: float, *, active: bool = True, revoked: bool = False, seed: str = "") -> None:
    ident, _ = CertificateIdentity.objects.get_or_create(name=identity, defaults={"is_active": active})
    thumbprint = hashlib.sha256(f"{identity}{days}{seed}".encode()).hexdigest()
    registered = services.register_thumbprint(
        ident, thumbprint, not_after=timezone.now() + dt.timedelta(days=days), label=f"{identity}-{days}"
    )
    if revoked:
        registered.revoke()


@pytest.fixture
def population() -> None:
    entry("billing", 10)
    entry("billing", 400, seed="next")
    entry("shipping", 25)
    entry("archive", -3)  # already expired: not "expiring"
    entry("gone", 5, revoked=True)  # revoked: not live
    entry("off", 5, active=False)  # disabled identity: cannot authenticate anyway


def test_nothing_expiring_exits_0() -> None:
    entry("billing", 400)
    code, out, _ = run()
    assert code == 0
    assert out.strip() == "No certificates expire within 30 days."


def test_text_lists_soonest_first_and_exits_1(population: None) -> None:
    code, out, _ = run()
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0] == "2 certificate(s) expire within 30 days:"
    assert "billing" in lines[1] and "NO SUCCESSOR" in lines[1] and "never used" in lines[1]
    assert "shipping" in lines[2]
    assert not any(name in out for name in ("archive", "gone", " off "))


def test_days_option(population: None) -> None:
    code, out, _ = run("--days", "15")
    assert code == 1 and "billing" in out and "shipping" not in out
    assert run("--days", "1")[0] == 0


def test_default_window_comes_from_settings(population: None, settings) -> None:
    settings.CERTAUTH = {**settings.CERTAUTH, "EXPIRY_WARNING_DAYS": 12}
    code, out, _ = run()
    assert code == 1 and "within 12 days" in out and "shipping" not in out


def test_json_output(population: None) -> None:
    code, out, _ = run("--format", "json", "--days", "30")
    assert code == 1
    data = json.loads(out)
    assert data["days"] == 30
    assert [item["identity"] for item in data["certificates"]] == ["billing", "shipping"]
    first = data["certificates"][0]
    assert len(first["thumbprint"]) == 64
    assert first["days_left"] in (9, 10)
    assert first["has_successor"] is False and first["last_used_at"] is None
    assert dt.datetime.fromisoformat(first["not_after"]) > timezone.now()


def test_json_output_when_empty_exits_0() -> None:
    code, out, _ = run("--format", "json")
    assert code == 0 and json.loads(out)["certificates"] == []


def test_successor_is_reported() -> None:
    entry("billing", 10)
    old = CertificateIdentity.objects.get(name="billing").certificates.get()
    services.add_successor(old, hashlib.sha256(b"new").hexdigest(), not_after=timezone.now() + dt.timedelta(days=300))
    data = json.loads(run("--format", "json")[1])
    assert data["certificates"][0]["has_successor"] is True


def test_mail_goes_to_admins(population: None, settings) -> None:
    settings.ADMINS = admins("ops@example.test")
    code, _, _ = run("--mail")
    assert code == 1
    [message] = mail.outbox
    assert message.to == ["ops@example.test"]
    assert "2 client certificate(s) expire within 30 days" in message.subject
    assert "billing" in message.body and "shipping" in message.body


def test_no_mail_when_nothing_expires(settings) -> None:
    settings.ADMINS = admins("ops@example.test")
    assert run("--mail")[0] == 0
    assert mail.outbox == []


def test_mail_without_admins_says_so(population: None, settings) -> None:
    settings.ADMINS = []
    code, _, err = run("--mail")
    assert code == 1 and "ADMINS is empty" in err and mail.outbox == []


def test_negative_days_is_an_error() -> None:
    with pytest.raises(CommandError):
        call_command("certauth", "expiring", "--days", "-1", stdout=StringIO())
