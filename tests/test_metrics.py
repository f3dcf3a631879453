"""Prometheus metrics (certauth.metrics, docs/metrics.md): each series moves when its event happens, through
the real API with real certificates; the scrape URL's protection; several processes summed; the alert rules."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from asgiref.sync import async_to_sync
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.test import AsyncClient, Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from certauth import checks, devpki, metrics
from certauth.authorities import CrlFetchError, refresh_crl, store_crl
from certauth.models import CertificateIdentity
from certauth.reasons import Reason
from certauth.services import get_or_create_identity, register_thumbprint

from .conftest import escaped
from .pkitools import require_tool

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent
METRICS_DOC = REPO / "docs" / "metrics.md"
ON = {"METRICS_ENABLED": True}
#: A fixed instant for the scrape-time gauges (no test depends on the clock).
NOW = dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.UTC)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(now: dt.datetime | None = None) -> Samples:
    return parse(metrics.exposition(now=(lambda: now) if now else None).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def refused(samples: Samples, reason: Reason) -> float:
    return value(samples, "certauth_refused_total", reason=str(reason))


def refusal_counts(samples: Samples) -> dict[str, float]:
    return {str(reason): refused(samples, reason) for reason in Reason}


# --- counters, through the real API ---------------------------------------------------------------------
@override_settings(CERTAUTH=ON)
def test_an_accepted_request_moves_the_accepted_counter_and_the_histogram(api, pki, register) -> None:
    register(pki.client)
    before = scrape()
    assert api.get("/api/whoami/", pki.client).status_code == 200  # first sight: the full path
    assert api.get("/api/whoami/", pki.client).status_code == 200  # remembered: the warm path
    after = scrape()
    assert value(after, "certauth_accepted_total") - value(before, "certauth_accepted_total") == 2
    assert (
        value(after, "certauth_authentication_seconds_count") - value(before, "certauth_authentication_seconds_count")
        == 2
    )
    assert value(after, "certauth_authentication_seconds_sum") > value(before, "certauth_authentication_seconds_sum")
    assert refusal_counts(after) == refusal_counts(before)


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.async_urls")
@override_settings(CERTAUTH=ON)
def test_async_requests_count_once_each_whether_decided_in_a_thread_or_on_the_loop(pki, register) -> None:
    register(pki.client)
    headers = {"X-Real-IP": "203.0.113.7", "X-SSL-Client-Cert": escaped(pki.client), "X-SSL-Client-Verify": "SUCCESS"}
    client = AsyncClient()
    before = scrape()
    for _ in range(3):  # the first in one thread hop (evaluate), the next ones remembered, on the event loop
        assert async_to_sync(client.get)("/async/anything/", headers=headers).status_code == 200
    refusal = async_to_sync(client.get)("/async/anything/", headers={**headers, "X-SSL-Client-Cert": "garbage"})
    assert refusal.status_code == 401
    after = scrape()
    assert value(after, "certauth_accepted_total") - value(before, "certauth_accepted_total") == 3
    assert refused(after, Reason.MALFORMED_CERTIFICATE) - refused(before, Reason.MALFORMED_CERTIFICATE) == 1
    count = "certauth_authentication_seconds_count"
    assert value(after, count) - value(before, count) == 4


def _revoked(api: Any, pki: Any, register: Any) -> Any:
    register(pki.client).revoke("key_compromise")
    return api.get("/api/whoami/", pki.client)


def _disabled(api: Any, pki: Any, register: Any) -> Any:
    register(pki.client)
    CertificateIdentity.objects.get(name="billing").disable()
    return api.get("/api/whoami/", pki.client)


def _registered(issued_name: str, path: str = "/api/whoami/", **kwargs: Any) -> Any:
    def call(api: Any, pki: Any, register: Any) -> Any:
        issued = getattr(pki, issued_name)
        register(issued)
        return api.get(path, issued, **kwargs)

    return call


def _with(overrides: dict[str, Any], call: Any) -> Any:
    """``call`` with more CERTAUTH settings (metrics still on)."""

    def run(api: Any, pki: Any, register: Any) -> Any:
        with override_settings(CERTAUTH={**ON, **overrides}):
            return call(api, pki, register)

    return run


def _crl(revoked: bool) -> Any:
    def call(api: Any, pki: Any, register: Any) -> Any:
        from certauth.models import TrustedAuthority

        register(pki.client)
        if revoked:
            root = TrustedAuthority.objects.get(thumbprint_sha256=pki.root.thumbprint)
            crl = devpki.make_crl(pki.root, [pki.client.certificate.serial_number])
            store_crl(root, crl.public_bytes(serialization.Encoding.DER))
        return api.get("/api/whoami/", pki.client)

    return _with({"REVOCATION_MODE": "crl"}, call)


def _database_down(api: Any, pki: Any, register: Any) -> Any:
    from django.db import OperationalError
    from django.db.backends.utils import CursorWrapper

    register(pki.client)

    def database_down(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    with mock.patch.object(CursorWrapper, "execute", database_down):
        return api.get("/api/whoami/", pki.client)


REFUSALS = {
    Reason.MISSING_CERTIFICATE: lambda api, pki, register: api.get("/api/whoami/"),
    Reason.MALFORMED_CERTIFICATE: lambda api, pki, register: api.get("/api/whoami/", "not-a-certificate"),
    Reason.UNKNOWN_CERTIFICATE: lambda api, pki, register: api.get("/api/whoami/", pki.stranger),
    Reason.UNTRUSTED_PROXY: _registered("client", remote="198.51.100.9"),
    Reason.PROXY_VERIFICATION_FAILED: _registered("client", verify=None),
    Reason.CERTIFICATE_EXPIRED: _registered("expired"),
    Reason.CERTIFICATE_NOT_YET_VALID: _registered("not_yet_valid"),
    Reason.WRONG_USAGE: _registered("server_usage"),
    Reason.SELF_SIGNED_NOT_ALLOWED: _registered("self_signed"),
    Reason.UNTRUSTED_ISSUER: _registered("from_other_ca"),
    Reason.CERTIFICATE_REVOKED: _revoked,
    Reason.IDENTITY_DISABLED: _disabled,
    Reason.INSUFFICIENT_SCOPE: _registered("client", "/api/orders/"),
    Reason.CRL_REVOKED: _crl(revoked=True),
    Reason.CRL_UNAVAILABLE: _crl(revoked=False),
    Reason.CHAINED_NOT_ALLOWED: _with({"ALLOWED_CERTIFICATE_TYPES": "self_signed"}, _registered("client")),
    Reason.REGISTRY_UNAVAILABLE: _database_down,
    Reason.CROSS_SITE_REQUEST: lambda api, pki, register: (
        register(pki.client, scopes="orders:write"),
        api.post("/api/orders/", pki.client, data={"item": "w", "quantity": 1}, HTTP_ORIGIN="https://evil.example"),
    )[1],
}


@override_settings(CERTAUTH=ON)
@pytest.mark.parametrize("reason", list(REFUSALS), ids=str)
def test_each_refusal_moves_its_reason_and_no_other(api, pki, register, reason: Reason) -> None:
    before = scrape()
    response = REFUSALS[reason](api, pki, register)
    assert response.json()["reason"] == str(reason), response.content
    after = scrape()
    moved = {name: after_value - refusal_counts(before)[name] for name, after_value in refusal_counts(after).items()}
    assert moved == {str(other): (1.0 if other is reason else 0.0) for other in Reason}


@override_settings(CERTAUTH=ON)
def test_every_reason_is_exported_from_the_start_and_no_other_label_exists() -> None:
    families = {family.name: family for family in text_string_to_metric_families(metrics.exposition().decode())}
    labels = [sample.labels for sample in families["certauth_refused"].samples if sample.name.endswith("_total")]
    assert sorted(label["reason"] for label in labels) == sorted(str(reason) for reason in Reason)
    assert all(set(label) == {"reason"} for label in labels)  # no thumbprint, address or name
    assert not [sample for sample in families["certauth_accepted"].samples if sample.labels]


@override_settings(CERTAUTH={"METRICS_ENABLED": False})
def test_with_metrics_off_nothing_is_counted(api, pki, register) -> None:
    register(pki.client)
    before = scrape(NOW)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert api.get("/api/whoami/", pki.stranger).status_code == 401
    assert scrape(NOW) == before
    assert metrics.active() is None


def test_with_metrics_off_prometheus_client_is_never_imported(tmp_path) -> None:
    """A fresh process: start-up (checks, apps), a decided request, a refusal; prometheus-client stays unloaded."""
    script = textwrap.dedent(
        """
        import sys
        import django
        django.setup()
        from django.core.management import call_command
        from django.test import RequestFactory, override_settings
        from certauth.authenticator import evaluate

        call_command("check", verbosity=0)
        with override_settings(CERTAUTH={"AUDIT_HANDLER": "certauth.audit.NullAuditHandler"}):
            request = RequestFactory().get(
                "/", REMOTE_ADDR="127.0.0.1", HTTP_X_SSL_CLIENT_CERT="garbage", HTTP_X_SSL_CLIENT_VERIFY="SUCCESS"
            )
            assert evaluate(request).reason == "malformed_certificate"
        print(sorted(name for name in sys.modules if name.startswith("prometheus")))
        """
    )
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "CERTAUTH_VAR_DIR": str(tmp_path)}
    environment.pop("CERTAUTH_METRICS_ENABLED", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- scrape-time gauges --------------------------------------------------------------------------------
@override_settings(CERTAUTH=ON)
def test_a_registration_moves_the_registry_size() -> None:
    before = scrape(NOW)
    assert value(before, "certauth_registry_up") == 1
    identity, _ = get_or_create_identity("inventory")
    register_thumbprint(identity, "ab" * 32, not_after=NOW + dt.timedelta(days=200))
    register_thumbprint(identity, "cd" * 32, not_after=NOW - dt.timedelta(days=1))
    after = scrape(NOW)
    assert value(after, "certauth_registry_identities", state="active") == 1 + value(
        before, "certauth_registry_identities", state="active"
    )
    for state, added in (("live", 1), ("expired", 1), ("revoked", 0)):
        assert value(after, "certauth_registry_certificates", state=state) == added + value(
            before, "certauth_registry_certificates", state=state
        )
    identity.disable()
    disabled = scrape(NOW)
    assert value(disabled, "certauth_registry_identities", state="disabled") == 1
    assert ("certauth_identity_expiry_seconds", (("identity", "inventory"),)) not in disabled


@override_settings(CERTAUTH={**ON, "EXPIRY_WARNING_DAYS": 30})
def test_an_expiring_certificate_moves_the_expiry_gauges() -> None:
    identity, _ = get_or_create_identity("reports")
    register_thumbprint(identity, "01" * 32, not_after=NOW + dt.timedelta(days=90))
    before = scrape(NOW)
    assert value(before, "certauth_certificates_expiring") == 0
    assert value(before, "certauth_expiry_warning_days") == 30
    assert value(before, "certauth_identity_expiry_seconds", identity="reports") == 90 * 86400
    register_thumbprint(identity, "02" * 32, not_after=NOW + dt.timedelta(days=10, seconds=5))
    after = scrape(NOW)
    assert value(after, "certauth_certificates_expiring") == 1
    assert value(after, "certauth_identity_expiry_seconds", identity="reports") == 10 * 86400 + 5  # the soonest
    # Past both expiries: no live certificate left, the gauge says how long ago the last one expired.
    later = NOW + dt.timedelta(days=91)
    assert value(scrape(later), "certauth_identity_expiry_seconds", identity="reports") == -86400


@override_settings(CERTAUTH=ON)
def test_a_crl_refresh_moves_the_crl_age(pki, trusted_root) -> None:
    key = ("certauth_authority_crl_age_seconds", (("authority", "test root"),))
    assert key not in scrape(NOW)  # no CRL URL, no CRL held: nothing to age
    trusted_root.crl_url = "http://crl.example/root.crl"
    trusted_root.save()
    assert scrape(NOW)[key] == float("inf")  # a CRL URL, never fetched
    this_update = NOW - dt.timedelta(hours=5)
    crl = devpki.make_crl(pki.root, [], last_update=this_update, next_update=NOW + dt.timedelta(days=7))
    der = crl.public_bytes(serialization.Encoding.DER)
    store_crl(trusted_root, der, fetched_at=NOW - dt.timedelta(minutes=3))
    assert scrape(NOW)[key] == 180
    # A failed refresh writes its attempt time but keeps the CRL: the age is then the held CRL's own.
    result = refresh_crl(trusted_root, now=NOW - dt.timedelta(minutes=1), fetched=CrlFetchError("timed out"))
    assert not result.ok
    assert scrape(NOW)[key] == 5 * 3600


@override_settings(CERTAUTH=ON)
def test_names_from_the_registry_are_escaped_in_labels() -> None:
    hostile = 'evil"} 1\nfake_series 9 \u202e\x85<b>'
    identity = CertificateIdentity.objects.create(name=hostile)
    register_thumbprint(identity, "03" * 32, not_after=NOW + dt.timedelta(days=1))
    text = metrics.exposition(now=lambda: NOW).decode()
    assert "\nfake_series" not in text and "\u202e" not in text and "\x85" not in text
    samples = parse(text)
    label = 'evil"} 1\\u000afake_series 9 \\u202e\\u0085<b>'
    assert value(samples, "certauth_identity_expiry_seconds", identity=label) == 86400
    assert not [name for name, _ in samples if name.startswith("fake")]


@override_settings(CERTAUTH=ON)
def test_a_database_that_cannot_be_read_answers_registry_up_0_not_an_error(monkeypatch) -> None:
    from django.db import OperationalError
    from django.db.backends.utils import CursorWrapper

    def database_down(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", database_down)
    samples = scrape(NOW)
    monkeypatch.undo()
    assert value(samples, "certauth_registry_up") == 0
    assert ("certauth_certificates_expiring", ()) not in samples
    assert ("certauth_accepted_total", ()) in samples  # the counters still answer


# --- the scrape URL ------------------------------------------------------------------------------------
URL = "/-/certauth/metrics"


def test_the_url_is_404_while_metrics_are_off() -> None:
    assert Client().get(URL, REMOTE_ADDR="127.0.0.1").status_code == 404


@override_settings(CERTAUTH=ON)
@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "127.0.0.9", "::ffff:127.0.0.1"])
def test_loopback_default_serves_a_client_on_this_host(peer: str) -> None:
    response = Client().get(URL, REMOTE_ADDR=peer)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    assert value(parse(response.content.decode()), "certauth_registry_up") == 1


@override_settings(CERTAUTH=ON)
@pytest.mark.parametrize(
    "headers",
    [
        {"REMOTE_ADDR": "203.0.113.7"},
        {"REMOTE_ADDR": "unix:"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "203.0.113.7"},  # what the shipped nginx config adds
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=203.0.113.7"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_SSL_CLIENT_VERIFY": "NONE"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_CERTAUTH_PROXY_SECRET": "x"},
    ],
)
def test_loopback_default_refuses_everyone_else_and_anything_through_a_proxy(headers: dict[str, str]) -> None:
    response = Client().get(URL, **headers)
    assert response.status_code == 403
    assert "METRICS_ALLOW" in response.json()["detail"]
    assert b"certauth_" not in response.content


@override_settings(CERTAUTH={**ON, "METRICS_ALLOW": "scope"})
def test_scope_mode_serves_only_a_certificate_with_the_scope(api, pki, register) -> None:
    register(pki.client, identity="prometheus", scopes="metrics:read")
    register(pki.client2, identity="billing", scopes="orders:read")
    assert api.get(URL, pki.client).status_code == 200
    missing = api.get(URL, pki.client2)
    assert missing.status_code == 403 and missing.json()["reason"] == "insufficient_scope"
    anonymous = api.get(URL)
    assert anonymous.status_code == 401 and anonymous.json()["reason"] == "missing_certificate"
    # Direct from this host is no longer enough.
    assert Client().get(URL, REMOTE_ADDR="127.0.0.1").status_code == 401
    samples = scrape()
    assert refused(samples, Reason.INSUFFICIENT_SCOPE) >= 1


@pytest.mark.parametrize(
    "allow",
    [
        {"METRICS_ALLOW": "everyone"},
        {"METRICS_ALLOW": None},
        {"METRICS_ALLOW": "scope", "METRICS_SCOPE": ""},
        {"METRICS_ALLOW": "scope", "METRICS_SCOPE": ["metrics:read"]},
        # Identities hold scopes one by one: two in one setting, or one with a space, match no identity.
        {"METRICS_ALLOW": "scope", "METRICS_SCOPE": "metrics:read metrics:write"},
        {"METRICS_ALLOW": "scope", "METRICS_SCOPE": " metrics:read"},
    ],
)
def test_an_allow_setting_that_admits_no_one_refuses_everyone_and_warns(allow: dict[str, Any]) -> None:
    with override_settings(CERTAUTH={**ON, **allow}):
        response = Client().get(URL, REMOTE_ADDR="127.0.0.1")
        assert response.status_code == 403
        assert "admits no one" in response.json()["detail"]
        assert [m.id for m in checks.check_metrics()] == ["certauth.W021"]


@override_settings(CERTAUTH=ON)
def test_only_get_and_head() -> None:
    assert Client().post(URL, REMOTE_ADDR="127.0.0.1").status_code == 405
    assert Client().head(URL, REMOTE_ADDR="127.0.0.1").status_code == 200


@override_settings(CERTAUTH=ON)
def test_without_prometheus_client_the_url_says_how_to_fix_it_and_requests_still_work(
    api, pki, register, monkeypatch
) -> None:
    register(pki.client)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.setattr(metrics, "_generation", -1)
    response = Client().get(URL, REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 503
    assert "django-certauth[metrics]" in response.json()["detail"]
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert metrics.active() is None
    assert [m.id for m in checks.check_metrics()] == ["certauth.W021"]


# --- several processes -----------------------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import sys
    import django
    django.setup()
    from django.test import RequestFactory, override_settings
    from certauth.authenticator import evaluate

    with override_settings(CERTAUTH={"METRICS_ENABLED": True, "AUDIT_HANDLER": "certauth.audit.NullAuditHandler"}):
        for _ in range(int(sys.argv[1])):
            request = RequestFactory().get(
                "/api/whoami/", REMOTE_ADDR="127.0.0.1", HTTP_X_SSL_CLIENT_CERT="garbage",
                HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
            )
            assert evaluate(request).reason == "malformed_certificate"
    """
)


