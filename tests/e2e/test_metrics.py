"""Metrics through the real stack: nginx (mutual TLS) in front of gunicorn with 2 workers in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), as docs/metrics.md deploys it.  The counts of both workers sum
in one scrape; the default loopback-only URL answers gunicorn's own address and refuses anything through nginx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from certauth.devpki import create_dev_pki
from scripts.stack import find_nginx

from .conftest import E2EStack, _run_stack, database_for

pytestmark = pytest.mark.e2e

PATH = "/-/certauth/metrics"


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[E2EStack, Path]]:
    if find_nginx() is None:
        pytest.skip("nginx is not installed: `make test` installs it (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp("e2e-metrics")
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir()
    directory = base / "prometheus"
    directory.mkdir(mode=0o700)
    with database_for(var, "certauth_e2e_metrics") as database_url:
        # Only gunicorn's environment (the stack copies this process's at start): this test process stays as it was.
        with mock.patch.dict(
            os.environ, {"CERTAUTH_METRICS_ENABLED": "true", "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        ):
            running = _run_stack("optional", pki, var, database_url, upstream="tcp")
            handle = next(running)
        try:
            yield handle, directory
        finally:
            running.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def direct(e2e: E2EStack) -> requests.Response:
    """Straight to gunicorn from this host, as a local Prometheus or agent would scrape."""
    return requests.get(f"http://127.0.0.1:{e2e.stack.gunicorn_ports[0]}{PATH}", timeout=30)


def test_both_workers_counts_sum_in_one_scrape(metrics_stack: tuple[E2EStack, Path]) -> None:
    e2e, directory = metrics_stack
    before = samples(direct(e2e).text)
    client, stranger = e2e.session("client"), e2e.session("unregistered")
    sent = 0
    # Until both workers have counted something (each writes its own files, named by its pid).
    while len({path.name.rsplit("_", 1)[-1] for path in directory.glob("counter_*.db")}) < 2 or sent < 20:
        assert sent < 400, f"one worker answered every request: {sorted(p.name for p in directory.iterdir())}"
        # gunicorn's sync workers close each connection: either worker may accept the next one.
        assert client.get(e2e.url("/api/whoami/"), timeout=30).status_code == 200
        assert stranger.get(e2e.url("/api/whoami/"), timeout=30).status_code == 401
        sent += 1
    after = samples(direct(e2e).text)
    accepted = after[("certauth_accepted_total", ())] - before.get(("certauth_accepted_total", ()), 0)
    unknown = ("certauth_refused_total", (("reason", "unknown_certificate"),))
    assert accepted == sent
    assert after[unknown] - before.get(unknown, 0) == sent
    assert after[("certauth_registry_identities", (("state", "active"),))] == 1  # demo-client, read at scrape time


def test_the_loopback_default_refuses_the_scrape_through_nginx(metrics_stack: tuple[E2EStack, Path]) -> None:
    e2e, _ = metrics_stack
    client = e2e.session("client")
    for session in (client, e2e.session(None)):
        response = session.get(e2e.url(PATH), timeout=30)
        assert response.status_code == 403, response.text
        assert "certauth_" not in response.text
    assert direct(e2e).status_code == 200
