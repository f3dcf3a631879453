"""Attack review of issue 13 (docs/SECURITY.md §50): the registration service, the identity pages, the lists,
audit chart and dashboard, and the metrics, attacked through the Django test client with real certificates.
Each test is an attack; those that found something fail on the code before its fix, the others prove it held."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from certauth import metrics, timeline
from certauth.models import CertificateIdentity, RegisteredCertificate
from certauth.services import register_thumbprint

from .conftest import FixturePKI
from .test_admin_identity_pages import identity_data, identity_url, staff

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
#: RFC 5280 4.1.2.5: "no well-defined expiration date" is notAfter 99991231235959Z.
FOREVER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


def timeline_svg(response: Any) -> ET.Element:
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    start = html.index('<svg xmlns="http://www.w3.org/2000/svg" class="certauth-timeline"')
    return ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])  # noqa: S314 - our own output


# --- the rotation timeline: dates at the ends of the calendar -------------------------------------------------
def test_an_identity_whose_certificate_never_expires_shows_its_timeline(
    admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    """A certificate with RFC 5280's "no expiration" notAfter (9999-12-31) made the identity page a 500: the
    timeline's margin went past datetime.max (OverflowError)."""
    entry = register(pki.issue("forever-service", not_after=FOREVER), identity="forever")
    svg = timeline_svg(admin_client.get(identity_url(entry.identity)))
    (bar,) = [element for element in svg.iter(f"{SVG}rect") if element.get("class") == "certauth-timeline-bar"]
    assert float(bar.get("width") or 0) > 0


def test_a_typed_thumbprint_valid_until_9999_keeps_the_identity_page(admin_client: Any, trusted_root: Any) -> None:
    """The same through the admin's own form, by any user who may register: a typed thumbprint, year 9999."""
    identity = CertificateIdentity.objects.create(name="typed")
    response = admin_client.post(
        reverse("admin:certauth_registeredcertificate_add"),
        {
            "identity": identity.pk,
            "label": "",
            "thumbprint": "ab" * 32,
            "thumbprint_not_before_0": "",
            "thumbprint_not_before_1": "",
            "thumbprint_not_after_0": "9999-12-31",
            "thumbprint_not_after_1": "23:59:59",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    timeline_svg(admin_client.get(identity_url(identity)))


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), FOREVER),
        (dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        (dt.datetime(1, 1, 1, tzinfo=dt.UTC), FOREVER),
    ],
)
def test_the_timeline_draws_validity_at_the_calendar_ends(not_before: dt.datetime, not_after: dt.datetime) -> None:
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    bar = timeline.Bar("1", "edge", "valid", "Valid", not_before=not_before, not_after=not_after)
    svg = ET.fromstring(timeline.render([bar], now=now, title="t"))  # noqa: S314 - our own output
    (rect,) = [element for element in svg.iter(f"{SVG}rect") if element.get("class") == "certauth-timeline-bar"]
    start, width = float(rect.get("x") or 0), float(rect.get("width") or 0)
    assert timeline.LABEL_WIDTH <= start and start + width <= timeline.WIDTH - timeline.NOTE_WIDTH


# --- metrics: PROMETHEUS_MULTIPROC_DIR that is not there --------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent
METRICS_URL = "/-/certauth/metrics"
#: A fresh process (prometheus-client reads PROMETHEUS_MULTIPROC_DIR when imported), counting through the real
#: middleware and API: the worker gunicorn starts after the directory was removed (a reboot's tmpfs, a cleanup).
API_WORKER = textwrap.dedent(
    """
    import django
    django.setup()
    from django.test import Client, override_settings

    with override_settings(CERTAUTH={"METRICS_ENABLED": True, "AUDIT_HANDLER": "certauth.audit.NullAuditHandler"}):
        response = Client(raise_request_exception=False).get(
            "/api/whoami/", HTTP_HOST="localhost", REMOTE_ADDR="127.0.0.1", HTTP_X_SSL_CLIENT_CERT="garbage",
            HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
        )
    print(response.status_code, response.json()["reason"])
    """
)


def test_a_missing_multiprocess_directory_does_not_break_the_api(tmp_path: Path) -> None:
    """Every request of a worker whose PROMETHEUS_MULTIPROC_DIR is missing was a 500 (FileNotFoundError from
    creating the counters on the authentication path): the API now answers as without metrics, and logs why."""
    environment = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "CERTAUTH_VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", API_WORKER], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["401", "malformed_certificate"]
    assert "PROMETHEUS_MULTIPROC_DIR" in result.stderr and "certauth.W022" in result.stderr


