"""Authentication failures and the dashboard in the admin, through the Django test client: "Register this
certificate" only where registering helps (list and detail page), the chart's counts per reason against the
rows, the dashboard's numbers moving with real events, DRF's token admin hidden, and the permission checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import TokenProxy

from certauth.admin.audit import registration_url
from certauth.admin.dashboard import dashboard_tiles
from certauth.authorities import stale_crls
from certauth.models import AuthenticationFailure, RegisteredCertificate, TrustedAuthority

pytestmark = pytest.mark.django_db

FAILURES = "/admin/certauth/authenticationfailure/"
REGISTER = "Register this certificate"


def row(
    reason: str = "unknown_certificate",
    *,
    ago: dt.timedelta = dt.timedelta(minutes=5),
    count: int = 1,
    pem: str = "",
    thumbprint: str = "",
    not_after: dt.datetime | None = None,
    client_ip: str = "203.0.113.7",
) -> AuthenticationFailure:
    seen = timezone.now() - ago
    return AuthenticationFailure.objects.create(
        key=hashlib.sha256(f"{reason}{thumbprint}{client_ip}{ago}{count}".encode()).hexdigest(),
        window_start=seen,
        reason=reason,
        count=count,
        thumbprint_sha256=thumbprint,
        certificate_pem=pem,
        not_after=not_after,
        client_ip=client_ip,
        first_seen=seen,
        last_seen=seen,
        path="/api/whoami/",
    )


def staff(client: Any, *codenames: str) -> User:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="certauth", codename__in=codenames))
    client.force_login(user)
    return user


def tile_counts(html: str) -> dict[str, int]:
    return {key: int(count) for key, count in re.findall(r'data-tile="(\w+)">.*?data-count="(\d+)"', html, re.S)}


# --- "Register this certificate" only where it helps ------------------------------------------------------


def test_register_link_only_for_an_unknown_valid_unregistered_certificate(admin_client, api, pki, register) -> None:
    # Real refusals: an unknown certificate (captured with its PEM), and an expired one (refused before the registry).
    assert api.get("/api/whoami/", pki.stranger).status_code == 401
    assert api.get("/api/whoami/", pki.expired, client_ip="198.51.100.9").status_code == 401
    unknown = AuthenticationFailure.objects.get(reason="unknown_certificate")
    refused_expired = AuthenticationFailure.objects.get(reason="certificate_expired")
    assert unknown.certificate_pem and unknown.not_after is not None
    # Captured while unknown, but the certificate has expired since (the row keeps its notAfter).
    stale = row(
        pem=pki.client2.cert_pem().decode(),
        thumbprint=pki.client2.thumbprint,
        not_after=timezone.now() - dt.timedelta(minutes=1),
        client_ip="198.51.100.20",
    )
    # Captured while unknown, registered since.
    later = row(pem=pki.client.cert_pem().decode(), thumbprint=pki.client.thumbprint, client_ip="198.51.100.21")
    register(pki.client)
    no_pem = row(client_ip="198.51.100.22")

    listing = admin_client.get(FAILURES).content.decode()
    assert f'href="{registration_url(unknown)}"' in listing
    assert listing.count(REGISTER) == 1 + listing.count(f">{REGISTER}</option>")  # the row link, and the action
    for other in (refused_expired, stale, later, no_pem):
        assert f"from_failure={other.pk}" not in listing

    # The row's own page: the link, or why registering would not help.
    expected = {
        unknown.pk: f'href="{registration_url(unknown)}"',
        refused_expired.pk: "Refused as certificate_expired: registering the certificate would not change that.",
        stale.pk: "The certificate expired on",
        later.pk: "This certificate is already registered.",
        no_pem.pk: "No certificate was kept for this row",
    }
    for pk, text in expected.items():
        page = admin_client.get(reverse("admin:certauth_authenticationfailure_change", args=[pk]))
        assert page.status_code == 200
        html = page.content.decode()
        assert text in html
        assert (REGISTER in html) == (pk == unknown.pk)

    # The action says the same, and sends nobody to register an expired certificate.
    action = {"action": "register_certificate", "_selected_action": [stale.pk]}
    refused = admin_client.post(FAILURES, action, follow=True)
    assert "The certificate expired on" in refused.content.decode()
    assert refused.redirect_chain[-1][0].startswith(FAILURES)
    accepted = admin_client.post(FAILURES, {"action": "register_certificate", "_selected_action": [unknown.pk]})
    assert accepted.status_code == 302 and accepted["Location"] == registration_url(unknown)


def test_register_link_and_field_need_the_add_permission(client, pki) -> None:
    captured = row(pem=pki.stranger.cert_pem().decode(), thumbprint=pki.stranger.thumbprint)
    staff(client, "view_authenticationfailure")
    listing = client.get(FAILURES)
    assert listing.status_code == 200
    assert "register_link" not in listing.context["cl"].list_display
    assert REGISTER not in listing.content.decode()
    detail = client.get(reverse("admin:certauth_authenticationfailure_change", args=[captured.pk]))
    assert detail.status_code == 200 and REGISTER not in detail.content.decode()
    assert client.get(reverse("admin:certauth_registeredcertificate_add")).status_code == 403


# --- the chart ----------------------------------------------------------------------------------------------


def test_chart_counts_per_reason_match_the_rows(admin_client) -> None:
    row("unknown_certificate", count=7, ago=dt.timedelta(hours=1))
    row("unknown_certificate", count=5, ago=dt.timedelta(days=3), client_ip="198.51.100.1")
    row("untrusted_issuer", count=40, ago=dt.timedelta(days=6))
    row("missing_certificate", count=2, ago=dt.timedelta(minutes=1))
    row("missing_certificate", count=1000, ago=dt.timedelta(days=8))  # outside both windows
    html = admin_client.get(FAILURES).content.decode()
    svg = re.search(r'<svg class="certauth-chart".*?</svg>', html, re.S)
    assert svg is not None
    bars = {
        (reason, window): int(count)
        for reason, window, count in re.findall(
            r'data-reason="([^"]+)" data-window="(\w+)" data-count="(\d+)"', svg.group(0)
        )
    }
    now = timezone.now()
    for window, since in (("24h", now - dt.timedelta(hours=24)), ("7d", now - dt.timedelta(days=7))):
        recent = AuthenticationFailure.objects.filter(last_seen__gte=since)
        expected = {r["reason"]: r["total"] for r in recent.values("reason").annotate(total=Sum("count"))}
        shown = {reason: count for (reason, w), count in bars.items() if w == window and count}
        assert shown == expected
    assert bars[("untrusted_issuer", "24h")] == 0 and bars[("untrusted_issuer", "7d")] == 40
    assert 'id="certauth-reason-summary-total">9<' in html
    assert 'id="certauth-reason-summary-week-total">54<' in html
    # Each bar links to the rows it counts.
    assert 'href="?reason=untrusted_issuer&amp;seen=7d"' in svg.group(0)
    listed = admin_client.get(FAILURES, {"reason": "unknown_certificate", "seen": "24h"})
    assert sum(failure.count for failure in listed.context["cl"].result_list) == 7


def test_chart_escapes_what_the_database_holds(admin_client) -> None:
    row('<script>alert(1)</script>"\u202e', count=3)  # a reason column written by something else than certauth
    html = admin_client.get(FAILURES).content.decode()
    svg = re.search(r'<svg class="certauth-chart".*?</svg>', html, re.S)
    assert svg is not None
    assert "<script>" not in svg.group(0) and "\u202e" not in svg.group(0)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;\\u202e" in svg.group(0)
    assert "reason=%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%E2%80%AE" in svg.group(0)


def test_list_shows_hostile_certificate_and_request_text_escaped_and_visible(admin_client, api, pki) -> None:
    hostile = pki.issue("<img src=x onerror=alert(1)>\u202egnp.exe\x85")
    api.get("/api/whoami/", hostile, client_ip="2001:db8::7")
    AuthenticationFailure.objects.update(path="/api/<b>x</b>\u2066/\x9b")  # as a request line may hold
    html = admin_client.get(FAILURES).content.decode()
    rows = html[html.index('id="result_list"') :]
    assert "<img" not in rows and "<b>" not in rows
    for invisible in ("\u202e", "\x85", "\u2066", "\x9b"):
        assert invisible not in rows
    assert "&lt;img src=x onerror=alert(1)&gt;\\u202egnp.<wbr>exe\\u0085" in rows
    assert "\\u2066/<wbr>\\u009b" in rows
    failure = AuthenticationFailure.objects.get()
    page = admin_client.get(reverse("admin:certauth_authenticationfailure_change", args=[failure.pk])).content.decode()
    shown = page[page.index('id="content-main"') :]
    assert "<img src=x" not in shown and "<b>" not in shown
    assert "\u202e" not in shown and "\x85" not in shown and "\u2066" not in shown and "\x9b" not in shown
    assert "CN=\\&lt;img src=x onerror=alert(1)\\&gt;\\u202egnp.exe\\u0085" in shown  # subject (RFC 4514)
    assert "/api/&lt;b&gt;x&lt;/b&gt;\\u2066/\\u009b" in shown  # path


def test_registry_and_authority_lists_show_certificate_text_visible(admin_client, pki, register) -> None:
    from certauth import devpki
    from certauth.authorities import add_authority

    register(pki.issue("<i>x</i>\u202egnp.exe\x9b"))
    add_authority("odd CA", devpki.make_ca("CA \u2066<b>y</b>\u2069").cert_pem())
    for url, spelled in (
        ("/admin/certauth/registeredcertificate/", "&lt;i&gt;x&lt;/i&gt;\\u202egnp.exe\\u009b"),
        ("/admin/certauth/trustedauthority/", "CN=CA \\u2066\\&lt;b\\&gt;y\\&lt;/b\\&gt;\\u2069"),  # RFC 4514's \\<
    ):
        html = admin_client.get(url).content.decode()
        rows = html[html.index('id="result_list"') :]
        assert spelled in rows, url
        assert "\u202e" not in rows and "\u2066" not in rows and "\x9b" not in rows and "<b>" not in rows


def test_chart_without_refusals_says_so(admin_client) -> None:
    html = admin_client.get(FAILURES).content.decode()
    assert "No refusals." in html and 'certauth-chart"' not in html


# --- the dashboard ------------------------------------------------------------------------------------------


def test_dashboard_numbers_move_when_the_event_happens(admin_client, api, pki, register, trusted_root) -> None:
    index = reverse("admin:index")
    app_index = reverse("admin:app_list", args=["certauth"])
    start = tile_counts(admin_client.get(index).content.decode())
    assert start == {"expiring": 0, "never_used": 0, "refused": 0, "stale_crls": 0}
    assert tile_counts(admin_client.get(app_index).content.decode()) == start

    entry = register(pki.client)  # a year's validity: not expiring, never used
    assert tile_counts(admin_client.get(index).content.decode())["never_used"] == 1
    assert api.get("/api/whoami/", pki.client).status_code == 200  # used now
    api.get("/api/whoami/", pki.stranger)  # refused, unknown
    api.get("/api/whoami/", pki.stranger)
    counts = tile_counts(admin_client.get(index).content.decode())
    assert counts["never_used"] == 0 and counts["refused"] == 2

    RegisteredCertificate.objects.filter(pk=entry.pk).update(not_after=timezone.now() + dt.timedelta(days=3))
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(crl_next_update=timezone.now() - dt.timedelta(hours=1))
    counts = tile_counts(admin_client.get(app_index).content.decode())
    assert counts["expiring"] == 1 and counts["stale_crls"] == 1

    # Each number links to the list that shows what it counts.
    for key, url in (
        ("expiring", "/admin/certauth/registeredcertificate/?status=expiring"),
        ("refused", f"{FAILURES}?seen=1h"),
        ("stale_crls", "/admin/certauth/trustedauthority/?crl=stale"),
    ):
        listing = admin_client.get(url)
        assert listing.status_code == 200
        listed = listing.context["cl"].result_list
        shown = sum(f.count for f in listed) if key == "refused" else len(listed)
        assert shown == counts[key], key


def test_stale_crls_past_next_update_or_not_refreshed(trusted_root, settings) -> None:
    now = timezone.now()
    TrustedAuthority.objects.update(crl_next_update=now + dt.timedelta(days=1))
    assert not stale_crls(now).exists()
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(crl_url="http://crl.example/root.crl")
    assert list(stale_crls(now)) == [trusted_root]  # a URL never fetched
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(crl_fetched_at=now - dt.timedelta(minutes=5))
    assert not stale_crls(now).exists()
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(crl_error="Could not fetch the CRL: timed out")
    assert list(stale_crls(now)) == [trusted_root]  # the last fetch failed
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(crl_error="", is_enabled=False)
    TrustedAuthority.objects.filter(pk=trusted_root.pk).update(crl_next_update=now - dt.timedelta(hours=1))
    assert not stale_crls(now).exists()  # a disabled authority is not asked about


def test_dashboard_shows_only_what_the_user_may_view(client) -> None:
    user = staff(client, "view_authenticationfailure")
    html = client.get(reverse("admin:index")).content.decode()
    assert set(tile_counts(html)) == {"refused"}
    assert {tile.key for tile in dashboard_tiles(user)} == {"refused"}
    user.user_permissions.clear()
    nobody = User.objects.get(pk=user.pk)
    client.force_login(nobody)
    html = client.get(reverse("admin:index")).content.decode()
    assert 'id="certauth-dashboard"' not in html
    assert client.get(reverse("admin:app_list", args=["certauth"])).status_code == 404


def test_dashboard_not_shown_to_anonymous_visitors(client) -> None:
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- the reference project's admin ---------------------------------------------------------------------------


def test_token_admin_is_hidden(admin_client) -> None:
    assert not admin.site.is_registered(TokenProxy)
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "authtoken" not in html and "Tokens" not in html
    assert admin_client.get("/admin/authtoken/tokenproxy/").status_code == 404


#: A URLconf without any admin site (``@pytest.mark.urls(__name__)``).
urlpatterns: list[Any] = []


@pytest.mark.urls(__name__)
def test_dashboard_without_certauth_admin_urls_shows_nothing_rather_than_failing(admin_user) -> None:
    assert dashboard_tiles(admin_user) == []