@pytest.mark.slow
@override_settings(CERTAUTH=ON)
def test_two_processes_counts_sum_in_the_exposition(tmp_path, monkeypatch) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    environment = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(count)], cwd=REPO, env=environment) for count in (3, 4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    assert len(list(directory.glob("*.db"))) >= 2  # one file per process
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    response = Client().get(URL, REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    samples = parse(response.content.decode())
    assert refused(samples, Reason.MALFORMED_CERTIFICATE) == 7
    assert value(samples, "certauth_authentication_seconds_count") == 7
    assert value(samples, "certauth_registry_up") == 1  # and the scrape-time gauges alongside


# --- the command line ---------------------------------------------------------------------------------
def test_textfile_for_node_exporter(tmp_path) -> None:
    identity, _ = get_or_create_identity("batch")
    register_thumbprint(identity, "04" * 32, not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    path = tmp_path / "certauth.prom"
    call_command("certauth", "metrics", "--textfile", str(path))
    samples = parse(path.read_text())
    assert value(samples, "certauth_registry_up") == 1
    assert value(samples, "certauth_registry_certificates", state="expired") == 1
    assert value(samples, "certauth_identity_expiry_seconds", identity="batch") < 0
    assert not [p for p in tmp_path.iterdir() if p.name != "certauth.prom"]  # no temporary file left behind


def test_textfile_refuses_a_name_node_exporter_ignores(tmp_path) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=r"\.prom"):
        call_command("certauth", "metrics", "--textfile", str(tmp_path / "certauth.txt"))
    with pytest.raises(CommandError, match="not a directory"):
        call_command("certauth", "metrics", "--textfile", str(tmp_path / "missing" / "certauth.prom"))


# --- system checks --------------------------------------------------------------------------------------
@override_settings(CERTAUTH=ON)
def test_w022_several_gunicorn_workers_without_a_multiprocess_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["/srv/.venv/bin/gunicorn", "-w", "3", "project.wsgi"])
    assert [m.id for m in checks.check_metrics()] == ["certauth.W022"]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert checks.check_metrics() == []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    assert [m.id for m in checks.check_metrics()] == ["certauth.W022"]
    monkeypatch.setattr(sys, "argv", ["/srv/.venv/bin/gunicorn", "project.wsgi"])
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert checks.check_metrics() == []  # one worker: nothing to sum


def test_no_metrics_check_while_metrics_are_off(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["gunicorn", "-w", "3", "project.wsgi"])
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")
    assert checks.check_metrics() == []


@pytest.mark.parametrize(
    ("argv", "environ", "workers"),
    [
        (["gunicorn", "project.wsgi"], {}, 1),
        (["gunicorn", "-w", "4", "project.wsgi"], {}, 4),
        (["gunicorn", "-w4", "project.wsgi"], {}, 4),
        (["gunicorn", "--workers=2", "project.wsgi"], {"WEB_CONCURRENCY": "8"}, 2),
        (["gunicorn", "project.wsgi"], {"GUNICORN_CMD_ARGS": "--bind 127.0.0.1:8000 --workers 5"}, 5),
        (["gunicorn", "project.wsgi"], {"WEB_CONCURRENCY": "3"}, 3),
        (["/usr/lib/python3/site-packages/gunicorn/__main__.py", "-w", "2", "app"], {}, 2),
        (["manage.py", "runserver"], {"WEB_CONCURRENCY": "3"}, None),
        (["uvicorn", "--workers", "4", "project.asgi:application"], {}, None),
    ],
)
def test_gunicorn_worker_count(argv: list[str], environ: dict[str, str], workers: int | None) -> None:
    assert checks.gunicorn_workers(argv, environ) == workers


# --- the documented alert rules --------------------------------------------------------------------------
def alert_rules() -> dict[str, Any]:
    text = METRICS_DOC.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    [rules] = [block for block in blocks if block.lstrip().startswith("groups:")]
    return yaml.safe_load(rules)  # type: ignore[no-any-return]


def test_the_alert_rules_parse_and_name_only_exported_series() -> None:
    document = alert_rules()
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} >= {
        "CertauthCertificateExpiring",
        "CertauthRefusalSpike",
        "CertauthCrlStale",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]"), expr
        named = set(re.findall(r"\bcertauth_[a-z_]+\b", expr))
        assert named and named <= set(metrics.SERIES), (rule["alert"], named - set(metrics.SERIES))
        assert rule["annotations"]["summary"]


