"""The identity pages in a real browser at 1366x768: add an identity with its first certificate and scopes in
one page, read the rotation timeline (also with JavaScript off), add a successor named by its predecessor,
and see the warning before retiring a certificate still in use.  Screenshots go to var/screenshots/."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from certauth.models import CertificateIdentity, RegisteredCertificate

from ..conftest import FixturePKI
from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def laptop(browser: Any, live_server: Any, settings: Any) -> Iterator[Any]:
    """A browser context the size of a common laptop screen, logged in as a superuser."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    log_in(tab)
    yield tab
    context.close()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The clock stopped (for the live server's thread too), so "3 minutes ago" stays 3 minutes."""
    moment = timezone.now().replace(microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    return moment


def test_identity_pages(
    laptop: Any,
    browser: Any,
    live_server: Any,
    pki: FixturePKI,
    trusted_root: Any,
    frozen: dt.datetime,
    screenshots: Path,
) -> None:
    page = laptop
    CertificateIdentity.objects.create(name="reports", scopes="orders:read reports:read")
    # A registry with more scopes than the widget shows as boxes: the widget still fits two lines.
    many = [
        f"{area}:{verb}" for area in ("invoices", "payments", "customers", "shipments") for verb in ("read", "write")
    ]
    CertificateIdentity.objects.create(name="back-office", scopes=" ".join([*many, "orders:read", "audit/export-all"]))
    # A rotation as it happens: the old certificate ends in 20 days, the new one started two days ago.
    day = dt.timedelta(days=1)
    current = pki.issue("billing-2026", not_before=frozen - 345 * day, not_after=frozen + 20 * day)
    following = pki.issue("billing-2027", not_before=frozen - 2 * day, not_after=frozen + 363 * day)

    # One page: the identity, its scopes (a box per known scope, plus free entry) and its first certificate.
    page.goto("/admin/certauth/certificateidentity/add/")
    page.fill("#id_name", "billing")
    page.check("input[name=scopes_known][value='orders:read']")
    page.fill("#id_scopes", "orders:write")
    scopes_box = page.locator(".field-scopes .certauth-scopes").bounding_box()
    assert scopes_box is not None and scopes_box["height"] < 70  # one or two lines, not a textarea
    assert page.locator("input[name=scopes_known]").count() == 11  # every known scope, up to 12
    page.fill("#id_certificates-0-pem_text", current.cert_pem().decode())
    page.fill("#id_certificates-0-label", "2026 key")
    page.screenshot(path=str(screenshots / "identity-add-with-certificate.png"), full_page=True)
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    identity = CertificateIdentity.objects.get(name="billing")
    assert identity.scope_list == ["orders:read", "orders:write"]
    old = RegisteredCertificate.objects.get(identity=identity)
    assert old.thumbprint_sha256 == current.thumbprint and old.label == "2026 key"

    # A refused first certificate: the page comes back with the reason, and nothing is created.
    page.goto("/admin/certauth/certificateidentity/add/")
    page.fill("#id_name", "late")
    page.fill("#id_certificates-0-pem_text", pki.expired.cert_pem().decode())
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "expired" in page.inner_text(".inline-group").lower()
    assert not CertificateIdentity.objects.filter(name="late").exists()

    # Add a successor: the page names the predecessor and its identity.
    page.goto(f"/admin/certauth/registeredcertificate/{old.pk}/change/")
    page.click("a.certauth-successor-link")
    page.wait_for_selector("input[name=certificate_file]")
    assert page.inner_text("h1") == "Add a successor to 2026 key of billing"
    assert "2026 key" in page.inner_text(".certauth-predecessor")
    page.screenshot(path=str(screenshots / "add-successor.png"), full_page=True)
    page.fill("#id_pem_text", following.cert_pem().decode())
    page.fill("#id_label", "2027 key")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    new = RegisteredCertificate.objects.get(thumbprint_sha256=following.thumbprint)
    assert new.predecessor == old

    # The old one is still in use (3 minutes ago): the timeline shows it, the retire page warns.
    RegisteredCertificate.objects.filter(pk=old.pk).update(last_used_at=frozen - dt.timedelta(minutes=3))
    page.goto(f"/admin/certauth/certificateidentity/{identity.pk}/change/")
    timeline = page.locator("svg.certauth-timeline")
    timeline.scroll_into_view_if_needed()
    assert timeline.locator("rect.certauth-timeline-bar").count() == 2
    assert timeline.locator(".certauth-timeline-today").count() == 1
    assert timeline.locator("path.certauth-timeline-successor").count() == 1
    box = timeline.bounding_box()
    assert box is not None and box["width"] > 600 and box["x"] + box["width"] <= VIEWPORT["width"]
    notes = [note.replace("\xa0", " ") for note in timeline.locator(".certauth-timeline-note").all_text_contents()]
    assert notes == ["last used 3 minutes ago", "never used"]
    page.screenshot(path=str(screenshots / "identity-timeline.png"), full_page=True)

    page.goto(f"/admin/certauth/registeredcertificate/{old.pk}/retire/")
    warning = page.inner_text(".certauth-recent-use")
    assert "2026 key of billing was last used 3" in warning and "minutes ago" in warning
    page.screenshot(path=str(screenshots / "retire-warning.png"), full_page=True)

    # The timeline needs no JavaScript (and follows the admin's dark theme).
    context = browser.new_context(
        base_url=live_server.url, viewport=VIEWPORT, java_script_enabled=False, color_scheme="dark"
    )
    context.add_cookies(page.context.cookies())
    plain = context.new_page()
    plain.goto(f"/admin/certauth/certificateidentity/{identity.pk}/change/")
    assert plain.locator("svg.certauth-timeline rect.certauth-timeline-bar").count() == 2
    assert plain.locator("svg.certauth-timeline").bounding_box()["height"] > 50  # type: ignore[index]
    plain.locator("svg.certauth-timeline").screenshot(path=str(screenshots / "identity-timeline-dark.png"))
    context.close()
