"""The reference project's settings with CRL revocation on, for the CRL fault tests (gunicorn and manage.py
run with DJANGO_SETTINGS_MODULE=tests.e2e.settings_crl).  The policy knobs come from the environment."""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403
from project.settings import CERTAUTH, env_bool

CERTAUTH = {
    **CERTAUTH,
    "REVOCATION_MODE": "crl",
    "REVOCATION_FAIL_OPEN": env_bool("CERTAUTH_E2E_REVOCATION_FAIL_OPEN", False),
    "CRL_FETCH_TIMEOUT_SECONDS": float(os.environ.get("CERTAUTH_E2E_CRL_FETCH_TIMEOUT_SECONDS", "1")),
}