@override_settings(CERTAUTH=ON)
def test_every_series_the_rules_may_name_is_really_exported(trusted_root) -> None:
    trusted_root.crl_url = "http://crl.example/root.crl"
    trusted_root.save()
    identity, _ = get_or_create_identity("exported")
    register_thumbprint(identity, "05" * 32, not_after=NOW + dt.timedelta(days=1))
    exported = {name for name, _ in scrape(NOW)}
    assert set(metrics.SERIES) <= exported


def test_promtool_accepts_the_rules_when_it_is_installed(tmp_path) -> None:
    require_tool("promtool")  # installed by scripts/install-system-deps.sh; a failure, not a skip, under make test
    promtool = shutil.which("promtool")
    assert promtool is not None
    path = tmp_path / "certauth-rules.yml"
    path.write_text(yaml.safe_dump(alert_rules()))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the benchmark does not rot ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@override_settings(CERTAUTH=ON)
def test_the_cost_benchmark_runs_and_counts(settings: Any) -> None:
    from bench import metrics_cost

    settings.ROOT_URLCONF = "bench.urls"
    before = value(scrape(), "certauth_accepted_total")
    lines = metrics_cost.measure(quick=True)
    assert lines[0] == "single process:" and any("on / off" in line for line in lines)
    assert value(scrape(), "certauth_accepted_total") > before  # the "on" scenario really counted