@override_settings(CERTAUTH={"METRICS_ENABLED": True})
def test_a_scrape_with_a_missing_multiprocess_directory_is_a_503_naming_the_fix(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scrape was a 500 (ValueError from prometheus-client's MultiProcessCollector)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    response = client.get(METRICS_URL, REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 503
    assert "PROMETHEUS_MULTIPROC_DIR" in response.json()["detail"] and "certauth.W022" in response.json()["detail"]


def test_the_metrics_command_with_a_missing_multiprocess_directory_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="PROMETHEUS_MULTIPROC_DIR"):
        call_command("certauth", "metrics", "--textfile", str(tmp_path / "certauth.prom"))
    assert not (tmp_path / "certauth.prom").exists()


# --- metrics: label values of operator-chosen names ---------------------------------------------------------------
def _exposition_samples(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


@pytest.mark.parametrize(
    ("masked", "masking"),
    [
        ("billing\u0085", "billing\\u0085"),  # a control character and its escape typed as text
        ("billing\U000e0001", "billing\ue0001"),  # a tag character and a private-use one followed by "1"
    ],
)
@override_settings(CERTAUTH={"METRICS_ENABLED": True})
def test_two_identity_names_never_give_one_series(masked: str, masking: str) -> None:
    """Two names written alike made a duplicate series: Prometheus keeps the first sample and drops the second,
    so an identity could be named to hide another identity's expiry from the alert."""
    now = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)
    for name, days in ((masked, 3), (masking, 300)):
        identity = CertificateIdentity.objects.create(name=name)
        register_thumbprint(identity, f"{days % 256:02x}" * 32, not_after=now + dt.timedelta(days=days))
    text = metrics.exposition(now=lambda: now).decode()
    series = [key for key in _exposition_samples(text) if key[0] == "certauth_identity_expiry_seconds"]
    assert len(series) == len(set(series)) == 2, text
    assert "\x85" not in text and "\U000e0001" not in text


def test_calendar_end_dates_keep_every_list_page_and_the_scrape(
    admin_client: Any, pki: FixturePKI, register: Any
) -> None:
    """Held: the lists, the entry's page, the dashboard, the audit and the scrape with year-1 and year-9999 dates."""
    entry = register(pki.issue("forever-service", not_after=FOREVER), identity="forever")
    identity = CertificateIdentity.objects.create(name="ancient")
    register_thumbprint(
        identity, "ee" * 32, not_after=FOREVER, not_before=dt.datetime(1, 1, 1, tzinfo=dt.UTC), label="ancient"
    )
    pages = [
        reverse("admin:certauth_registeredcertificate_changelist"),
        reverse("admin:certauth_registeredcertificate_changelist") + "?status=expiring",
        reverse("admin:certauth_registeredcertificate_change", args=[entry.pk]),
        reverse("admin:certauth_certificateidentity_changelist"),
        identity_url(identity),
        reverse("admin:index"),
        reverse("admin:app_list", args=["certauth"]),
        reverse("admin:certauth_registeredcertificate_add") + f"?predecessor={entry.pk}",
    ]
    for page in pages:
        assert admin_client.get(page).status_code == 200, page
    with override_settings(CERTAUTH={"METRICS_ENABLED": True}):
        scraped = admin_client.get(METRICS_URL, REMOTE_ADDR="127.0.0.1")
    assert scraped.status_code == 200 and b'certauth_identity_expiry_seconds{identity="forever"}' in scraped.content


# --- privilege: what the new widgets post --------------------------------------------------------------------------
def test_who_may_not_grant_cannot_tick_or_type_scopes_when_adding(
    client: Any, pki: FixturePKI, trusted_root: Any
) -> None:
    """Held: a scope ticked in the widget (``scopes_known``, even one no identity holds) or typed, by a user who
    may add identities and register but not grant, is ignored: the field is read-only, the identity has none."""
    CertificateIdentity.objects.create(name="admin-tool", scopes="admin:all")  # a known scope: a checkbox
    client.force_login(staff("add_certificateidentity", "view_certificateidentity", "add_registeredcertificate"))
    data = {
        **identity_data("sneaky", scopes="orders:write", pem_text=pki.client.cert_pem().decode()),
        "scopes_known": ["admin:all", "root:everything"],
    }
    response = client.post(reverse("admin:certauth_certificateidentity_add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    identity = CertificateIdentity.objects.get(name="sneaky")
    assert identity.scopes == "" and identity.certificates.get().thumbprint_sha256 == pki.client.thumbprint


def test_who_may_not_grant_cannot_tick_scopes_when_changing(client: Any) -> None:
    identity = CertificateIdentity.objects.create(name="billing", scopes="orders:read")
    client.force_login(staff("change_certificateidentity", "view_certificateidentity", "add_registeredcertificate"))
    data = {
        "name": "billing", "description": "x", "is_active": "on", "scopes": "admin:all",
        "scopes_known": ["admin:all"], "match_field": "", "match_pattern": "",
        "certificates-TOTAL_FORMS": "0", "certificates-INITIAL_FORMS": "0",
        "certificates-MIN_NUM_FORMS": "0", "certificates-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    response = client.post(identity_url(identity), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    identity.refresh_from_db()
    assert identity.scopes == "orders:read" and identity.description == "x"


def test_the_first_certificate_inline_is_ignored_without_the_register_permission(
    client: Any, pki: FixturePKI, trusted_root: Any
) -> None:
    """Held: the inline's fields posted anyway by a user who may add identities but not register."""
    client.force_login(staff("add_certificateidentity", "view_certificateidentity"))
    data = identity_data("plain", pem_text=pki.client.cert_pem().decode())
    assert client.post(reverse("admin:certauth_certificateidentity_add"), data).status_code == 302
    assert not RegisteredCertificate.objects.exists()


def test_a_hidden_predecessor_of_another_identity_is_refused(client: Any, pki: FixturePKI, register: Any) -> None:
    """Held: the successor page's hidden predecessor rewritten to another identity's entry."""
    victim = register(pki.client, identity="payments")
    mine = CertificateIdentity.objects.create(name="mine")
    client.force_login(staff("add_registeredcertificate", "view_registeredcertificate", "view_certificateidentity"))
    response = client.post(
        reverse("admin:certauth_registeredcertificate_add") + f"?predecessor={victim.pk}",
        {"identity": mine.pk, "predecessor": victim.pk, "label": "", "pem_text": pki.client2.cert_pem().decode()},
    )
    assert response.status_code == 200
    assert "A successor belongs to the same identity" in response.content.decode()
    assert not RegisteredCertificate.objects.filter(thumbprint_sha256=pki.client2.thumbprint).exists()
    assert not RegisteredCertificate.objects.filter(predecessor=victim).exists()


# --- metrics: who may scrape, and what a scrape costs ----------------------------------------------------------
@override_settings(CERTAUTH={"METRICS_ENABLED": True})
@pytest.mark.parametrize(
    "headers",
    [
        {"X-SSL-Client-Verify": "NONE"},  # what the shipped nginx sends without a client certificate
        {"X-Forwarded-For": "127.0.0.1"},  # a proxy claiming loopback
        {"Forwarded": "for=127.0.0.1"},
        {"X-Real-IP": "::1"},
    ],
)
def test_asgi_scrape_through_a_proxy_is_refused(headers: dict[str, str]) -> None:
    """Held, under ASGI (the AsyncClient's peer is 127.0.0.1, as uvicorn --proxy-headers makes it from a
    forwarded loopback address, keeping the headers): any proxy header refuses the scrape; OPTIONS is a 405."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    assert async_to_sync(AsyncClient().get)(METRICS_URL).status_code == 200  # the peer is loopback
    response = async_to_sync(AsyncClient().get)(METRICS_URL, headers=headers)
    assert response.status_code == 403 and b"certauth_" not in response.content
    assert async_to_sync(AsyncClient().options)(METRICS_URL).status_code == 405


@override_settings(CERTAUTH={"METRICS_ENABLED": True})
def test_a_scrape_costs_the_same_queries_for_one_identity_or_sixty(client: Any, django_assert_num_queries: Any) -> None:
    """Held: the registry gauges are aggregates, not a query per identity or authority."""
    now = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)

    def add(count: int, start: int) -> None:
        for number in range(start, start + count):
            identity = CertificateIdentity.objects.create(name=f"service-{number}")
            register_thumbprint(identity, f"{number:064x}", not_after=now + dt.timedelta(days=number))

    add(1, 1)
    with django_assert_num_queries(5) as one:
        metrics.exposition(now=lambda: now)
    add(59, 2)
    with django_assert_num_queries(len(one.captured_queries)):
        text = metrics.exposition(now=lambda: now).decode()
    assert text.count("certauth_identity_expiry_seconds{") == 60


# --- a refused certificate's subject, through "Register this certificate", into the new headings and warnings ----
def test_a_label_prefilled_from_a_hostile_subject_is_shown_spelled_out(
    admin_client: Any, api: Any, pki: FixturePKI, register: Any
) -> None:
    """The audit's "Register this certificate" prefills the label with the refused certificate's CN, which its
    holder chose.  The successor page's heading and predecessor, and the retire warning, showed its bidi override
    raw: "billing\u202e" reorders what follows it (the identity's name) on the page."""
    from certauth.models import AuthenticationFailure

    hostile = pki.issue("billing\u202enoitcudorp")
    assert api.get("/api/whoami/", hostile).status_code == 401
    failure = AuthenticationFailure.objects.get(thumbprint_sha256=hostile.thumbprint)
    form = admin_client.get(reverse("admin:certauth_registeredcertificate_add") + f"?from_failure={failure.pk}")
    label = form.context["adminform"].form.initial["label"]
    assert "\u202e" in label  # the client's text, as the prefill offers it
    entry = register(hostile, identity="payments", label=label)
    RegisteredCertificate.objects.filter(pk=entry.pk).update(last_used_at=dt.datetime.now(dt.UTC))
    pages = {
        "successor": admin_client.get(
            reverse("admin:certauth_registeredcertificate_add") + f"?predecessor={entry.pk}"
        ).content.decode(),
        "retire": admin_client.get(
            reverse("admin:certauth_registeredcertificate_retire", args=[entry.pk])
        ).content.decode(),
    }
    for name, html in pages.items():
        assert "billing\\u202enoitcudorp" in html, name
        assert "\u202e" not in html, name


# --- registration: typed dates beyond the calendar once in UTC -------------------------------------------------
@pytest.mark.parametrize(
    ("option", "when"), [("--not-after", "9999-12-31T23:59:59-01:00"), ("--not-before", "0001-01-01T00:00:00+01:00")]
)
def test_the_cli_refuses_a_typed_date_beyond_the_calendar_in_utc(trusted_root: Any, option: str, when: str) -> None:
    """`certauth register --thumbprint` with 9999-12-31T23:59:59-01:00 (year 10000 in UTC) was a traceback on
    SQLite (OverflowError) and, worse, stored on PostgreSQL: every later read of the row failed (DataError), the
    registry list, `certauth list`, the identity page and the scrape's gauges with it.  Refused now, nothing kept."""
    dates = {"--not-after": "9999-12-31T12:00:00Z", option: when}
    arguments = [item for pair in dates.items() for item in pair]
    with pytest.raises(CommandError, match=f"{option}: A certificate's dates lie between"):
        call_command("certauth", "register", "--identity", "edge", "--thumbprint", "ab" * 32, *arguments)
    assert not RegisteredCertificate.objects.exists() and not CertificateIdentity.objects.exists()


@override_settings(TIME_ZONE="America/New_York")
def test_the_admin_refuses_a_typed_date_beyond_the_calendar_in_utc(admin_client: Any, trusted_root: Any) -> None:
    """The admin reads dates in the project's TIME_ZONE: 9999-12-31 23:59 in New York is year 10000 in UTC."""
    identity = CertificateIdentity.objects.create(name="typed")
    response = admin_client.post(
        reverse("admin:certauth_registeredcertificate_add"),
        {
            "identity": identity.pk, "label": "", "thumbprint": "ab" * 32,
            "thumbprint_not_before_0": "", "thumbprint_not_before_1": "",
            "thumbprint_not_after_0": "9999-12-31", "thumbprint_not_after_1": "23:59:59",
        },
    )  # fmt: skip
    assert response.status_code == 200
    assert "A certificate&#x27;s dates lie between" in response.content.decode()
    assert not RegisteredCertificate.objects.exists()
    assert admin_client.get(identity_url(identity)).status_code == 200


def test_register_thumbprint_for_imports_refuses_a_date_beyond_the_calendar_too(trusted_root: Any) -> None:
    from django.core.exceptions import ValidationError

    identity = CertificateIdentity.objects.create(name="imported")
    beyond = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(-dt.timedelta(hours=1)))
    with pytest.raises(ValidationError, match="9999-12-31 in UTC"):
        register_thumbprint(identity, "ab" * 32, not_after=beyond)
    assert not RegisteredCertificate.objects.exists()
    assert list(RegisteredCertificate.objects.values_list("not_after", flat=True)) == []
