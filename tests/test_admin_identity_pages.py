"""The identity pages of the admin (issue 13 §2a), through the Django test client with real certificates:
an identity added with its first certificate in one form, the rotation timeline (SVG), the "add a
successor" page, the warning before retiring a certificate still in use, and the compact scope widget."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone

from certauth import services, timeline
from certauth.certificates import format_thumbprint
from certauth.models import CertificateIdentity, RegisteredCertificate

from .conftest import FixturePKI

pytestmark = pytest.mark.django_db

ADD_IDENTITY = "admin:certauth_certificateidentity_add"
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script> "x" & \u202eevil\u0085'


def staff(*codenames: str, username: str = "operator") -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="certauth", codename__in=codenames))
    return User.objects.get(pk=user.pk)


def identity_url(identity: CertificateIdentity) -> str:
    return reverse("admin:certauth_certificateidentity_change", args=[identity.pk])


def entry_url(entry: RegisteredCertificate, view: str = "change") -> str:
    return reverse(f"admin:certauth_registeredcertificate_{view}", args=[entry.pk])


def identity_data(name: str, scopes: str = "", **certificate: Any) -> dict[str, Any]:
    """The "Add certificate identity" page as the browser posts it, with its first-certificate inline."""
    data: dict[str, Any] = {
        "name": name,
        "description": "",
        "is_active": "on",
        "scopes": scopes,
        "match_field": "",
        "match_pattern": "",
        "certificates-TOTAL_FORMS": "1",
        "certificates-INITIAL_FORMS": "0",
        "certificates-MIN_NUM_FORMS": "0",
        "certificates-MAX_NUM_FORMS": "1",
        "certificates-0-pem_text": "",
        "certificates-0-pkcs12_password": "",
        "certificates-0-label": "",
    }
    data.update({f"certificates-0-{key}": value for key, value in certificate.items()})
    return data


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The clock stopped at the test's start: texts such as "3 minutes ago" do not depend on the machine's speed."""
    moment = timezone.now().replace(microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    return moment


def parse_svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # noqa: S314 - our own output, parsed to prove it is well-formed XML


def svg_of(response: Any) -> ET.Element:
    """The timeline's SVG in an admin page, parsed as XML (it must be well-formed)."""
    html = response.content.decode()
    found = re.search(r'<svg [^>]*class="certauth-timeline".*?</svg>', html, re.DOTALL)
    assert found, "no SVG on the page"
    return parse_svg(found.group())


def classes(element: ET.Element) -> list[str]:
    return (element.get("class") or "").split()


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [element for element in root.iter() if name in classes(element)]


# --- an identity and its first certificate in one form ---------------------------------------------
def test_an_identity_is_added_with_its_first_certificate_and_scopes(
    admin_client: Any, admin_user: User, pki: FixturePKI, trusted_root: Any
) -> None:
    page = admin_client.get(reverse(ADD_IDENTITY))
    assert (
        b'name="certificates-0-pem_text"' in page.content and b'name="certificates-0-certificate_file"' in page.content
    )
    response = admin_client.post(
        reverse(ADD_IDENTITY),
        identity_data("billing", scopes="orders:read", pem_text=pki.client.cert_pem().decode(), label="2026 key"),
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    identity = CertificateIdentity.objects.get(name="billing")
    entry = identity.certificates.get()
    assert entry.thumbprint_sha256 == pki.client.thumbprint and entry.label == "2026 key"
    assert entry.created_by == admin_user and identity.scopes == "orders:read"


def test_the_first_certificate_may_be_uploaded(admin_client: Any, pki: FixturePKI, trusted_root: Any) -> None:
    upload = SimpleUploadedFile("billing.crt", pki.client.cert_pem())
    response = admin_client.post(reverse(ADD_IDENTITY), identity_data("billing", certificate_file=upload))
    assert response.status_code == 302
    assert CertificateIdentity.objects.get(name="billing").certificates.get().thumbprint_sha256 == pki.client.thumbprint


def test_the_first_certificate_is_optional(admin_client: Any, trusted_root: Any) -> None:
    assert b'name="certificates-0-pem_text"' in admin_client.get(reverse(ADD_IDENTITY)).content
    response = admin_client.post(reverse(ADD_IDENTITY), identity_data("rule-only"))
    assert response.status_code == 302
    assert not CertificateIdentity.objects.get(name="rule-only").certificates.exists()


@pytest.mark.parametrize(
    ("certificate", "message"),
    [
        ("expired", "expired"),
        ("server_usage", "client"),
        ("junk", "PEM"),
    ],
)
def test_a_refused_first_certificate_creates_nothing(
    admin_client: Any, pki: FixturePKI, trusted_root: Any, certificate: str, message: str
) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----" if certificate == "junk" else ""
    pem = pem or getattr(pki, certificate).cert_pem().decode()
    response = admin_client.post(reverse(ADD_IDENTITY), identity_data("billing", scopes="orders:read", pem_text=pem))
    assert response.status_code == 200
    errors = " ".join(
        str(error) for formset in response.context["inline_admin_formsets"] for error in formset.formset.errors
    )
    assert message.lower() in errors.lower(), errors
    assert not CertificateIdentity.objects.filter(name="billing").exists()
    assert not RegisteredCertificate.objects.exists()


def test_a_first_certificate_already_registered_is_refused_naming_its_identity(
    admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    register(pki.client, identity="payroll")
    response = admin_client.post(
        reverse(ADD_IDENTITY), identity_data("billing", pem_text=pki.client.cert_pem().decode())
    )
    assert response.status_code == 200
    assert "already registered for identity &#x27;payroll&#x27;" in response.content.decode()
    assert not CertificateIdentity.objects.filter(name="billing").exists()


def test_the_first_certificate_needs_the_register_permission(client: Any, pki: FixturePKI, trusted_root: Any) -> None:
    client.force_login(staff("add_certificateidentity", "view_certificateidentity", "change_certificateidentity"))
    page = client.get(reverse(ADD_IDENTITY))
    assert page.status_code == 200 and b"certificates-0-pem_text" not in page.content
    response = client.post(reverse(ADD_IDENTITY), identity_data("billing", pem_text=pki.client.cert_pem().decode()))
    assert response.status_code == 302
    assert CertificateIdentity.objects.filter(name="billing").exists()
    assert not RegisteredCertificate.objects.exists()  # the forged inline is ignored


def test_the_pasted_first_certificate_is_hidden_from_error_reports(admin_client: Any, pki: FixturePKI) -> None:
    from django.views.debug import SafeExceptionReporterFilter

    data = identity_data("billing", pem_text=pki.expired.cert_pem().decode(), pkcs12_password="secret")
    response = admin_client.post(reverse(ADD_IDENTITY), data)
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert shown["certificates-0-pem_text"] == shown["certificates-0-pkcs12_password"] == "********************"
    assert shown["name"] == "billing"


# --- the rotation timeline ---------------------------------------------------------------------------
@pytest.fixture
def rotated(pki: FixturePKI, register: Any, frozen: dt.datetime) -> tuple[RegisteredCertificate, RegisteredCertificate]:
    """billing's old certificate (used 3 minutes ago, hostile label) and its successor (never used)."""
    old = register(pki.client, identity="billing", label=HOSTILE)
    new = services.add_successor(old, pki.client2.certificate, label="next")
    RegisteredCertificate.objects.filter(pk=old.pk).update(last_used_at=frozen - dt.timedelta(minutes=3))
    return old, new


def test_the_identity_page_draws_the_rotation_timeline(
    admin_client: Any, rotated: tuple[RegisteredCertificate, RegisteredCertificate], frozen: dt.datetime
) -> None:
    old, new = rotated
    svg = svg_of(admin_client.get(identity_url(old.identity)))
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.find(f"{SVG}title") is not None and "billing" in (svg.find(f"{SVG}title").text or "")
    description = svg.find(f"{SVG}desc").text or ""
    assert "next (CN billing-service-next): Valid" in description and "replaces" in description
    bars = with_class(svg, "certauth-timeline-bar")
    assert len(bars) == 2  # one per entry
    entries = [element.get("data-entry") for element in with_class(svg, "certauth-timeline-entry")]
    assert entries == [str(old.pk), str(new.pk)]  # oldest at the top
    (today,) = with_class(svg, "certauth-timeline-today")
    assert f"today {frozen:%Y-%m-%d}" in "".join(today.itertext())
    (link,) = with_class(svg, "certauth-timeline-successor")
    assert (link.get("data-from"), link.get("data-to")) == (str(old.pk), str(new.pk))
    notes = ["".join(note.itertext()) for note in with_class(svg, "certauth-timeline-note")]
    assert notes == ["last used 3\xa0minutes ago", "never used"]
    assert len(with_class(svg, "certauth-timeline-used")) == 1  # the last-use marker of the used one


def test_the_timeline_escapes_what_a_certificate_or_label_holds(
    admin_client: Any, rotated: tuple[RegisteredCertificate, RegisteredCertificate]
) -> None:
    old, _new = rotated
    html = admin_client.get(identity_url(old.identity)).content.decode()
    svg_text = re.search(r'<svg [^>]*class="certauth-timeline".*?</svg>', html, re.DOTALL).group()  # type: ignore[union-attr]
    assert "<script>" not in svg_text and "\u202e" not in svg_text and "\u0085" not in svg_text
    svg = svg_of(admin_client.get(identity_url(old.identity)))
    texts = " ".join("".join(element.itertext()) for element in svg.iter(f"{SVG}text"))
    assert '<script>alert(1)</script> "x" & \\u202eevil\\u0085'[:29] in texts  # shown as text, shortened
    assert '<script>alert(1)</script> "x" & \\u202eevil\\u0085' in (svg.find(f"{SVG}desc").text or "")


def test_the_timeline_escapes_a_hostile_subject(admin_client: Any, pki: FixturePKI, register: Any) -> None:
    hostile = pki.issue('<svg onload="alert(1)">\u202eevil\u0085')
    entry = register(hostile, identity="billing")
    svg = svg_of(admin_client.get(identity_url(entry.identity)))
    (row,) = with_class(svg, "certauth-timeline-entry")
    assert [child.tag for child in row.iter() if child.tag.endswith("svg")] == []  # no element from the subject
    title = row.find(f"{SVG}title").text or ""  # type: ignore[union-attr]
    assert '(CN <svg onload="alert(1)">\\u202eevil\\u0085)' in title
    assert "\u202e" not in title and "\u0085" not in title


def test_an_identity_without_certificates_says_so(admin_client: Any, trusted_root: Any) -> None:
    identity = CertificateIdentity.objects.create(name="empty")
    page = admin_client.get(identity_url(identity))
    assert b"No certificate registered yet." in page.content and b'class="certauth-timeline"' not in page.content


def test_view_only_staff_see_the_timeline(
    client: Any, rotated: tuple[RegisteredCertificate, RegisteredCertificate]
) -> None:
    client.force_login(staff("view_certificateidentity", "view_registeredcertificate"))
    old, _new = rotated
    assert len(with_class(svg_of(client.get(identity_url(old.identity))), "certauth-timeline-bar")) == 2


def test_timeline_layout_puts_today_and_bars_on_one_time_axis() -> None:
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    bars = [
        timeline.Bar("1", "old", "valid", "Valid", not_before=now - 300 * day, not_after=now + 10 * day),
        timeline.Bar(
            "2",
            "new",
            "not_yet_valid",
            "Not yet valid",
            not_before=now + 5 * day,
            not_after=now + 370 * day,
            replaces="1",
            replaces_name="old",
        ),
        timeline.Bar("3", "typed", "revoked", "Revoked", not_after=now + 20 * day, revoked_at=now - day),
    ]
    svg = parse_svg(timeline.render(bars, now=now, title="t"))
    old, new, typed = with_class(svg, "certauth-timeline-bar")
    today = float(with_class(svg, "certauth-timeline-today")[0].find(f"{SVG}line").get("x1"))  # type: ignore[union-attr, arg-type]
    old_start, old_end = float(old.get("x")), float(old.get("x")) + float(old.get("width"))  # type: ignore[arg-type]
    new_start = float(new.get("x"))  # type: ignore[arg-type]
    assert old_start < today < old_end < float(new.get("x")) + float(new.get("width"))  # type: ignore[arg-type]
    assert today < new_start < old_end  # the overlap of a rotation
    assert typed.get("stroke-dasharray")  # unknown start, revoked: drawn dashed
    assert len(with_class(svg, "certauth-timeline-revoked")) == 1
    assert timeline.render([], now=now, title="t") == ""


def test_timeline_text_makes_invisible_characters_visible() -> None:
    assert timeline.text("a\x00b\u202ec\u0085<&>'\"") == "a\\u0000b\\u202ec\\u0085&lt;&amp;&gt;&#x27;&quot;"


def test_the_timeline_module_does_not_import_django() -> None:
    code = "import sys, certauth.timeline\nassert not [m for m in sys.modules if m.split('.')[0] == 'django']\n"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- add a successor -----------------------------------------------------------------------------------
def test_the_successor_page_names_the_predecessor_and_its_identity(
    admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    old = register(pki.client, identity="billing", label="<b>2026</b> key")
    page = admin_client.get(entry_url(old, "successor"), follow=True)
    html = page.content.decode()
    assert "<h1>Add a successor to &lt;b&gt;2026&lt;/b&gt; key of billing</h1>" in html
    predecessor = re.search(r'<span class="certauth-predecessor">(.*?)</span>\s*</div>', html, re.DOTALL)
    assert predecessor and "&lt;b&gt;2026&lt;/b&gt; key" in predecessor.group(1) and "billing" in predecessor.group(1)
    assert 'last used <span class="certauth-never">never</span>' in predecessor.group(1)
    assert 'type="hidden" name="predecessor"' in html and "vForeignKeyRawIdAdminField" not in html
    # Saving registers the successor of that entry; a refused certificate keeps the heading.
    add_url = page.redirect_chain[-1][0]
    refused = admin_client.post(
        add_url,
        {"identity": old.identity_id, "predecessor": old.pk, "label": "", "pem_text": pki.expired.cert_pem().decode()},
    )
    assert (
        refused.status_code == 200
        and "Add a successor to &lt;b&gt;2026&lt;/b&gt; key of billing" in refused.content.decode()
    )
    saved = admin_client.post(
        add_url,
        {"identity": old.identity_id, "predecessor": old.pk, "label": "", "pem_text": pki.client2.cert_pem().decode()},
    )
    assert saved.status_code == 302
    assert RegisteredCertificate.objects.get(thumbprint_sha256=pki.client2.thumbprint).predecessor == old


def test_an_unlabelled_predecessor_is_named_by_its_thumbprint(
    admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    old = register(pki.client, identity="billing")
    html = admin_client.get(entry_url(old, "successor"), follow=True).content.decode()
    assert f"<h1>Add a successor to {format_thumbprint(old.thumbprint_sha256[:16])}… of billing</h1>" in html


def test_the_plain_add_page_keeps_its_title(admin_client: Any, trusted_root: Any) -> None:
    html = admin_client.get(reverse("admin:certauth_registeredcertificate_add")).content.decode()
    assert "Add a successor" not in html and "<h1>Add registered certificate</h1>" in html


def test_the_successor_page_needs_the_register_permission(client: Any, pki: FixturePKI, register: Any) -> None:
    old = register(pki.client, identity="billing")
    client.force_login(staff("view_registeredcertificate", "view_certificateidentity"))
    assert client.get(entry_url(old, "successor")).status_code == 403
    assert client.get(reverse("admin:certauth_registeredcertificate_add") + f"?predecessor={old.pk}").status_code == 403


# --- retiring a certificate still in use ---------------------------------------------------------------
def test_retiring_warns_when_the_certificate_was_used_recently(
    admin_client: Any, rotated: tuple[RegisteredCertificate, RegisteredCertificate]
) -> None:
    old, _new = rotated
    html = admin_client.get(entry_url(old, "retire")).content.decode()
    warning = re.search(r'<ul class="messagelist certauth-recent-use"><li class="warning">(.*?)</li>', html, re.DOTALL)
    assert warning, html
    assert "was last used 3\xa0minutes ago: a client may still present it" in warning.group(1)
    assert "at most once every 60 seconds" in warning.group(1)
    assert "&lt;script&gt;" in warning.group(1) and "<script>" not in warning.group(1)


def test_retiring_selected_certificates_warns_too(
    admin_client: Any, rotated: tuple[RegisteredCertificate, RegisteredCertificate]
) -> None:
    old, new = rotated
    response = admin_client.post(
        reverse("admin:certauth_registeredcertificate_changelist"),
        {"action": "retire_selected", "_selected_action": [old.pk, new.pk], "index": "0"},
    )
    assert response.status_code == 200
    assert response.content.decode().count("a client may still present it") == 1  # the new one was never used


@pytest.mark.parametrize("minutes_ago", [None, 2 * 24 * 60])
def test_retiring_an_idle_certificate_does_not_warn(
    admin_client: Any, pki: FixturePKI, register: Any, frozen: dt.datetime, minutes_ago: int | None
) -> None:
    old = register(pki.client, identity="billing")
    used = None if minutes_ago is None else frozen - dt.timedelta(minutes=minutes_ago)
    RegisteredCertificate.objects.filter(pk=old.pk).update(last_used_at=used)
    page = admin_client.get(entry_url(old, "retire"))
    assert page.status_code == 200 and b"certauth-recent-use" not in page.content


def test_revoking_shows_no_retire_warning(
    admin_client: Any, rotated: tuple[RegisteredCertificate, RegisteredCertificate]
) -> None:
    old, _new = rotated
    assert b"certauth-recent-use" not in admin_client.get(entry_url(old, "revoke")).content


def test_recent_use_follows_the_last_used_resolution(pki: FixturePKI, register: Any, settings: Any) -> None:
    entry = register(pki.client, identity="billing")
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    assert services.recent_use(entry, now) is None  # never used
    entry.last_used_at = now - dt.timedelta(hours=30)
    assert services.recent_use(entry, now) is None  # beyond a day
    entry.last_used_at = now - dt.timedelta(minutes=3)
    assert services.recent_use(entry, now) == dt.timedelta(minutes=3)
    settings.CERTAUTH = {**getattr(settings, "CERTAUTH", {}), "LAST_USED_RESOLUTION_SECONDS": 24 * 3600}
    entry.last_used_at = now - dt.timedelta(hours=30)  # within two resolutions: last_used_at lags by up to one
    assert services.recent_use(entry, now) == dt.timedelta(hours=30)


# --- the scope widget ------------------------------------------------------------------------------------
def test_scopes_are_a_compact_widget_of_known_scopes_plus_free_entry(admin_client: Any, trusted_root: Any) -> None:
    CertificateIdentity.objects.create(name="a", scopes="orders:read orders:write")
    CertificateIdentity.objects.create(name="b", scopes="orders:read")
    html = admin_client.get(reverse(ADD_IDENTITY)).content.decode()
    assert (
        "<textarea"
        not in re.search(r'<div class="form-row[^"]*field-scopes.*?</div>\s*</div>', html, re.DOTALL).group()
    )  # type: ignore[union-attr]
    boxes = re.findall(r'name="scopes_known" value="([^"]+)"', html)
    assert boxes == ["orders:read", "orders:write"]  # the most granted first
    assert 'type="text" name="scopes"' in html and 'id="id_scopes"' in html
    response = admin_client.post(
        reverse(ADD_IDENTITY), {**identity_data("c", scopes="reports:read"), "scopes_known": ["orders:write"]}
    )
    assert response.status_code == 302
    identity = CertificateIdentity.objects.get(name="c")
    assert identity.scope_list == ["orders:write", "reports:read"]
    page = admin_client.get(identity_url(identity)).content.decode()
    assert re.findall(r'value="([^"]+)" id="id_scopes_\d+" checked', page) == ["orders:write", "reports:read"]
    assert re.search(r'name="scopes" value=""', page)  # every scope it has is a box now


def test_scopes_beyond_the_known_ones_stay_in_the_text_box() -> None:
    from certauth.forms import ScopesWidget

    html = ScopesWidget(known=["orders:read"]).render("scopes", "orders:read rare:one", {"id": "id_scopes"})
    assert re.search(r'value="orders:read" id="id_scopes_0" checked', html)
    assert 'name="scopes" value="rare:one"' in html
    assert (
        ScopesWidget().value_from_datadict(QueryDict("scopes_known=a&scopes_known=b&scopes=c"), {}, "scopes") == "a b c"
    )
    assert ScopesWidget().value_from_datadict(QueryDict(""), {}, "scopes") is None


def test_a_malformed_typed_scope_is_refused_and_nothing_is_created(admin_client: Any, trusted_root: Any) -> None:
    response = admin_client.post(reverse(ADD_IDENTITY), identity_data("c", scopes="orders:read <b>"))
    assert response.status_code == 200 and "Invalid scope" in response.content.decode()
    assert not CertificateIdentity.objects.filter(name="c").exists()


def test_scopes_stay_read_only_for_who_may_not_grant(client: Any) -> None:
    identity = CertificateIdentity.objects.create(name="a", scopes="orders:read")
    client.force_login(staff("view_certificateidentity", "change_certificateidentity"))
    html = client.get(identity_url(identity)).content.decode()
    assert 'name="scopes_known"' not in html and 'name="scopes"' not in html and "orders:read" in html


def test_the_timeline_draws_the_newest_certificates_and_counts_the_others(admin_client: Any, trusted_root: Any) -> None:
    from certauth.admin.registry import TIMELINE_LIMIT

    identity = CertificateIdentity.objects.create(name="busy")
    not_after = timezone.now() + dt.timedelta(days=30)
    entries = [
        services.register_thumbprint(identity, f"{index:064x}", not_after=not_after)
        for index in range(TIMELINE_LIMIT + 3)
    ]
    svg = svg_of(admin_client.get(identity_url(identity)))
    drawn = [element.get("data-entry") for element in with_class(svg, "certauth-timeline-entry")]
    assert drawn == [str(entry.pk) for entry in entries[3:]]
    assert "3 older certificates not shown." in (svg.find(f"{SVG}desc").text or "")


def test_the_timeline_and_the_lists_spell_out_the_same_characters() -> None:
    """One definition (``certificates.visible``): the timeline once had its own, narrower list and drew a
    zero-width space, a line separator or a BOM from a label as itself."""
    from certauth.certificates import visible

    hostile = "a\u200bb\u2028c\ufeffd\u202ee\ud800"
    assert timeline.text(hostile) == visible(hostile) == "a\\u200bb\\u2028c\\ufeffd\\u202ee\\ud800"
