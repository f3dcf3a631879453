"""One registration path (``certauth.services.register``) behind the admin form, the CLI, "register from the
audit" and ``add_successor``: one set of checks, the same words everywhere, one transaction (a refusal creates
nothing, not even the identity).  Real certificates, the real admin through Django's test client, the real CLI
through ``call_command``."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models.signals import post_save
from django.urls import reverse

from certauth import devpki, services
from certauth.certificates import format_thumbprint
from certauth.models import AuthenticationFailure, CertificateIdentity, RegisteredCertificate

from .conftest import FixturePKI
from .test_private_ca import v1_client

pytestmark = pytest.mark.django_db

ADD = "admin:certauth_registeredcertificate_add"
THUMBPRINT = "ab" * 32


def certauth(*args: str) -> str:
    out = StringIO()
    call_command("certauth", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def cli_refusal(*args: str) -> str:
    with pytest.raises(CommandError) as refused:
        certauth("register", *args)
    return str(refused.value)


def add_data(identity: CertificateIdentity, **fields: Any) -> dict[str, Any]:
    data = {"identity": identity.pk, "label": "", "predecessor": "", "pem_text": "", "pkcs12_password": "",
            "thumbprint": "", "thumbprint_not_before_0": "", "thumbprint_not_before_1": "",
            "thumbprint_not_after_0": "", "thumbprint_not_after_1": ""}  # fmt: skip
    data.update(fields)
    return data


def admin_refusal(admin_client: Any, identity: CertificateIdentity, field: str, **fields: Any) -> str:
    """The admin add form's one error on ``field`` for this input (it must refuse: no redirect)."""
    response = admin_client.post(reverse(ADD), add_data(identity, **fields))
    assert response.status_code == 200, "the admin form accepted it"
    [error] = response.context["adminform"].form.errors[field]
    return str(error)


