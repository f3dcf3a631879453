"""certauth's system checks: every id in certauth/checks.py has a configuration that raises it (and the
reference project's own configuration raises none), and ``manage.py check --deploy`` is clean with the
documented production settings (docs/deployment.md)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks
from django.test import override_settings

REPO = Path(__file__).resolve().parent.parent
CHECKS_SOURCE = REPO / "certauth" / "checks.py"

def static_checks(**kwargs: Any) -> list[Any]:
    """The checks that read configuration only, as plain ``manage.py check`` ran them before Django 6.1: that
    release runs the model checks against every database by default (SQLite's JSONField check opens a
    connection), and these tests have no database access.  ``databases=[]`` means no database on 5.2 to 6.1."""
    return run_checks(databases=[], **kwargs)


LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
REDIS = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/8"}
DB_CACHE = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "certauth_cache_table"}
FILE_CACHE = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": "/nonexistent/cache"}


def certauth_ids(
    *,
    debug: bool = False,
    caches: dict[str, Any] | None = None,
    rest: Any = None,
    use_tz: bool = True,
    **certauth: Any,
) -> set[str]:
    """The certauth check ids Django reports with the project's CERTAUTH updated by ``certauth``."""
    # As deployed (docs/deployment.md, `make run`): with a proxy secret, unless the case says otherwise.
    base = {"PROXY_SECRET": "a-proxy-secret-for-the-checks"}
    overrides: dict[str, Any] = {
        "CERTAUTH": {**base, **django_settings.CERTAUTH, **certauth},
        "DEBUG": debug,
        "USE_TZ": use_tz,
    }
    if caches is not None:
        overrides["CACHES"] = caches
    if rest is not None:
        overrides["REST_FRAMEWORK"] = rest
    with override_settings(**overrides):
        checks = static_checks(include_deployment_checks=True)
        return {message.id for message in checks if message.id and message.id.startswith("certauth.")}


# id -> settings that raise it (each applied on top of the project's configuration)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("certauth.E001", {"TRUSTED_PROXIES": ["not-an-address"]}),
    ("certauth.E002", {"CERTIFICATE_HEADER": "HTTP_X_SSL_CLIENT_CERT"}),
    ("certauth.E002", {"VERIFY_HEADER": "X-SSL_Client_Verify"}),
    ("certauth.E003", {"FORWARDING_FORMAT": "carrier-pigeon"}),
    ("certauth.E004", {"ALLOWED_CERTIFICATE_TYPES": "any"}),
    ("certauth.E005", {"REVOCATION_MODE": "ocsp-only"}),
    ("certauth.E006", {"REGISTRY_MAX_STALENESS_SECONDS": -1}),
    ("certauth.E007", {"CRL_FETCH_TIMEOUT_SECONDS": 0}),
    ("certauth.E008", {"TRUSTED_PROXY": ["127.0.0.1"]}),  # misspelt
    ("certauth.E014", {"_use_tz": False}),  # naive datetimes: every certificate request would be a 500
    ("certauth.E009", {"SHARED_CACHE_ALIAS": "no-such-cache"}),
    ("certauth.E009", {"AUDIT_ALERT_THRESHOLD": 10, "AUDIT_ALERT_CACHE_ALIAS": "no-such-cache"}),
    ("certauth.E010", {"AUDIT_HANDLER": "certauth.audit.NoSuchHandler"}),
    ("certauth.E011", {"SHARED_CACHE_ALIAS": "shared", "_caches": {"default": LOCMEM, "shared": DB_CACHE}}),
    ("certauth.E011", {"AUDIT_ALERT_THRESHOLD": 10, "_caches": {"default": FILE_CACHE}}),
    ("certauth.E010", {"AUDIT_HANDLER": "certauth.conf.settings"}),  # importable, but not a handler class
    ("certauth.W001", {"TRUSTED_PROXIES": []}),
    ("certauth.W002", {"TRUSTED_PROXIES": ["10.0.0.0/8"], "_debug": True}),
    ("certauth.W003", {"ALLOWED_CERTIFICATE_TYPES": "all"}),
    ("certauth.W004", {"_rest": {"EXCEPTION_HANDLER": "rest_framework.views.exception_handler"}}),
    ("certauth.W005", {"FORWARDING_FORMAT": "envoy_xfcc", "PROXY_VERIFIES_CERTIFICATE": True}),
    ("certauth.W006", {"SHARED_CACHE_ALIAS": "default", "_caches": {"default": LOCMEM}}),
    (
        "certauth.W006",
        {"AUDIT_ALERT_THRESHOLD": 10, "AUDIT_ALERT_CACHE_ALIAS": "default", "_caches": {"default": LOCMEM}},
    ),
    ("certauth.W007", {"TRUSTED_PROXIES": ["127.0.0.1", "0.0.0.0/0"]}),
    ("certauth.W007", {"TRUSTED_PROXIES": ["::/0"]}),
    ("certauth.W008", {"REVOCATION_MODE": "crl", "REVOCATION_FAIL_OPEN": True}),
    ("certauth.W009", {"VALIDATE_VALIDITY_PERIOD": False}),
    ("certauth.W009", {"VALIDATE_CERTIFICATE_USE": False}),
    ("certauth.W010", {"REGISTRY_MAX_STALENESS_SECONDS": 600}),
    # Loopback TCP without a proxy secret: every local process is "the proxy".
    ("certauth.W011", {"PROXY_SECRET": None, "TRUSTED_PROXIES": ["127.0.0.1", "::1"]}),
    ("certauth.E012", {"PROXY_SECRET": None, "PROXY_SECRET_FILE": "/nonexistent/certauth-proxy-secret"}),
    # A secret others know or can guess or read (attack review 2).
    ("certauth.E012", {"PROXY_SECRET": "REPLACE-with-the-content-of-CERTAUTH-PROXY_SECRET_FILE"}),
    ("certauth.E012", {"PROXY_SECRET": "changeme"}),
    ("certauth.E012", {"PROXY_SECRET": None, "_secret_file_mode": 0o644}),
    ("certauth.W012", {"PROXY_SECRET": None, "_secret_file_mode": 0o640}),
    # A process started as uvicorn with its default proxy headers, trusting the loopback proxy they rewrite.
    (
        "certauth.W015",
        {"TRUSTED_PROXIES": ["127.0.0.1"], "_argv": ["/srv/.venv/bin/uvicorn", "project.asgi:application"]},
    ),
    # Metrics that admit no scraper; several gunicorn workers without PROMETHEUS_MULTIPROC_DIR (tests/test_metrics.py).
    ("certauth.W021", {"METRICS_ENABLED": True, "METRICS_ALLOW": "everyone"}),
    ("certauth.W022", {"METRICS_ENABLED": True, "_argv": ["/srv/.venv/bin/gunicorn", "-w", "3", "project.wsgi"]}),
]


