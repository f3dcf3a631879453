"""Only who may register may grant: each row of the permission table in docs/registry.md, driven through the
Django test client as staff users holding exactly the permissions named, with real certificates and the API
called the way nginx calls it.  A forged POST carrying a field the form shows read-only changes nothing."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.urls import reverse

from certauth import devpki, grants
from certauth.certificates import format_thumbprint
from certauth.models import CertificateIdentity, RegisteredCertificate, TrustedAuthority

from .conftest import FixturePKI

pytestmark = pytest.mark.django_db

IDENTITIES = "admin:certauth_certificateidentity_changelist"
AUTHORITIES = "admin:certauth_trustedauthority_changelist"
# What a staff member who looks after identities has: see and edit them, nothing that grants.
EDITOR = ("view_certificateidentity", "change_certificateidentity")
GRANTER = (*EDITOR, "grant_certificateidentity", "add_registeredcertificate")


def staff(*codenames: str, username: str = "operator") -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="certauth", codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh object: no permission cache


def identity_url(identity: CertificateIdentity, view: str = "change") -> str:
    return reverse(f"admin:certauth_certificateidentity_{view}", args=[identity.pk])


def authority_url(authority: TrustedAuthority, view: str = "change") -> str:
    return reverse(f"admin:certauth_trustedauthority_{view}", args=[authority.pk])


def inputs(page: Any, *names: str) -> set[str]:
    """Which of ``names`` the page offers as form inputs."""
    text = page.content.decode()
    return {name for name in names if f'name="{name}"' in text}


def form_post(client: Any, url: str, **forged: Any) -> dict[str, Any]:
    """What the browser would send back for the change form at ``url`` as the client sees it (its editable
    fields with their current values, the inline management forms), with ``forged`` laid over it: fields
    that are read-only for this user are sent anyway, as an attacker would."""
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = getattr(value, "pk", value)
    for formset in response.context.get("inline_admin_formsets", []):
        management = formset.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management.initial.get(name, 0)
    data.update(forged)
    return data


def refused_reason(response: Any) -> str:
    assert response.status_code == 401, response.content
    return str(response.json()["reason"])


def history(row: CertificateIdentity | TrustedAuthority) -> list[str]:
    """The change messages of ``row``'s History page in the admin."""
    entries = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(row), object_id=str(row.pk))
    return [entry.get_change_message() for entry in entries]


@pytest.fixture
def billing(db: Any) -> CertificateIdentity:
    return CertificateIdentity.objects.create(name="billing", scopes="orders:read")


# --- identity rules --------------------------------------------------------------------------------------------
def test_an_editor_cannot_turn_an_identity_into_a_rule_that_admits_a_stranger(
    client, api, billing, pki: FixturePKI, trusted_root
) -> None:
    """The bypass: change permission on identities must not admit a certificate nobody registered."""
    client.force_login(staff(*EDITOR))
    forged = form_post(
        client,
        identity_url(billing),
        match_authority=trusted_root.pk,
        match_field="subject_cn",
        match_pattern="*",
        description="edited",
    )
    assert client.post(identity_url(billing), forged).status_code == 302
    billing.refresh_from_db()
    assert billing.description == "edited"  # what change permission allows went through...
    assert billing.match_authority_id is None and billing.match_pattern == ""  # ...the rule did not
    assert refused_reason(api.get("/api/whoami/", pki.stranger)) == "unknown_certificate"
    assert not RegisteredCertificate.objects.exists()
    page = client.get(identity_url(billing))
    assert not inputs(page, "match_authority", "match_field", "match_pattern", "scopes")


def test_the_grant_permission_alone_is_not_enough_without_the_register_permission(client, billing) -> None:
    client.force_login(staff(*EDITOR, "grant_certificateidentity"))
    assert not inputs(client.get(identity_url(billing)), "match_pattern", "scopes")


def test_a_granter_edits_a_rule_and_the_history_keeps_old_and_new(
    client, api, billing, pki: FixturePKI, trusted_root
) -> None:
    client.force_login(staff(*GRANTER))
    page = client.get(identity_url(billing))
    assert inputs(page, "match_authority", "match_field", "match_pattern", "scopes") == {
        "match_authority",
        "match_field",
        "match_pattern",
        "scopes",
    }
    data = form_post(
        client, identity_url(billing), match_authority=trusted_root.pk, match_field="subject_cn", match_pattern="str*"
    )
    assert client.post(identity_url(billing), data).status_code == 302
    assert api.get("/api/whoami/", pki.stranger).json()["identity"] == "billing"
    data = form_post(client, identity_url(billing), match_pattern="billing-*")
    assert client.post(identity_url(billing), data).status_code == 302
    messages = history(billing)
    assert any(
        "rule: none → subject_cn matches 'str*' under authority 'test root'" in message for message in messages
    ), messages
    assert any("'str*' under authority 'test root' → subject_cn matches 'billing-*'" in message for message in messages)
    # The object's History page shows it as written.
    history_page = client.get(identity_url(billing, "history")).content.decode()
    assert "rule: none → subject_cn matches &#x27;str*&#x27;" in history_page