def pem_file(tmp_path: Path, certificate: Any, name: str = "client.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(certificate.cert_pem() if isinstance(certificate, devpki.Issued) else certificate)
    return path


def nothing_created() -> bool:
    return not CertificateIdentity.objects.filter(name="ghost").exists()


def _v1() -> bytes:
    from cryptography.hazmat.primitives import serialization

    _, made = v1_client()
    return made.certificate.public_bytes(serialization.Encoding.PEM)


# --- the CLI refuses what the admin refuses, with the same words, and creates nothing ----------------------------
@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("v1", "could never authenticate (unsupported_certificate)"),
        ("expired", "could never authenticate (certificate_expired)"),
        ("server_usage", "could never authenticate (wrong_usage)"),
        ("self_signed_ca", "could never authenticate (wrong_usage)"),  # `openssl req -x509`: CA:TRUE
        ("revoked", "Revocation is one-way: to reinstate it, delete the revoked entry first"),
        ("duplicate", "is already registered for identity 'billing'"),
    ],
)
def test_the_cli_refuses_what_the_admin_refuses_in_the_same_words(
    case: str, words: str, tmp_path: Path, admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    if case == "v1":
        pem = _v1()
    elif case == "self_signed_ca":
        pem = devpki.make_ca("selfie CA").cert_pem()
    elif case in ("revoked", "duplicate"):
        entry = register(pki.client, identity="billing")
        if case == "revoked":
            entry.revoke("superseded")
        pem = pki.client.cert_pem()
    else:
        pem = getattr(pki, case).cert_pem()
    before = RegisteredCertificate.objects.count()
    cli = cli_refusal("--identity", "ghost", "--cert", str(pem_file(tmp_path, pem)), "--scope", "orders:read")
    admin = admin_refusal(
        admin_client, CertificateIdentity.objects.create(name="admin-side"), "pem_text", pem_text=pem.decode()
    )
    assert cli == admin and words in cli, (cli, admin)
    assert nothing_created() and RegisteredCertificate.objects.count() == before


def test_a_revoked_certificate_is_refused_by_its_owner_too_and_says_how_to_reinstate(
    tmp_path: Path, pki: FixturePKI, register: Any
) -> None:
    entry = register(pki.client, identity="billing")
    entry.revoke("key_compromise")
    path = pem_file(tmp_path, pki.client)
    # Re-running the same command (set-up scripts) is no longer "already registered" with exit 0: it is revoked.
    refusal = cli_refusal("--identity", "billing", "--cert", str(path))
    assert f"was revoked on {entry.revoked_at:%Y-%m-%d}" in refusal and "delete the revoked entry" in refusal
    refusal = cli_refusal("--identity", "billing", "--thumbprint", pki.client.thumbprint, "--not-after", "2099-01-01")
    assert "revoked" in refusal and "reinstate" in refusal
    assert RegisteredCertificate.objects.count() == 1


def test_running_the_same_registration_again_is_a_no_op(tmp_path: Path, pki: FixturePKI, trusted_root: Any) -> None:
    path = str(pem_file(tmp_path, pki.client))
    assert "registered" in certauth("register", "--identity", "billing", "--cert", path)
    again = certauth("register", "--identity", "billing", "--cert", path, "--scope", "orders:read")
    assert "already registered" in again and "nothing changed" in again
    assert RegisteredCertificate.objects.count() == 1
    assert CertificateIdentity.objects.get(name="billing").scope_list == ["orders:read"]


# --- typed thumbprints: dates, order of the messages, nothing half-created --------------------------------------
def test_an_unreadable_not_after_leaves_no_identity_behind() -> None:
    refusal = cli_refusal("--identity", "ghost", "--thumbprint", THUMBPRINT, "--not-after", "tomorrow")
    assert refusal.startswith("--not-after: Not an ISO date/time: 'tomorrow'")
    assert nothing_created()


def test_a_not_after_in_the_past_is_refused_by_the_cli_and_the_admin_alike(admin_client: Any) -> None:
    cli = cli_refusal("--identity", "ghost", "--thumbprint", THUMBPRINT, "--not-after", "2020-01-31")
    admin = admin_refusal(
        admin_client,
        CertificateIdentity.objects.create(name="admin-side"),
        "thumbprint_not_after",
        thumbprint=THUMBPRINT,
        thumbprint_not_after_0="2020-01-31",
        thumbprint_not_after_1="00:00:00",
    )
    assert cli == f"--not-after: {admin}"
    assert "could never authenticate (certificate_expired)" in admin and "2020-01-31T00:00:00+00:00" in admin
    assert nothing_created() and not RegisteredCertificate.objects.exists()


def test_a_bad_thumbprint_is_reported_before_a_missing_or_unreadable_not_after() -> None:
    missing = cli_refusal("--identity", "ghost", "--thumbprint", "abc").splitlines()
    assert missing[0].startswith("--thumbprint:") and "64 hexadecimal" in missing[0]
    assert missing[1] == "--not-after: A typed thumbprint needs the certificate's expiry date."
    unreadable = cli_refusal("--identity", "ghost", "--thumbprint", "abc", "--not-after", "soon").splitlines()
    assert unreadable[0].startswith("--thumbprint:") and unreadable[1].startswith("--not-after: Not an ISO")
    assert nothing_created()


def test_the_start_must_come_before_the_expiry() -> None:
    refusal = cli_refusal("--identity", "ghost", "--thumbprint", THUMBPRINT, "--not-after", "2099-01-01",
                          "--not-before", "2099-06-01")  # fmt: skip
    assert refusal == "--not-after: The expiry date must be after the start date."
    assert nothing_created()


def test_bad_scopes_are_refused_before_anything_is_written(tmp_path: Path, pki: FixturePKI) -> None:
    path = str(pem_file(tmp_path, pki.client))
    refusal = cli_refusal("--identity", "ghost", "--cert", path, "--scope", "a b<c")
    assert refusal.startswith("--scope: Invalid scope b<c")
    assert nothing_created()
    certauth("register", "--identity", "ghost", "--cert", path, "--scope", "a")
    assert cli_refusal("--identity", "ghost", "--cert", path, "--scope", "b<c").startswith("--scope: Invalid scope")
    assert CertificateIdentity.objects.get(name="ghost").scope_list == ["a"]


# --- the service itself: one ValidationError, one transaction ---------------------------------------------------
def test_the_service_raises_one_validation_error_with_every_refusal(pki: FixturePKI) -> None:
    with pytest.raises(ValidationError) as refused:
        services.register("ghost", thumbprint="not hex", not_after=None, scopes=["no spaces?"])
    assert list(refused.value.message_dict) == ["scopes", "thumbprint", "not_after"]
    assert nothing_created()


def test_a_failed_write_rolls_the_new_identity_back(pki: FixturePKI, trusted_root: Any) -> None:
    """Two registrations of the same certificate at once: the checks pass for both, the database's unique
    thumbprint stops the second.  Here the other one lands between this one's checks and its insert (when
    the identity "ghost" has just been created).  The identity must not survive the failed insert, and the
    operator gets the duplicate's words, not a 500."""
    other = CertificateIdentity.objects.create(name="other")

    def concurrent_registration(sender: Any, instance: CertificateIdentity, created: bool, **kwargs: Any) -> None:
        if created and instance.name == "ghost":
            RegisteredCertificate.objects.create(
                identity=other,
                thumbprint_sha256=pki.client.thumbprint,
                not_after=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
            )

    post_save.connect(concurrent_registration, sender=CertificateIdentity, dispatch_uid="race")
    try:
        with pytest.raises(ValidationError) as refused:
            services.register("ghost", pki.client.certificate, scopes=["orders:read"])
    finally:
        post_save.disconnect(sender=CertificateIdentity, dispatch_uid="race")
    assert refused.value.message_dict["certificate"] == [
        f"This certificate ({format_thumbprint(pki.client.thumbprint)}) is already registered for identity 'other'."
    ]
    assert nothing_created()  # rolled back with everything this registration's transaction wrote
    assert not RegisteredCertificate.objects.exists()


def test_the_form_checks_again_when_it_saves(pki: FixturePKI, trusted_root: Any) -> None:
    """The admin form's save is the service, with its checks, in the transaction that writes: a registration
    that got in after the form was checked is refused with the same words, nothing saved twice."""
    from certauth.forms import RegistrationForm

    identity = CertificateIdentity.objects.create(name="billing")
    form = RegistrationForm(data=add_data(identity, pem_text=pki.client.cert_pem().decode()))
    assert form.is_valid(), form.errors
    services.register("other", pki.client.certificate)  # another operator, meanwhile
    with pytest.raises(ValidationError) as refused:
        form.register()
    assert refused.value.messages == [
        f"This certificate ({format_thumbprint(pki.client.thumbprint)}) is already registered for identity 'other'."
    ]
    assert list(RegisteredCertificate.objects.values_list("identity__name", flat=True)) == ["other"]


def test_add_successor_goes_through_the_same_checks(pki: FixturePKI, register: Any) -> None:
    old = register(pki.client, identity="billing")
    with pytest.raises(ValidationError, match=r"could never authenticate \(certificate_expired\)"):
        services.add_successor(old, pki.expired.certificate)
    with pytest.raises(ValidationError, match="expiry date"):
        services.add_successor(old, THUMBPRINT, not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    new = services.add_successor(old, pki.client2.certificate)
    assert new.predecessor == old and RegisteredCertificate.objects.count() == 2


def test_a_successor_stays_with_its_identity(pki: FixturePKI, register: Any) -> None:
    old = register(pki.client, identity="billing")
    with pytest.raises(ValidationError) as refused:
        services.register("ghost", pki.client2.certificate, predecessor=old)
    assert refused.value.message_dict == {
        "predecessor": ["A successor belongs to the same identity as the entry it replaces."]
    }
    assert nothing_created()


# --- warnings: registered, but still refused, and why -----------------------------------------------------------
def test_an_untrusted_issuer_from_the_audit_is_registered_with_a_warning_that_it_is_still_refused(
    tmp_path: Path, admin_client: Any, pki: FixturePKI, trusted_root: Any
) -> None:
    now = dt.datetime.now(dt.UTC)
    failure = AuthenticationFailure.objects.create(
        key="k", window_start=now, first_seen=now, last_seen=now, reason="untrusted_issuer",
        thumbprint_sha256=pki.from_other_ca.thumbprint, certificate_pem=pki.from_other_ca.cert_pem().decode(),
    )  # fmt: skip
    identity = CertificateIdentity.objects.create(name="foreign")
    page = admin_client.get(f"{reverse(ADD)}?from_failure={failure.pk}&identity={identity.pk}")
    prefilled = page.context["adminform"].form.initial["pem_text"]
    response = admin_client.post(reverse(ADD), add_data(identity, pem_text=prefilled), follow=True)
    [warning] = [str(m) for m in response.context["messages"] if "untrusted_issuer" in str(m)]
    assert warning.startswith("Registering it is allowed, but requests with this certificate will still be refused")
    assert "certauth authority add" in warning  # and how to make it authenticate
    RegisteredCertificate.objects.all().delete()
    out = certauth("register", "--identity", "foreign", "--cert", str(pem_file(tmp_path, pki.from_other_ca)))
    assert f"  warning: {warning}" in out.splitlines()


def test_a_self_signed_client_gets_the_same_warning_from_the_cli_and_the_admin(
    tmp_path: Path, admin_client: Any, pki: FixturePKI, trusted_root: Any
) -> None:
    """A self-signed CA:FALSE client certificate is refused by the policy of the day (chained only), which a
    setting changes: both register it and both say it is still refused, why, and what would change that."""
    out = certauth("register", "--identity", "selfie", "--cert", str(pem_file(tmp_path, pki.self_signed)))
    [cli_warning] = [line[len("  warning: ") :] for line in out.splitlines() if line.startswith("  warning: ")]
    RegisteredCertificate.objects.all().delete()
    identity = CertificateIdentity.objects.get(name="selfie")
    response = admin_client.post(
        reverse(ADD), add_data(identity, pem_text=pki.self_signed.cert_pem().decode()), follow=True
    )
    assert cli_warning in [str(message) for message in response.context["messages"]]
    assert "(self_signed_not_allowed)" in cli_warning and "ALLOWED_CERTIFICATE_TYPES" in cli_warning
    assert RegisteredCertificate.objects.get().thumbprint_sha256 == pki.self_signed.thumbprint


def test_a_disabled_identity_is_registered_with_a_warning(pki: FixturePKI, trusted_root: Any) -> None:
    CertificateIdentity.objects.create(name="paused", is_active=False)
    registration = services.register("paused", pki.client.certificate)
    assert registration.created and not registration.identity_created
    assert registration.warnings == [
        "The identity 'paused' is disabled: requests with this certificate will still be refused "
        "(identity_disabled) until the identity is enabled again."
    ]


def test_the_audit_action_on_a_revoked_certificate_says_it_is_revoked(
    admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    register(pki.client, identity="billing").revoke("superseded")
    now = dt.datetime.now(dt.UTC)
    failure = AuthenticationFailure.objects.create(
        key="k", window_start=now, first_seen=now, last_seen=now, reason="certificate_revoked",
        thumbprint_sha256=pki.client.thumbprint, certificate_pem=pki.client.cert_pem().decode(),
    )  # fmt: skip
    changelist = reverse("admin:certauth_authenticationfailure_changelist")
    response = admin_client.post(
        changelist, {"action": "register_certificate", "_selected_action": [failure.pk]}, follow=True
    )
    shown = [str(message) for message in response.context["messages"]]
    assert any("was revoked on" in message and "to reinstate it" in message for message in shown), shown


# --- list and expiring read naturally ---------------------------------------------------------------------------
def test_list_of_an_unknown_identity_says_so(pki: FixturePKI, register: Any) -> None:
    register(pki.client, identity="billing")
    with pytest.raises(CommandError, match="No identity named 'ghost'"):
        certauth("list", "--identity", "ghost")
    with pytest.raises(CommandError, match="No identity named 'Billing'"):
        certauth("list", "--identity", "Billing", "--format", "json")
    assert "billing  [active]" in certauth("list", "--identity", "billing")


def test_last_use_reads_naturally_in_list_and_expiring(pki: FixturePKI, register: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    used = register(pki.issue("used", not_after=now + dt.timedelta(days=5)), identity="billing")
    RegisteredCertificate.objects.filter(pk=used.pk).update(
        last_used_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    )
    register(pki.issue("idle", not_after=now + dt.timedelta(days=6)), identity="billing")
    expiring = StringIO()
    with pytest.raises(SystemExit):  # exit 1: some expire (for cron)
        call_command("certauth", "expiring", "--days", "30", stdout=expiring, stderr=StringIO())
    for text in (certauth("list"), expiring.getvalue()):
        assert "last used 2026-01-02T03:04:05" in text and "never used" in text, text
        assert "last used never" not in text and "  used 2026" not in text, text


# --- `make run` re-registers its demo client on every start ------------------------------------------------------
def test_make_run_starts_again_after_the_demo_certificate_was_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`certauth register` now refuses a revoked certificate (exit 1); `make run` registers its demo client on
    every start, so after a rotation try-out that revoked it, it must still start and say why the demo 401s."""
    from certauth.devpki import DevPKI
    from scripts import stack

    for name in ("DATABASE_URL", "SECRET_KEY", "CERTAUTH_ADMIN_PASSWORD", "CERTAUTH_PROXY_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    var_dir = tmp_path / "var"
    first = stack.prepare(var_dir)
    assert first.demo_warning == ""
    thumbprint = DevPKI.load(first.pki_dir).thumbprint("client")
    stack._manage(first.env, "certauth", "revoke", "--thumbprint", thumbprint, capture=True)
    again = stack.prepare(var_dir)
    assert "is revoked in the registry" in again.demo_warning