DEPLOYMENT_CHECKS = {
    f"certauth.{n}" for n in ("E009", "E010", "E011", "E012", "W006", "W007", "W008", "W009", "W010", "W011", "W012")
}


def _run(case: dict[str, Any]) -> set[str]:
    case = dict(case)
    folder = None
    if "_secret_file_mode" in case:  # a PROXY_SECRET_FILE with this mode, in a folder of its own
        folder = Path(tempfile.mkdtemp(prefix="certauth-checks-"))
        (folder / "proxy-secret").write_text(secrets.token_urlsafe(32))
        (folder / "proxy-secret").chmod(case.pop("_secret_file_mode"))
        case["PROXY_SECRET_FILE"] = str(folder / "proxy-secret")
    argv = case.pop("_argv", sys.argv)  # the command line the checking process was started with
    try:
        with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ):
            os.environ.pop("FORWARDED_ALLOW_IPS", None)
            return certauth_ids(
                debug=case.pop("_debug", False),
                caches=case.pop("_caches", None),
                rest=case.pop("_rest", None),
                use_tz=case.pop("_use_tz", True),
                **case,
            )
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def test_the_reference_project_raises_no_certauth_check() -> None:
    assert certauth_ids() == set()


@pytest.mark.parametrize(("check_id", "case"), CASES, ids=[f"{i}-{n}" for n, (i, _) in enumerate(CASES)])
def test_each_check_fires_for_its_misconfiguration(check_id: str, case: dict[str, Any]) -> None:
    assert check_id in _run(case)


# id -> stored identity rules (field, pattern) that raise it; these checks read the database.
DATABASE_CASES: list[tuple[str, list[tuple[str, str]]]] = [
    ("certauth.W013", [("dns_san", "billing-?.clients.example")]),  # a shell glob saved before the strict language
    ("certauth.W013", [("uri_san", "https://user@api.example/svc")]),
    ("certauth.W014", [("uri_san", "spiffe://prod.example/ns/billing/*")]),  # valid, but '*' now stops at '/'
]


def test_every_check_id_in_the_source_has_a_case() -> None:
    declared = set(re.findall(r'id="(certauth\.[EW]\d{3})"', CHECKS_SOURCE.read_text()))
    distribution = {"certauth.E013"}  # an installed distribution, not a setting: tests/test_distribution_clash.py
    distribution |= {"certauth.W016"}  # a stored trusted authority: tests/test_private_ca.py
    distribution |= {"certauth.W019"}  # a file and the stored authorities: tests/test_proxy_bundle.py
    assert declared == {check_id for check_id, _ in CASES} | {check_id for check_id, _ in DATABASE_CASES} | distribution