# --- scopes, name, enabling ----------------------------------------------------------------------------------
def test_scopes_need_the_grant_permission_and_their_changes_are_in_the_history(client, billing) -> None:
    editor = staff(*EDITOR)
    client.force_login(editor)
    client.post(identity_url(billing), form_post(client, identity_url(billing), scopes="orders:read admin:*"))
    billing.refresh_from_db()
    assert billing.scopes == "orders:read"
    client.force_login(staff(*GRANTER, username="granter"))
    data = form_post(client, identity_url(billing), scopes="orders:read admin:*")
    assert client.post(identity_url(billing), data).status_code == 302
    billing.refresh_from_db()
    assert billing.scope_list == ["admin:*", "orders:read"]
    assert any("scopes: 'orders:read' → 'admin:* orders:read'" in message for message in history(billing))


def test_renaming_an_identity_needs_the_grant_permission(client, billing) -> None:
    """The application sees the name as request.user.username: a rename can take over another's identity."""
    client.force_login(staff(*EDITOR))
    assert not inputs(client.get(identity_url(billing)), "name")
    client.post(identity_url(billing), form_post(client, identity_url(billing), name="payments-admin"))
    billing.refresh_from_db()
    assert billing.name == "billing"
    client.force_login(staff(*GRANTER, username="granter"))
    client.post(identity_url(billing), form_post(client, identity_url(billing), name="payments-admin"))
    billing.refresh_from_db()
    assert billing.name == "payments-admin"
    assert any("name: 'billing' → 'payments-admin'" in message for message in history(billing))


def test_reenabling_an_identity_needs_the_grant_permission(client, billing) -> None:
    billing.disable()
    client.force_login(staff(*EDITOR, "disable_certificateidentity"))
    assert not inputs(client.get(identity_url(billing)), "is_active")
    client.post(identity_url(billing), form_post(client, identity_url(billing), is_active="on"))
    billing.refresh_from_db()
    assert not billing.is_active
    client.force_login(staff(*GRANTER, username="granter"))
    client.post(identity_url(billing), form_post(client, identity_url(billing), is_active="on"))
    billing.refresh_from_db()
    assert billing.is_active and billing.disabled_at is None


def test_disabling_an_identity_needs_only_the_disable_permission(client, billing) -> None:
    client.force_login(staff(*EDITOR, "disable_certificateidentity"))
    data = form_post(client, identity_url(billing))
    data.pop("is_active")  # the checkbox unticked
    assert client.post(identity_url(billing), data).status_code == 302
    billing.refresh_from_db()
    assert not billing.is_active and billing.disabled_by.username == "operator"
    assert any("active: True → False" in message for message in history(billing))
    other = CertificateIdentity.objects.create(name="other")
    selection = {"action": "disable_selected", "_selected_action": [other.pk], "index": 0}
    assert client.post(reverse(IDENTITIES), selection).status_code == 302
    other.refresh_from_db()
    assert not other.is_active and history(other) == ["Disabled (active: True → False)."]


def test_a_new_identity_gets_a_rule_or_scopes_only_from_a_granter(client, trusted_root) -> None:
    creator = ("view_certificateidentity", "add_certificateidentity")
    client.force_login(staff(*creator))
    add = reverse("admin:certauth_certificateidentity_add")
    assert not inputs(client.get(add), "match_pattern", "scopes") and inputs(client.get(add), "name")
    forged = {
        "name": "svc",
        "is_active": "on",
        "scopes": "admin:*",
        "match_authority": trusted_root.pk,
        "match_field": "subject_cn",
        "match_pattern": "*",
        "certificates-TOTAL_FORMS": 0,
        "certificates-INITIAL_FORMS": 0,
    }
    assert client.post(add, forged).status_code == 302
    created = CertificateIdentity.objects.get(name="svc")
    assert created.scopes == "" and created.match_authority_id is None
    client.force_login(staff(*creator, "grant_certificateidentity", "add_registeredcertificate", username="granter"))
    assert client.post(add, {**forged, "name": "svc2"}).status_code == 302
    granted = CertificateIdentity.objects.get(name="svc2")
    assert granted.scopes == "admin:*" and granted.match_pattern == "*"
    assert any("scopes: '(none)' → 'admin:*'" in message for message in history(granted))