def test_the_alert_rules_fire_when_they_should_under_promtool(tmp_path) -> None:
    """promtool's rule unit tests on synthetic series: each alert fires for what it is about, and not for the
    neighbouring healthy series (an expiry 90 days out, a fresh CRL, a flood of missing_certificate)."""
    require_tool("promtool")  # installed by scripts/install-system-deps.sh; a failure, not a skip, under make test
    promtool = shutil.which("promtool")
    assert promtool is not None
    document = alert_rules()
    annotations = {rule["alert"]: rule["annotations"] for group in document["groups"] for rule in group["rules"]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    day = 24 * 60  # one sample a minute

    def alert(name: str, summary: str, **labels: str) -> dict[str, Any]:
        return {
            "exp_labels": labels,
            "exp_annotations": {**annotations[name], "summary": summary},
        }

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'certauth_identity_expiry_seconds{identity="soon"}', "values": "864000x180"},
                    {"series": 'certauth_identity_expiry_seconds{identity="later"}', "values": "7776000x180"},
                    {"series": "certauth_expiry_warning_days", "values": "30x180"},
                    {"series": 'certauth_authority_crl_age_seconds{authority="stale"}', "values": "14400x180"},
                    {"series": 'certauth_authority_crl_age_seconds{authority="fresh"}', "values": "600x180"},
                    {"series": "certauth_registry_up", "values": "1x90 0x90"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "90m",
                        "alertname": "CertauthCertificateExpiring",
                        "exp_alerts": [
                            alert(
                                "CertauthCertificateExpiring",
                                "Client certificate of soon expires in 10d 0h 0m 0s",
                                severity="warning",
                                identity="soon",
                            )
                        ],
                    },
                    {
                        "eval_time": "90m",
                        "alertname": "CertauthCrlStale",
                        "exp_alerts": [
                            alert(
                                "CertauthCrlStale",
                                "The CRL of stale has not been refreshed for 4h 0m 0s",
                                severity="critical",
                                authority="stale",
                            )
                        ],
                    },
                    {"eval_time": "90m", "alertname": "CertauthRegistryUnreadable", "exp_alerts": []},
                    {
                        "eval_time": "170m",
                        "alertname": "CertauthRegistryUnreadable",
                        "exp_alerts": [
                            alert(
                                "CertauthRegistryUnreadable",
                                annotations["CertauthRegistryUnreadable"]["summary"],
                                severity="critical",
                            )
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    # One refusal a minute for a day, then 600 a minute (10/s) for 30 minutes.
                    {
                        "series": 'certauth_refused_total{reason="unknown_certificate"}',
                        "values": f"0+1x{day} {day}+600x30",
                    },
                    # missing_certificate floods too (anonymous visits): never this alert.
                    {
                        "series": 'certauth_refused_total{reason="missing_certificate"}',
                        "values": f"0+1x{day} {day}+600x30",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": f"{day - 10}m", "alertname": "CertauthRefusalSpike", "exp_alerts": []},
                    {
                        "eval_time": f"{day + 30}m",
                        "alertname": "CertauthRefusalSpike",
                        "exp_alerts": [
                            alert(
                                "CertauthRefusalSpike",
                                "certauth refuses many requests: unknown_certificate at 10/s",
                                severity="warning",
                                reason="unknown_certificate",
                            )
                        ],
                    },
                ],
            },
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