def _database_ids(rules: list[tuple[str, str]]) -> set[str]:
    from certauth.models import CertificateIdentity

    for number, (field, pattern) in enumerate(rules):
        # Saved without clean(): the way a row written by an earlier version sits in the database.
        CertificateIdentity.objects.create(name=f"rule-{number}", match_field=field, match_pattern=pattern)
    return {m.id for m in run_checks(databases=["default"]) if m.id and m.id.startswith("certauth.")}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("check_id", "rules"), DATABASE_CASES, ids=[f"{i}-{n}" for n, (i, _) in enumerate(DATABASE_CASES)]
)
def test_each_database_check_fires_for_its_stored_rule(check_id: str, rules: list[tuple[str, str]]) -> None:
    assert check_id in _database_ids(rules)


@pytest.mark.django_db
def test_exact_and_unstored_rules_raise_no_database_check() -> None:
    rule_checks = {"certauth.W013", "certauth.W014"}
    stored = [("subject_cn", "billing-service"), ("uri_san", "spiffe://prod.example/ns/billing/sa/api")]
    assert not _database_ids(stored) & rule_checks
    # Without a database (plain `manage.py check`) the rule checks do not run at all.
    assert not {m.id for m in run_checks() if m.id in rule_checks}


@pytest.mark.parametrize(
    "case",
    [
        # A shared cache (Redis) for both: no W006.
        {
            "SHARED_CACHE_ALIAS": "shared",
            "AUDIT_ALERT_THRESHOLD": 10,
            "AUDIT_ALERT_CACHE_ALIAS": "shared",
            "_caches": {"default": LOCMEM, "shared": REDIS},
        },
        # Alerts off: the local-memory default alias is never used for counters.
        {"AUDIT_ALERT_THRESHOLD": None, "_caches": {"default": LOCMEM}},
        # Fail-open and switched-off validation are development conveniences: no warning with DEBUG on.
        {"REVOCATION_MODE": "crl", "REVOCATION_FAIL_OPEN": True, "VALIDATE_VALIDITY_PERIOD": False, "_debug": True},
        {"TRUSTED_PROXIES": ["10.0.0.0/8", "192.0.2.10"], "REGISTRY_MAX_STALENESS_SECONDS": 0},
        {"AUDIT_HANDLER": "certauth.audit.NullAuditHandler"},
        # Only the unix socket (file permissions say who the proxy is): no secret needed.
        {"PROXY_SECRET": None, "TRUSTED_PROXIES": ["unix:"]},
        # A proxy secret file of ours, 0600.
        {"PROXY_SECRET": None, "_secret_file_mode": 0o600},
    ],
    ids=[
        "redis-shared",
        "alerts-off",
        "debug-conveniences",
        "private-proxies-strict",
        "null-audit",
        "unix-socket",
        "private-secret-file",
    ],
)
def test_sound_configurations_raise_none_of_the_deployment_checks(case: dict[str, Any]) -> None:
    assert _run(case) & DEPLOYMENT_CHECKS == set()


# --- manage.py check --deploy ----------------------------------------------------------------------------


def production_env(tmp_path: Path) -> dict[str, str]:
    """The production settings documented in docs/deployment.md ("Production settings")."""
    test_only = {"DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {key: value for key, value in os.environ.items() if key not in test_only}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "CERTAUTH_VAR_DIR": str(tmp_path),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "api.example.com",
            "SECURE_HSTS_SECONDS": "31536000",
            "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
            "SECURE_HSTS_PRELOAD": "true",
            "SECURE_SSL_REDIRECT": "true",
            "CERTAUTH_PROXY_SECRET_FILE": str(tmp_path / "proxy-secret"),
            # Django 6.1's check --deploy refuses the console backend, the development default (mail.E001).
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        }
    )
    (tmp_path / "proxy-secret").write_text(secrets.token_urlsafe(32) + "\n")
    (tmp_path / "proxy-secret").chmod(0o600)  # as docs/deployment.md says (0644 would be certauth.E012)
    return env


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path: Path) -> None:
    result = _check_deploy(production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_fails_without_them(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    for name in ("SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT"):
        env.pop(name)
    result = _check_deploy(env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout and "security.W008" in result.stderr + result.stdout


def test_check_deploy_reports_certauth_misconfiguration(tmp_path: Path) -> None:
    env = production_env(tmp_path) | {"CERTAUTH_ALLOWED_CERTIFICATE_TYPES": "all"}
    result = _check_deploy(env)
    assert result.returncode != 0
    assert "certauth.W003" in result.stderr + result.stdout


def test_the_proxy_secret_warning_belongs_to_check_deploy() -> None:
    """W011 speaks about the server's deployment: `manage.py check --deploy` says it, plain commands (the CLI
    used next to `make run`, whose stack has a unix socket and a secret) do not repeat it."""
    certauth = {**django_settings.CERTAUTH, "PROXY_SECRET": None, "TRUSTED_PROXIES": ["127.0.0.1", "::1"]}
    with override_settings(CERTAUTH=certauth, DEBUG=False):
        plain = {message.id for message in static_checks()}
        deploy = {message.id for message in static_checks(include_deployment_checks=True)}
    assert "certauth.W011" not in plain
    assert "certauth.W011" in deploy
