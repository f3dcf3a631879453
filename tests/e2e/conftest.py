"""The end-to-end fixture: real nginx (mutual TLS) in front of real gunicorn (2 workers), a dev PKI made
by certauth.devpki, and a fresh database (SQLite file, or PostgreSQL in the PostgreSQL pass), per nginx mode."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from certauth.client import requests_session
from certauth.devpki import DevPKI, create_dev_pki
from scripts.stack import REPO, Stack, find_nginx, trust_dev_authorities

# The e2e tests drive separate processes; they need no Django test database.


@dataclass
class E2EStack:
    stack: Stack
    pki: DevPKI
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def url(self, path: str) -> str:
        return self.base_url + path

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``manage.py <args>`` against the stack's database."""
        result = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(f"manage.py {command} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def session(self, name: str | None) -> requests.Session:
        """A requests session presenting dev PKI certificate ``name`` (None: no certificate)."""
        ca = self.pki.path("ca")
        if name is None:
            return requests_session(ca=ca)
        return requests_session(cert=self.pki.path(name), key=self.pki.path(name, "key"), ca=ca)


@pytest.fixture(scope="session", params=["on", "optional", "optional_no_ca"])
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    """The stack in each nginx mode: ``on`` (nginx verifies against the CA bundle and lets nothing through
    without a certificate), ``optional`` (what ``make run`` uses: nginx verifies a certificate when one
    comes) and ``optional_no_ca`` (certauth verifies the chain; CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false)."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    mode = request.param
    base = tmp_path_factory.mktemp(f"e2e-{mode}")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with contextlib.ExitStack() as resources:
        # The suite's database kind: a fresh SQLite file, or in the PostgreSQL pass of scripts/run-tests.sh a
        # fresh PostgreSQL database (created here, dropped at the end).
        if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
            from .support import POSTGRES_HOST, POSTGRES_PORT, postgres_database  # support imports this module

            name = resources.enter_context(postgres_database(prefix=f"certauth_e2e_{mode.replace('_', '')}"))
            database_url = f"postgres://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
        else:
            database_url = f"sqlite:///{var / 'e2e.sqlite3'}"
        yield from _run_stack(mode, pki, var, database_url)


@contextlib.contextmanager
def database_for(var: Path, prefix: str) -> Iterator[str]:
    """The suite's database kind for one stack: a fresh SQLite file in ``var``, or in the PostgreSQL pass a
    fresh PostgreSQL database (dropped afterwards)."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        from .support import POSTGRES_HOST, POSTGRES_PORT, postgres_database

        with postgres_database(prefix=prefix) as name:
            yield f"postgres://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    else:
        yield f"sqlite:///{var / 'e2e.sqlite3'}"


def uvicorn_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, mode: str = "optional", **options: Any
) -> Iterator[E2EStack]:
    """One nginx -> uvicorn stack (``project.asgi``), for a module-scoped fixture; skips without nginx or
    uvicorn (``pip install -e '.[server]'``)."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed: pip install -e '.[server]'")
    base = tmp_path_factory.mktemp(name)
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    with database_for(var, f"certauth_e2e_{name.replace('-', '')}") as database_url:
        yield from _run_stack(mode, pki, var, database_url, server="uvicorn", **options)


def _run_stack(
    mode: str,
    pki: DevPKI,
    var: Path,
    database_url: str,
    prepare: Callable[[E2EStack], None] | None = None,
    **options: Any,
) -> Iterator[E2EStack]:
    """The stack, migrated, trusting the dev CAs, with demo-client registered; ``options`` go to ``Stack``
    (``server="uvicorn"``, ``upstream``, ``server_args``).  ``prepare(handle)`` runs just before nginx and the
    server start (more ``manage.py`` steps: nothing a worker could have cached yet)."""
    stack = Stack(
        var,
        pki_dir=pki.out_dir,
        port=0,
        mode=mode,
        env={
            "DATABASE_URL": database_url,
            "CERTAUTH_VAR_DIR": str(var),
            "SECRET_KEY": "e2e-not-secret",
            "DEBUG": "false",
        },
        **{"workers": 2, **options},
    )
    handle = E2EStack(stack=stack, pki=pki, env=stack.env)
    handle.manage("migrate", "--noinput", "--verbosity", "0")
    trust_dev_authorities(handle.env, pki.out_dir)
    handle.manage(
        "certauth", "register", "--identity", "demo-client", "--cert", str(pki.path("client")), "--scope", "orders:read"
    )
    if prepare is not None:
        prepare(handle)
    with stack:
        yield handle