def test_the_service_check_refuses_what_the_admin_shows_read_only(billing, trusted_root, django_user_model) -> None:
    """The admin's read-only fields are the interface; certauth.grants is the rule, for any caller."""
    editor, granter = staff(*EDITOR), staff(*GRANTER, username="granter")
    before = grants.IdentityGrant.of(billing)
    changes = {
        "rule": {"match_authority": trusted_root, "match_field": "subject_cn", "match_pattern": "*"},
        "scopes": {"scopes": "orders:read admin:*"},
        "name": {"name": "other"},
    }
    for part, fields in changes.items():
        changed = CertificateIdentity.objects.get(pk=billing.pk)
        for field, value in fields.items():
            setattr(changed, field, value)
        with pytest.raises(PermissionDenied, match=part):
            grants.check_identity_change(before, changed, by=editor)
        grants.check_identity_change(before, changed, by=granter)
    billing.disable()
    enabled = CertificateIdentity.objects.get(pk=billing.pk)
    enabled.is_active = True
    with pytest.raises(PermissionDenied, match="enabled"):
        grants.check_identity_change(grants.IdentityGrant.of(billing), enabled, by=editor)
    linked = CertificateIdentity.objects.get(pk=billing.pk)
    linked.user = django_user_model.objects.create_user("svc-bot")
    with pytest.raises(PermissionDenied, match="superuser"):
        grants.check_identity_change(grants.IdentityGrant.of(billing), linked, by=granter)


def test_a_rule_without_its_authority_is_refused_by_the_model(billing) -> None:
    from django.core.exceptions import ValidationError

    billing.match_field, billing.match_pattern = "subject_cn", "billing-*"
    with pytest.raises(ValidationError) as excinfo:
        billing.full_clean()
    assert "match_authority" in excinfo.value.message_dict


# --- deleting ------------------------------------------------------------------------------------------------
def test_deleting_an_identity_with_a_revoked_entry_is_for_superusers(
    client, admin_client, register, pki: FixturePKI
) -> None:
    """Deleting the identity deletes its revoked entries, which would un-revoke them."""
    revoked = register(pki.client, identity="old")
    revoked.revoke("key_compromise")
    live = register(pki.client2, identity="live")
    client.force_login(staff("view_certificateidentity", "delete_certificateidentity", "delete_registeredcertificate"))
    assert client.post(identity_url(revoked.identity, "delete"), {"post": "yes"}).status_code == 403
    assert CertificateIdentity.objects.filter(name="old").exists()
    assert client.post(identity_url(live.identity, "delete"), {"post": "yes"}).status_code == 302
    assert admin_client.post(identity_url(revoked.identity, "delete"), {"post": "yes"}).status_code == 302


