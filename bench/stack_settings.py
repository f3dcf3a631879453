"""Settings for gunicorn in the end-to-end section: the reference project's, plus the bench-only URLs
(``/bench/open-whoami/``, the unauthenticated twin of ``/api/whoami/``)."""

from __future__ import annotations

from project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
