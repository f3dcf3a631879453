"""The registry admin in a real browser: log in, register by upload, see the status, rotate, retire,
revoke with a reason, search by a colon-separated thumbprint.  Screenshots go to var/screenshots/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certauth.certificates import format_thumbprint
from certauth.models import CertificateIdentity, RegisteredCertificate

from ..conftest import FixturePKI
from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def register_by_upload(page: Any, pem_file: Path) -> None:
    """On the registration form (already open): upload the file and save."""
    page.set_input_files("input[name=certificate_file]", str(pem_file))
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")


def test_register_rotate_retire_revoke_search(page: Any, pki: FixturePKI, tmp_path: Path, screenshots: Path) -> None:
    first_pem, second_pem = tmp_path / "billing.pem", tmp_path / "billing-next.crt"
    first_pem.write_bytes(pki.client.cert_pem())
    second_pem.write_bytes(pki.client2.cert_pem())
    log_in(page)

    # An identity, then "Register a certificate" from its page: the form comes preset to it.
    page.goto("/admin/certauth/certificateidentity/add/")
    page.fill("#id_name", "billing")
    page.fill("#id_scopes", "orders:read")
    page.click("input[name=_continue]")
    page.click("a.certauth-register-link")
    page.wait_for_selector("input[name=certificate_file]")
    assert "billing" in page.inner_text(".field-identity")
    page.screenshot(path=str(screenshots / "registration-form.png"), full_page=True)
    register_by_upload(page, first_pem)

    old = RegisteredCertificate.objects.get(thumbprint_sha256=pki.client.thumbprint)
    row = page.locator("#result_list tbody tr", has_text="billing-service")
    assert row.locator(".certauth-status").inner_text().endswith("Valid")
    page.screenshot(path=str(screenshots / "entry-list.png"), full_page=True)

    # Rotate: "Add successor" on the old entry, upload the new certificate.
    page.goto(f"/admin/certauth/registeredcertificate/{old.pk}/change/")
    page.click("a.certauth-successor-link")
    page.wait_for_selector("input[name=certificate_file]")
    assert page.input_value("#id_predecessor") == str(old.pk)
    register_by_upload(page, second_pem)
    new = RegisteredCertificate.objects.get(thumbprint_sha256=pki.client2.thumbprint)
    assert new.predecessor_id == old.pk

    identity = CertificateIdentity.objects.get(name="billing")
    page.goto(f"/admin/certauth/certificateidentity/{identity.pk}/change/")
    inline = page.locator(".inline-group")
    assert inline.locator(".certauth-status--valid").count() == 2
    page.screenshot(path=str(screenshots / "identity-detail.png"), full_page=True)

    # Retire the old one: the confirmation comes preset to "superseded" and names the successor.
    page.goto(f"/admin/certauth/registeredcertificate/{old.pk}/change/")
    page.click("a.certauth-retire-link")
    assert page.is_checked("input[name=reason][value=superseded]")
    assert format_thumbprint(new.thumbprint_sha256[:16]) in page.inner_text(".certauth-revoke-list")
    page.click("input.certauth-danger")
    page.wait_for_selector(".messagelist .success")
    assert "Revoked" in page.inner_text(".field-status")
    old.refresh_from_db()
    assert old.revocation_reason == "superseded" and old.revoked_by.username == "operator"

    # Revoke the new one with a reason, through the bulk action and its confirmation page.
    page.goto("/admin/certauth/registeredcertificate/")
    page.check(f"input.action-select[value='{new.pk}']")
    page.select_option("select[name=action]", "revoke_selected")
    page.click("button[name=index]")
    page.wait_for_selector(".certauth-revoke-confirmation")
    page.check("input[name=reason][value=key_compromise]")
    page.screenshot(path=str(screenshots / "revoke-confirmation.png"), full_page=True)
    page.click("input.certauth-danger")
    page.wait_for_selector(".messagelist .success")
    new.refresh_from_db()
    assert new.revocation_reason == "key_compromise" and new.revoked_at is not None

    # Search by the thumbprint as a browser prints it: colon-separated, uppercase.
    spelled = format_thumbprint(pki.client.thumbprint)
    page.goto("/admin/certauth/certificateidentity/")
    page.fill("#searchbar", spelled)
    page.press("#searchbar", "Enter")
    page.wait_for_load_state()
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "billing" in rows.first.inner_text()
    page.screenshot(path=str(screenshots / "identity-list.png"), full_page=True)

    page.goto("/admin/certauth/registeredcertificate/")
    page.fill("#searchbar", spelled)
    page.press("#searchbar", "Enter")
    page.wait_for_load_state()
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert rows.first.locator(".certauth-thumbprint").get_attribute("title") == spelled
    assert rows.first.locator(".certauth-status").inner_text().endswith("Revoked")