# --- registered certificates ---------------------------------------------------------------------------------
def test_adding_a_successor_needs_the_register_permission(client, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    successor = reverse("admin:certauth_registeredcertificate_successor", args=[entry.pk])
    client.force_login(staff("view_registeredcertificate", "change_registeredcertificate"))
    assert client.get(successor).status_code == 403
    client.force_login(staff("view_registeredcertificate", "add_registeredcertificate", username="registrar"))
    assert client.get(successor).status_code == 302


def test_the_label_is_all_change_permission_edits_on_an_entry(client, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    url = reverse("admin:certauth_registeredcertificate_change", args=[entry.pk])
    client.force_login(staff("view_registeredcertificate", "change_registeredcertificate"))
    forged = {"label": "renamed", "identity": CertificateIdentity.objects.create(name="x").pk, "revoked_at": ""}
    assert client.post(url, forged).status_code == 302
    entry.refresh_from_db()
    assert entry.label == "renamed" and entry.identity.name == "billing"


# --- trusted authorities -------------------------------------------------------------------------------------
def authority_post(client: Any, authority: TrustedAuthority, **forged: Any) -> Any:
    data = {"name": authority.name, "notes": authority.notes, "crl_url": authority.crl_url,
            "ocsp_url": authority.ocsp_url, **forged}  # fmt: skip
    if authority.is_enabled and "is_enabled" not in forged:
        data["is_enabled"] = "on"
    return client.post(authority_url(authority), data)


def action_names(response: Any) -> list[str]:
    form = response.context["action_form"]
    return [] if form is None else [name for name, _label in form.fields["action"].choices]


def test_reenabling_an_authority_needs_the_trust_permission(client, trusted_root) -> None:
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(is_enabled=False)
    trusted_root.refresh_from_db()
    client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
    assert "enable" not in action_names(client.get(reverse(AUTHORITIES)))
    client.post(reverse(AUTHORITIES), {"action": "enable", "_selected_action": [trusted_root.pk], "index": 0})
    assert not inputs(client.get(authority_url(trusted_root)), "is_enabled")
    authority_post(client, trusted_root, is_enabled="on")
    trusted_root.refresh_from_db()
    assert not trusted_root.is_enabled
    client.force_login(staff("view_trustedauthority", "change_trustedauthority", "add_trustedauthority", username="b"))
    selection = {"action": "enable", "_selected_action": [trusted_root.pk], "index": 0}
    assert client.post(reverse(AUTHORITIES), selection).status_code == 302
    trusted_root.refresh_from_db()
    assert trusted_root.is_enabled
    assert "Enabled." in history(trusted_root)


def test_disabling_an_authority_needs_only_the_change_permission(client, trusted_root) -> None:
    client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
    assert "disable" in action_names(client.get(reverse(AUTHORITIES)))
    assert authority_post(client, trusted_root, is_enabled="").status_code == 302
    trusted_root.refresh_from_db()
    assert not trusted_root.is_enabled


def test_replacing_an_authority_certificate_needs_the_trust_permission(client, trusted_root, pki: FixturePKI) -> None:
    """Swapping the CA under a rule for one's own CA would let its holder mint any identity."""
    CertificateIdentity.objects.create(
        name="foreign", match_authority=trusted_root, match_field="subject_cn", match_pattern="foreign"
    )
    mine = pki.other_ca.cert_pem().decode()
    client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
    assert authority_post(client, trusted_root, certificate_text=mine).status_code == 403
    assert not inputs(client.get(authority_url(trusted_root)), "certificate_text", "certificate_file")
    client.force_login(staff("view_trustedauthority", "change_trustedauthority", "add_trustedauthority", username="b"))
    assert authority_post(client, trusted_root, certificate_text=mine).status_code == 403  # rules bound to it
    trusted_root.refresh_from_db()
    assert trusted_root.thumbprint_sha256 == pki.root.thumbprint
    client.force_login(
        staff("view_trustedauthority", "change_trustedauthority", "add_trustedauthority", *GRANTER, username="c")
    )
    assert authority_post(client, trusted_root, certificate_text=mine).status_code == 302
    trusted_root.refresh_from_db()
    assert trusted_root.thumbprint_sha256 == pki.other_ca.thumbprint
    replaced = f"certificate: {format_thumbprint(pki.root.thumbprint)} → {format_thumbprint(pki.other_ca.thumbprint)}"
    assert any(replaced in message for message in history(trusted_root)), history(trusted_root)


def test_a_crl_that_unrevokes_needs_the_trust_permission(client, trusted_root, pki: FixturePKI) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    def crl(*serials: int) -> SimpleUploadedFile:
        der = devpki.make_crl(pki.root, list(serials)).public_bytes(serialization.Encoding.DER)
        return SimpleUploadedFile("root.crl", der)

    client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
    assert authority_post(client, trusted_root, crl_file=crl(pki.client.serial_number)).status_code == 302
    revoking_more = crl(pki.client.serial_number, pki.client2.serial_number)
    assert authority_post(client, trusted_root, crl_file=revoking_more).status_code == 302
    assert authority_post(client, trusted_root, crl_file=crl(pki.client2.serial_number)).status_code == 403
    trusted_root.refresh_from_db()
    assert len(devpki.x509.load_der_x509_crl(bytes(trusted_root.crl_der))) == 2
    client.force_login(staff("view_trustedauthority", "change_trustedauthority", "add_trustedauthority", username="b"))
    assert authority_post(client, trusted_root, crl_file=crl(pki.client2.serial_number)).status_code == 302


def test_changing_an_authoritys_ocsp_responder_needs_the_trust_permission(
    client, api, pki: FixturePKI, register, trusted_root, tmp_path
) -> None:
    """With REVOCATION_FAIL_OPEN a responder that does not answer is an audited acceptance: pointing the
    authority's ocsp_url at a closed port would switch revocation off for every certificate the CA issued.
    Choosing where revocations are read from is trusting anew.  (Attack review 1, finding 4.)"""
    from django.test import override_settings

    from certauth.authorities import clear_trust_store
    from scripts.ocsp_responder import OcspResponder

    register(pki.client)
    responder = OcspResponder(tmp_path, pki.root).start(revoked=[pki.client])  # openssl ocsp, signed by the CA
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/"
    try:
        TrustedAuthority.objects.filter(pk=trusted_root.pk).update(ocsp_url=responder.url)
        trusted_root.refresh_from_db()
        with override_settings(CERTAUTH={"REVOCATION_MODE": "ocsp", "REVOCATION_FAIL_OPEN": True}):
            clear_trust_store()
            before = api.get("/api/whoami/", pki.client)
            assert before.status_code == 401 and before.json()["reason"] == "certificate_revoked", before.content

            client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
            assert not inputs(client.get(authority_url(trusted_root)), "ocsp_url", "crl_url")  # shown read-only
            authority_post(client, trusted_root, ocsp_url=dead_url)  # forged anyway

            clear_trust_store()  # the cached "revoked" answer expires (OCSP_MAX_AGE_SECONDS), or another worker
            after = api.get("/api/whoami/", pki.client)
    finally:
        responder.stop()
        dead.close()
    trusted_root.refresh_from_db()
    assert after.status_code == 401, "the OCSP-revoked certificate is accepted again"
    assert trusted_root.ocsp_url != dead_url, "change permission alone re-pointed the OCSP responder"
    # Any other caller meets the same rule; who holds the trust permission may, and the history says so.
    moved = TrustedAuthority.objects.get(pk=trusted_root.pk)
    moved.ocsp_url = dead_url
    editor = staff("change_trustedauthority", username="b")
    with pytest.raises(PermissionDenied, match="ocsp_url"):
        grants.check_authority_change(moved, replaces_certificate=False, by=editor)
    trusting = staff("view_trustedauthority", "change_trustedauthority", "add_trustedauthority", username="c")
    client.force_login(trusting)
    assert inputs(client.get(authority_url(trusted_root)), "ocsp_url", "crl_url") == {"ocsp_url", "crl_url"}
    assert authority_post(client, trusted_root, ocsp_url=dead_url).status_code == 302
    trusted_root.refresh_from_db()
    assert trusted_root.ocsp_url == dead_url
    moved_message = f"ocsp_url: {responder.url!r} → {dead_url!r}"
    assert any(moved_message in message for message in history(trusted_root)), history(trusted_root)


def test_changing_an_authoritys_crl_url_needs_the_trust_permission(client, trusted_root) -> None:
    """The CRL URL decides which CRL is loaded, and "Fetch the CRL now" (change permission) makes the server GET
    it and report connection refused / timed out / HTTP status: only a URL a trusted administrator chose."""
    internal = "http://127.0.0.1:5432/"
    client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
    assert authority_post(client, trusted_root, crl_url=internal).status_code == 302  # the other fields are saved
    trusted_root.refresh_from_db()
    assert trusted_root.crl_url == ""
    moved = TrustedAuthority.objects.get(pk=trusted_root.pk)
    moved.crl_url = internal
    editor = staff("change_trustedauthority", username="b")
    with pytest.raises(PermissionDenied, match="crl_url"):
        grants.check_authority_change(moved, replaces_certificate=False, by=editor)
    client.force_login(staff("view_trustedauthority", "change_trustedauthority", "add_trustedauthority", username="c"))
    assert authority_post(client, trusted_root, crl_url="http://pki.example/root.crl").status_code == 302
    trusted_root.refresh_from_db()
    assert trusted_root.crl_url == "http://pki.example/root.crl"
    assert any("crl_url: '(none)' → 'http://pki.example/root.crl'" in message for message in history(trusted_root))


def test_adding_an_authority_needs_the_add_permission(client) -> None:
    client.force_login(staff("view_trustedauthority", "change_trustedauthority"))
    assert client.get(reverse("admin:certauth_trustedauthority_add")).status_code == 403


# --- the command line ----------------------------------------------------------------------------------------
def test_the_command_line_logs_the_scopes_it_grants(tmp_path, pki: FixturePKI, trusted_root, caplog) -> None:
    """The CLI runs with the database credentials (superuser-equivalent): not checked, but its grants are logged
    with the old and new value."""
    cert = tmp_path / "client.pem"
    cert.write_bytes(pki.client.cert_pem())
    CertificateIdentity.objects.create(name="billing", scopes="orders:read")
    with caplog.at_level(logging.INFO, logger="certauth"):
        call_command("certauth", "register", "--identity", "billing", "--cert", str(cert), "--scope", "orders:write")
    assert any(
        "scopes of identity 'billing'" in record.getMessage()
        and "'orders:read' → 'orders:read orders:write'" in record.getMessage()
        for record in caplog.records
    ), [record.getMessage() for record in caplog.records]
