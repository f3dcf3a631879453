"""Supported Django versions (5.2 LTS, 6.0, 6.1): the reference project's settings and the app's overrides use
no deprecated Django feature on the installed version.  tests/conftest.py turns every Django deprecation class
into an error for the project's code during the tests; what is built before that hook runs (settings, models,
admin forms, URLconf) is built again here, in a fresh interpreter, under the same errors.  `make matrix` runs
this on every supported combination."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import django
import pytest
from django.contrib.admin.sites import site
from django.core import mail
from django.test import RequestFactory, override_settings

from certauth.models import RegisteredCertificate

from .conftest import django_deprecation_classes

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ROOT / "project" / "settings.py"


def deprecations_are_errors() -> None:
    """Inside ``warnings.catch_warnings()``: every Django deprecation raises, wherever it comes from."""
    for category in django_deprecation_classes():
        warnings.simplefilter("error", category)


def fresh_settings_module(monkeypatch: pytest.MonkeyPatch, **environ: str) -> ModuleType:
    """project/settings.py executed anew (not the cached module) with ``environ`` set."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("compat_settings_under_test", SETTINGS_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_deprecation_classes_are_found() -> None:
    """An empty list would make the errors filter (and this module) vacuous."""
    names = {category.__name__ for category in django_deprecation_classes()}
    assert names and all(name.startswith("Removed") for name in names)
    assert any(issubclass(c, PendingDeprecationWarning) for c in django_deprecation_classes()), names


# Run in a fresh interpreter: the settings, the models, the admin's forms and the URLconf are built once per
# process, before any test (and before tests/conftest.py's filters); here they are built under the errors.
SETUP_UNDER_ERRORS = """
import importlib, pkgutil, sys, warnings
from django.utils import deprecation
for name in dir(deprecation):
    if name.startswith("Removed"):
        warnings.simplefilter("error", getattr(deprecation, name))
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns
import certauth, project
modules = [
    info.name
    for package in (certauth, project)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
]
for name in modules:
    importlib.import_module(name)
from django.core.checks import run_checks
run_checks(include_deployment_checks=True, databases=[])
print("imported", len(modules), "modules")
"""


def test_setup_and_every_module_import_without_a_deprecation() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "ADMIN_EMAIL": "ops@example.test"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", SETUP_UNDER_ERRORS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count = int(done.stdout.split("imported ")[1].split()[0])
    assert count > 40, done.stdout  # the walk reached the app's and the project's modules


def test_admins_from_the_environment_receive_mail_without_a_deprecation(monkeypatch: pytest.MonkeyPatch) -> None:
    module = fresh_settings_module(monkeypatch, ADMIN_EMAIL="ops@example.test")
    assert module.ADMINS, "ADMIN_EMAIL must fill ADMINS"
    mail.outbox = []
    with warnings.catch_warnings(), override_settings(ADMINS=module.ADMINS):
        deprecations_are_errors()
        mail.mail_admins("subject", "body")
    [message] = mail.outbox
    assert message.to == ["ops@example.test"]


def test_a_crl_url_without_a_scheme_is_http_on_every_version(admin_user: Any) -> None:
    """The authority form on its own and as the admin builds it (with its own formfield callback)."""
    from certauth.admin.authorities import TrustedAuthorityForm
    from certauth.models import TrustedAuthority

    request = RequestFactory().get("/admin/certauth/trustedauthority/add/")
    request.user = admin_user
    with warnings.catch_warnings():
        deprecations_are_errors()
        admin_form = site._registry[TrustedAuthority].get_form(request)
        standalone = type("Standalone", (TrustedAuthorityForm,), {})
    for form in (admin_form, standalone):
        for name in ("crl_url", "ocsp_url"):
            assert form.base_fields[name].clean("crl.example.test/x") == "http://crl.example.test/x", (form, name)


def test_the_mail_backend_setting_matches_the_django_version(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = "django.core.mail.backends.locmem.EmailBackend"
    module = fresh_settings_module(monkeypatch, EMAIL_BACKEND=backend)
    if django.VERSION >= (6, 1):
        assert module.MAILERS == {"default": {"BACKEND": backend}} and not hasattr(module, "EMAIL_BACKEND")
    else:
        assert module.EMAIL_BACKEND == backend and not hasattr(module, "MAILERS")


@pytest.mark.django_db
def test_registry_admin_actions_without_a_deprecation(admin_user: Any) -> None:
    """The registry's get_actions override (no delete_selected) on the change list and, on Django 6.1, where
    actions may also appear on the change form."""
    model_admin = site._registry[RegisteredCertificate]
    request = RequestFactory().get("/admin/certauth/registeredcertificate/")
    request.user = admin_user
    locations: list[Any] = [None]
    if django.VERSION >= (6, 1):
        from django.contrib.admin import ActionLocation  # type: ignore[attr-defined]

        locations = list(ActionLocation)
    with warnings.catch_warnings():
        deprecations_are_errors()
        for location in locations:
            if location is None:
                actions = model_admin.get_actions(request)
                choices = model_admin.get_action_choices(request)
            else:
                actions = model_admin.get_actions(request, location)
                choices = model_admin.get_action_choices(request, action_location=location)
            assert "delete_selected" not in actions
            assert "delete_selected" not in {name for name, _ in choices}
    # Only deletion is withdrawn: revoking stays a change-list action.
    assert {"revoke_selected", "retire_selected"} <= set(model_admin.get_actions(request))
