"""Faults through the real stack (nginx mTLS -> gunicorn, 2 workers): the database, the shared cache and a
CRL distribution point going away.  certauth fails closed with a reason (never 200 past the registry
staleness bound, never a 500 or a traceback), recovers by itself, and never hangs a request.

Outages are made with a TCP relay on a loopback port (``support.TcpRelay``) between gunicorn and the real
PostgreSQL / Redis: closing the relay is the service going down, reopening it is the service coming back.
The machine's own PostgreSQL and Redis are never stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from scripts.stack import REPO

from .conftest import E2EStack
from .support import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    ClientCert,
    SilentServer,
    TcpRelay,
    audit_counts,
    dev_client,
    make_stack,
    port_answers,
    postgres_database,
    require_postgres,
    setup_registry,
)

pytestmark = pytest.mark.e2e

#: The stack's CERTAUTH_REGISTRY_MAX_STALENESS_SECONDS (the project's default).
STALENESS_BOUND = 1.0
#: Scheduling slack on top of the bound for "sent after the bound" (same monotonic clock in all processes).
SLACK = 0.1


def _get(e2e: E2EStack, cert: ClientCert | None, path: str = "/api/whoami/") -> requests.Response:
    """One request on a fresh TLS connection (so it may land on either worker)."""
    ca = e2e.pki.path("ca")
    with cert.session(ca) if cert else e2e.session(None) as session:
        return session.get(e2e.url(path), timeout=10)


def _burst(e2e: E2EStack, cert: ClientCert, count: int = 8, path: str = "/api/whoami/") -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: _get(e2e, cert, path), range(count)))


def _reason(response: requests.Response) -> str:
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[:300]
    return str(response.json()["reason"])


# --------------------------------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_behind_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[E2EStack, TcpRelay]]:
    """The stack on a PostgreSQL database of its own, reached through a relay the test can close."""
    require_postgres()
    with postgres_database() as name, TcpRelay(POSTGRES_HOST, POSTGRES_PORT) as relay:
        e2e = make_stack(
            tmp_path_factory.mktemp("faults-db"),
            database_url=f"postgres://postgres@127.0.0.1:{relay.port}/{name}",
            # Persistent connections, as in production: the outage must also cut connections already open.
            env={"CONN_MAX_AGE": "60"},
        )
        setup_registry(e2e, [("fault-client", dev_client(e2e.pki, "client"), ["orders:read"])])
        with e2e.stack:
            yield e2e, relay


def test_database_outage_fails_closed_with_503_and_recovers_by_itself(
    pg_behind_relay: tuple[E2EStack, TcpRelay],
) -> None:
    e2e, relay = pg_behind_relay
    client = dev_client(e2e.pki, "client")
    # Both workers have answered (and cached the decision) before the outage.
    assert [r.status_code for r in _burst(e2e, client)] == [200] * 8

    relay.close()  # cuts every open connection, refuses new ones
    down_at = time.monotonic()
    during: list[tuple[float, requests.Response]] = []
    judge_from = down_at + STALENESS_BOUND + SLACK
    # Until enough requests were sent after the bound to judge (a count, not a time window: a busy machine
    # serves fewer requests per second), with a generous cap so a hang still ends the test.
    while sum(1 for sent, _ in during if sent > judge_from) < 5 and time.monotonic() < down_at + 120:
        sent = time.monotonic()
        path = "/api/orders/" if len(during) % 2 else "/api/whoami/"
        during.append((sent, _get(e2e, client, path)))

    statuses = [response.status_code for _, response in during]
    assert set(statuses) <= {200, 503}, statuses  # never a 500, never another refusal
    after_bound = [response for sent, response in during if sent > judge_from]
    assert len(after_bound) >= 5, "too few requests after the staleness bound to judge"
    assert [r.status_code for r in after_bound] == [503] * len(after_bound)
    for response in after_bound:
        assert _reason(response) == "registry_unavailable"
        body = response.text.lower()
        # Fails closed without leaking the database error or a traceback.
        assert "traceback" not in body and "psycopg" not in body and "connection" not in body, body

    relay.open()
    up_at = time.monotonic()
    recovered = None
    while time.monotonic() < up_at + 30:
        if _get(e2e, client).status_code == 200:
            recovered = time.monotonic() - up_at
            break
        time.sleep(0.1)
    assert recovered is not None, f"no 200 within 30 s of the database coming back\n{e2e.stack.logs()}"
    # Every worker is back, without a restart.
    assert [r.status_code for r in _burst(e2e, client, count=12)] == [200] * 12
    print(f"\ndatabase outage: {len(during)} requests, {statuses.count(503)} x 503, recovered after {recovered:.2f} s")


# --------------------------------------------------------------------------------------------------
# The shared cache (Redis)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_behind_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[E2EStack, TcpRelay]]:
    if not port_answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT}")
    with TcpRelay(REDIS_HOST, REDIS_PORT) as relay:
        e2e = make_stack(
            tmp_path_factory.mktemp("faults-cache"),
            env={"REDIS_URL": f"redis://127.0.0.1:{relay.port}/{REDIS_DB}"},
        )
        pki = e2e.pki
        setup_registry(
            e2e,
            [
                ("cache-client", dev_client(pki, "client"), ["orders:read"]),
                ("cache-victim", dev_client(pki, "client2"), ["orders:read"]),
            ],
        )
        with e2e.stack:
            yield e2e, relay


def test_shared_cache_outage_falls_back_to_the_database(redis_behind_relay: tuple[E2EStack, TcpRelay]) -> None:
    e2e, relay = redis_behind_relay
    pki = e2e.pki
    client, victim, stranger = (dev_client(pki, name) for name in ("client", "client2", "unregistered"))
    configured = e2e.manage(
        "shell", "--no-imports", "-c", "from certauth.conf import settings; print(settings.SHARED_CACHE_ALIAS)"
    )
    assert configured.stdout.strip() == "shared"  # REDIS_URL did configure the shared cache

    assert [r.status_code for r in _burst(e2e, client)] == [200] * 8
    assert [r.status_code for r in _burst(e2e, victim)] == [200] * 8

    relay.close()  # Redis unreachable: connections cut, port closed
    assert [r.status_code for r in _burst(e2e, client)] == [200] * 8
    assert {_reason(r) for r in _burst(e2e, stranger, count=4)} == {"unknown_certificate"}
    # A revocation made while the cache is down is still seen: decisions come from the database.
    e2e.manage("certauth", "revoke", "--thumbprint", victim.thumbprint, "--reason", "key_compromise")
    time.sleep(STALENESS_BOUND + SLACK)
    refused = _burst(e2e, victim)
    assert [r.status_code for r in refused] == [401] * 8
    assert {_reason(r) for r in refused} == {"certificate_revoked"}

    relay.open()  # back: still correct, nothing stale resurfaces from the cache
    assert [r.status_code for r in _burst(e2e, client)] == [200] * 8
    assert {_reason(r) for r in _burst(e2e, victim, count=4)} == {"certificate_revoked"}
    counts = audit_counts(e2e)
    assert counts[("certificate_revoked", victim.thumbprint)] == 12
    assert counts[("unknown_certificate", stranger.thumbprint)] == 4


# --------------------------------------------------------------------------------------------------
# A CRL distribution point that hangs or is unreachable
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["fail-closed", "fail-open"])
def crl_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[E2EStack, SilentServer, bool]]:
    """REVOCATION_MODE = "crl" (tests.e2e.settings_crl); the root CA's CRL URL points at a server that
    accepts connections and never answers."""
    fail_open: bool = request.param
    server = SilentServer()
    try:
        e2e = make_stack(
            tmp_path_factory.mktemp("faults-crl"),
            env={
                "DJANGO_SETTINGS_MODULE": "tests.e2e.settings_crl",
                "CERTAUTH_E2E_REVOCATION_FAIL_OPEN": str(fail_open).lower(),
                "CERTAUTH_E2E_CRL_FETCH_TIMEOUT_SECONDS": "1",
            },
        )
        setup_registry(
            e2e, [("crl-client", dev_client(e2e.pki, "client"), ["orders:read"])], crl_url=server.url("/root.crl")
        )
        with e2e.stack:
            yield e2e, server, fail_open
    finally:
        server.close()


def _crl_refresh(e2e: E2EStack) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    # The subprocess timeout is the hang detector: without a bounded fetch this would never return.
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "certauth", "crl-refresh", "--force"],
        cwd=REPO,
        env=e2e.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - started


def test_crl_url_hanging_or_unreachable_is_bounded_and_applies_the_policy(
    crl_stack: tuple[E2EStack, SilentServer, bool],
) -> None:
    e2e, server, fail_open = crl_stack
    pki = e2e.pki
    client, revoked_by_crl = dev_client(pki, "client"), dev_client(pki, "crl-revoked")

    # 1. The distribution point accepts the connection and never answers: the fetch times out.
    result, hung_for = _crl_refresh(e2e)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED dev root CA" in result.stderr and "timed out" in result.stderr, result.stderr
    assert server.connections >= 1

    # No CRL for the root: requests are answered at once, per policy, never held up by the CRL URL.
    responses = _burst(e2e, client)
    if fail_open:
        assert [r.status_code for r in responses] == [200] * 8
    else:
        assert [r.status_code for r in responses] == [401] * 8
        assert {_reason(r) for r in responses} == {"crl_unavailable"}
    # Both policies leave a crl_unavailable audit trail (fail-open: "Accepted (REVOCATION_FAIL_OPEN) ...").
    assert audit_counts(e2e)[("crl_unavailable", client.thumbprint)] >= (1 if fail_open else 8)

    # 2. It answers with something that is not a CRL: refused as such, nothing stored.
    server.answer_with(b"<html>proxy error</html>")
    result, _ = _crl_refresh(e2e)
    assert result.returncode == 1 and "not a CRL" in result.stderr, result.stderr

    # 3. It comes back with the real CRL: revocation by CRL works, the rest is accepted again.
    server.answer_with(pki.crl.read_bytes())
    result, _ = _crl_refresh(e2e)
    assert result.returncode == 0, result.stdout + result.stderr
    time.sleep(STALENESS_BOUND + SLACK)
    assert [r.status_code for r in _burst(e2e, client)] == [200] * 8
    assert {_reason(r) for r in _burst(e2e, revoked_by_crl, count=4)} == {"crl_revoked"}

    # 4. Unreachable (closed port): fails fast, the stored CRL stays in force.
    server.close()
    result, _ = _crl_refresh(e2e)
    assert result.returncode == 1 and "FAILED dev root CA" in result.stderr, result.stderr
    assert [r.status_code for r in _burst(e2e, client, count=4)] == [200] * 4
    assert {_reason(r) for r in _burst(e2e, revoked_by_crl, count=2)} == {"crl_revoked"}
    print(f"\nCRL fetch against a silent server gave up after {hung_for:.2f} s (timeout 1 s + Django start)")
