"""Every certauth list, Authentication failures with its chart, and the dashboard, in a real browser at 1366x768
with realistic long data (long subjects, IPv6 addresses, long paths, revoked rows): no list is wider than its
viewport, the result table fits its container, no validity or action cell is taller than two lines.
Screenshots go to var/screenshots/."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from certauth import devpki
from certauth.models import AuthenticationFailure, RevocationReason, TrustedAuthority
from certauth.services import get_or_create_identity, register_certificate

from ..conftest import CertClient, FixturePKI
from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_NAME = "payments-settlement-reconciliation-batch-worker-eu-west-1-production-blue"
LONG_PATH = "/api/v2/organisations/3f9c2a7e-5b1d-4c8e-9f0a-7d6e5c4b3a21/settlements/2026-12-07/reconciliation/exports"
IPV6 = "2001:db8:85a3:1234:5678:8a2e:370:7334"
LISTS = {
    "identities": "/admin/certauth/certificateidentity/",
    "registered-certificates": "/admin/certauth/registeredcertificate/",
    "authorities": "/admin/certauth/trustedauthority/",
    "authentication-failures": "/admin/certauth/authenticationfailure/",
}
# Cells that must stay within two lines: validity, status (with a revocation note), and every link column.
TWO_LINE_CELLS = ", ".join(
    f"td.field-{name}" for name in ("validity", "status", "register_link", "soonest_expiry", "crl_status", "last_used")
)

MEASURE = """() => {
  const table = document.querySelector('#result_list');
  const box = table ? table.closest('.results') || table.parentElement : null;
  const tall = [];
  for (const cell of document.querySelectorAll(arguments_cells)) {
    // The lines the cell's content takes (a cell itself is as tall as its row): distinct line boxes.
    const range = document.createRange();
    range.selectNodeContents(cell);
    const tops = [];
    for (const rect of range.getClientRects()) {
      if (rect.height > 0 && !tops.some(top => Math.abs(top - rect.bottom) < rect.height / 2)) tops.push(rect.bottom);
    }
    if (tops.length > 2) tall.push([cell.className, tops.length, cell.innerText]);
  }
  return {
    docWidth: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    table: table ? table.getBoundingClientRect().width : null,
    box: box ? box.clientWidth : null,
    boxScroll: box ? box.scrollWidth : null,
    rows: table ? table.querySelectorAll('tbody tr').length : 0,
    tall: tall,
  };
}"""


def measure(page: Any) -> dict[str, Any]:
    return dict(page.evaluate(MEASURE.replace("arguments_cells", repr(TWO_LINE_CELLS))))


def assert_fits(page: Any, name: str) -> dict[str, Any]:
    facts = measure(page)
    assert facts["rows"] > 0, name
    assert facts["docWidth"] <= facts["viewport"], (name, facts)
    assert facts["table"] <= facts["box"] + 1 and facts["boxScroll"] <= facts["box"], (name, facts)
    assert facts["tall"] == [], (name, facts["tall"])
    return facts


def long_data(pki: FixturePKI) -> None:
    """Identities with long names and scopes, certificates with long subjects (valid, expiring, revoked), an
    authority with a long subject, refusals from IPv6 addresses on long paths, an unknown certificate."""
    now = timezone.now()
    long_ca = devpki.make_ca("Example Corp Internal Issuing CA for Machine Clients G3")
    TrustedAuthority.objects.create(
        name="Example Corporation Internal Issuing CA G3 (machine clients, production and staging)",
        certificate_pem=long_ca.cert_pem().decode(),
        thumbprint_sha256=long_ca.thumbprint,
        subject="CN=Example Corporation Internal Issuing Certification Authority for Machine Clients G3,"
        "OU=Platform Security Engineering,O=Example Corporation International Holdings Ltd,L=Luxembourg,C=LU",
        not_after=now + dt.timedelta(days=3650),
        crl_url="http://crl.pki.example.com/internal-issuing-ca-g3/machine-clients/latest.crl",
        crl_next_update=now - dt.timedelta(hours=2),
    )
    identity, _ = get_or_create_identity(
        LONG_NAME, scopes=["orders:read", "orders:write", "settlements:reconcile", "exports:download", "audit:read"]
    )
    for index in range(4):
        issued = pki.issue(f"worker-{index}.settlement-reconciliation.clients.example.com")
        entry = register_certificate(identity, issued.certificate, label=f"{LONG_NAME} rotation {index}")
        if index == 1:
            entry.revoke(RevocationReason.KEY_COMPROMISE)
        if index == 2:
            entry.revoke(RevocationReason.CESSATION_OF_OPERATION)
    soon = pki.issue(
        "short-lived.example.com",
        not_before=now - dt.timedelta(days=20),
        not_after=now + dt.timedelta(days=5),
    )
    register_certificate(identity, soon.certificate, label="expiring")
    for index, reason in enumerate(("untrusted_issuer", "proxy_verification_failed", "certificate_expired")):
        seen = now - dt.timedelta(hours=index * 30, minutes=30)
        AuthenticationFailure.objects.create(
            key=hashlib.sha256(f"{reason}{index}".encode()).hexdigest(),
            window_start=seen,
            reason=reason,
            count=10**index * 7,
            thumbprint_sha256=hashlib.sha256(reason.encode()).hexdigest(),
            subject=f"CN={LONG_NAME}.{reason}.clients.internal.example.com,OU=Platform Security Engineering,"
            "O=Example Corporation International Holdings Ltd,C=LU",
            subject_cn=f"{LONG_NAME}.{reason}.clients.internal.example.com",
            client_ip=IPV6,
            path=LONG_PATH,
            first_seen=seen,
            last_seen=seen,
        )
    # A real refusal of an unknown certificate from an IPv6 client: captured, registrable (on a long path).
    stranger = pki.issue("unregistered.settlement-reconciliation.clients.example.com")
    assert CertClient().get("/api/whoami/", stranger, client_ip=IPV6).status_code == 401
    assert AuthenticationFailure.objects.filter(reason="unknown_certificate").update(path=LONG_PATH) == 1


def test_every_list_fits_1366(page: Any, pki: FixturePKI, trusted_root: Any, screenshots: Path) -> None:
    long_data(pki)
    page.set_viewport_size({"width": 1366, "height": 768})
    log_in(page)
    for name, url in LISTS.items():
        page.goto(url)
        page.wait_for_selector("#result_list")
        assert_fits(page, name)
        page.screenshot(path=str(screenshots / f"list-{name}.png"), full_page=True)
    # Revoked rows show reason and date in the list.
    page.goto(LISTS["registered-certificates"] + "?status=revoked")
    today = f"{timezone.now():%Y-%m-%d}"
    statuses = page.locator("#result_list td.field-status").all_inner_texts()
    assert sorted(" ".join(text.split()) for text in statuses) == [
        f"Revoked {today} Cessation of operation",
        f"Revoked {today} Key compromise",
    ]
    # Every certauth changelist the admin has is covered above.
    page.goto("/admin/certauth/")
    listed = {link.get_attribute("href") for link in page.locator("#content-main table th a").all()}
    assert listed == set(LISTS.values()), listed


def test_audit_chart_register_and_dashboard(page: Any, pki: FixturePKI, trusted_root: Any, screenshots: Path) -> None:
    long_data(pki)
    page.set_viewport_size({"width": 1366, "height": 768})
    log_in(page)

    # The dashboard on the admin index: stale CRL, expiring certificate, refusals in the last hour.
    page.goto("/admin/")
    dashboard = page.locator("#certauth-dashboard")
    assert dashboard.locator("tr[data-tile=stale_crls] td.count").inner_text() == "1"
    assert dashboard.locator("tr[data-tile=expiring] td.count").inner_text() == "1"
    refused = int(dashboard.locator("tr[data-tile=refused] td.count").inner_text())
    assert refused == 8  # 7 untrusted_issuer an hour ago, the unknown certificate just now
    assert "Tokens" not in page.inner_text("#content-main")
    assert measure(page)["docWidth"] <= 1366
    page.screenshot(path=str(screenshots / "admin-index-dashboard.png"), full_page=True)
    dashboard.locator("tr[data-tile=refused] th a").click()
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 2

    # The chart above the list: one group per reason, the 7-day bars including the older refusals.
    page.goto(LISTS["authentication-failures"])
    chart = page.locator("svg.certauth-chart")
    assert chart.is_visible()
    week = {
        bar.get_attribute("data-reason"): int(bar.get_attribute("data-count") or 0)
        for bar in chart.locator("a[data-window='7d']").all()
    }
    assert week == {
        "certificate_expired": 700,
        "proxy_verification_failed": 70,
        "untrusted_issuer": 7,
        "unknown_certificate": 1,
    }
    box = chart.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1366
    page.screenshot(path=str(screenshots / "authentication-failures-chart.png"), full_page=True)

    # "Register this certificate" only on the unknown certificate's row, and on its page.
    links = page.locator("#result_list a.certauth-register-link")
    assert links.count() == 1
    row = page.locator("#result_list tbody tr", has=page.locator("a.certauth-register-link"))
    assert "unknown_certificate" in row.inner_text()
    row.locator("th a, td.field-last_seen a").first.click()
    page.wait_for_selector(".field-registration")
    page.screenshot(path=str(screenshots / "authentication-failure-detail.png"), full_page=True)
    page.click(".field-registration a.certauth-register-link")
    page.wait_for_selector("#id_pem_text")
    assert "BEGIN CERTIFICATE" in page.input_value("#id_pem_text")

    # Another row's page says why registering would not help.
    expired = AuthenticationFailure.objects.get(reason="certificate_expired")
    page.goto(f"{LISTS['authentication-failures']}{expired.pk}/change/")
    assert "would not change that" in page.inner_text(".field-registration")
    assert page.locator("a.certauth-register-link").count() == 0
