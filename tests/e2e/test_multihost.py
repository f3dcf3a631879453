"""Several application hosts: two gunicorn instances on different loopback ports in one nginx upstream,
sharing one PostgreSQL database (and, in one variant, a Redis cache as CERTAUTH's SHARED_CACHE_ALIAS).
A registry change made anywhere (here: ``manage.py`` as an operator would) is seen by both hosts within the
staleness bound -- in strict mode (bound 0) on the very next request -- and one host going down costs no
request.

Each host is asked directly as well as through nginx: from 127.0.0.1 (a trusted proxy) with the headers
nginx sends, so the test knows which host answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from .conftest import E2EStack
from .support import (
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    ClientCert,
    Load,
    LoadClient,
    dev_client,
    issue_clients,
    make_stack,
    port_answers,
    postgres_database,
    require_postgres,
    setup_registry,
    summarize,
)

pytestmark = pytest.mark.e2e

SLACK = 0.1


class Hosts:
    def __init__(self, e2e: E2EStack, bound: float) -> None:
        self.e2e = e2e
        self.bound = bound

    @property
    def ports(self) -> list[int]:
        return self.e2e.stack.gunicorn_ports

    def ask(self, port: int, cert: ClientCert) -> tuple[int, str]:
        """What the host on ``port`` answers for ``cert`` (sent as nginx forwards it)."""
        response = requests.get(
            f"http://127.0.0.1:{port}/api/whoami/",
            headers={
                "X-SSL-Client-Cert": quote(cert.cert.read_text(), safe=""),
                "X-SSL-Client-Verify": "SUCCESS",
                # As nginx sends it: certauth believes the certificate header only with the proxy secret.
                "X-Certauth-Proxy-Secret": self.e2e.stack.proxy_secret,
                "X-Forwarded-Proto": "https",
                "Host": "localhost",
            },
            timeout=10,
        )
        reason = "" if response.status_code == 200 else str(response.json()["reason"])
        return response.status_code, reason

    def everywhere(self, cert: ClientCert) -> set[tuple[int, str]]:
        return {self.ask(port, cert) for port in self.ports}

    def settle(self) -> None:
        """Wait out the staleness bound (nothing in strict mode)."""
        if self.bound:
            time.sleep(self.bound + SLACK)


@pytest.fixture(
    scope="module",
    params=[("none", "1"), ("redis", "0")],
    ids=["postgresql-bound-1s", "postgresql+redis-strict"],
)
def hosts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    cache, bound = request.param
    require_postgres()
    env = {"CERTAUTH_REGISTRY_MAX_STALENESS_SECONDS": bound}
    if cache == "redis":
        if not port_answers(REDIS_HOST, REDIS_PORT):
            pytest.skip(f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT}")
        env["REDIS_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    with postgres_database() as name:
        e2e = make_stack(
            tmp_path_factory.mktemp(f"hosts-{cache}"),
            database_url=f"postgres://postgres@127.0.0.1:5432/{name}",
            workers=1,
            gunicorn_instances=2,
            env=env,
            upstream="tcp",  # the tests ask each host directly, as another proxy would
        )
        setup_registry(
            e2e,
            [
                ("steady", dev_client(e2e.pki, "client"), ["orders:read"]),
                ("via-intermediate", dev_client(e2e.pki, "via-intermediate"), ["orders:read"]),
            ],
        )
        with e2e.stack:
            yield Hosts(e2e, float(bound))


def test_two_hosts_behind_one_upstream_both_serve(hosts: Hosts) -> None:
    e2e = hosts.e2e
    assert len(set(hosts.ports)) == 2
    steady = dev_client(e2e.pki, "client")
    for index in range(12):
        with steady.session(e2e.pki.path("ca")) as session:
            response = session.get(e2e.url(f"/api/whoami/?c=spread-{index}"), timeout=10)
        assert response.status_code == 200, response.text
    # nginx spread the requests over both hosts (round robin).
    for instance in (0, 1):
        assert "c=spread-" in e2e.stack.access_log_of(instance).read_text(), f"host {instance} got no request"


def test_registry_changes_are_seen_by_both_hosts(hosts: Hosts) -> None:
    e2e = hosts.e2e
    late = issue_clients(e2e.pki, ["late-joiner"])["late-joiner"]
    # Both hosts answer (and cache) "unknown" first.
    assert hosts.everywhere(late) == {(401, "unknown_certificate")}

    e2e.manage("certauth", "register", "--identity", "late-joiner", "--cert", str(late.cert), "--scope", "orders:read")
    hosts.settle()
    assert hosts.everywhere(late) == {(200, "")}

    e2e.manage("certauth", "revoke", "--thumbprint", late.thumbprint, "--reason", "key_compromise")
    hosts.settle()
    assert hosts.everywhere(late) == {(401, "certificate_revoked")}

    # Trust changes too: disabling the intermediate CA refuses its (registered) clients on both hosts.
    chained = dev_client(e2e.pki, "via-intermediate")
    assert hosts.everywhere(chained) == {(200, "")}
    e2e.manage("certauth", "authority", "disable", "--name", "dev intermediate CA")
    hosts.settle()
    assert hosts.everywhere(chained) == {(401, "untrusted_issuer")}
    e2e.manage("certauth", "authority", "enable", "--name", "dev intermediate CA")
    hosts.settle()
    assert hosts.everywhere(chained) == {(200, "")}


def test_one_host_going_down_costs_no_request(hosts: Hosts) -> None:
    e2e = hosts.e2e
    steady = dev_client(e2e.pki, "client")
    clients = [LoadClient(f"steady-{i}", steady, path=f"/api/whoami/?c=failover-{i}") for i in range(3)]
    with Load(e2e, clients, pause=0.02) as load:
        assert load.wait_until(lambda s: len(s) >= 30, timeout=20)
        e2e.stack.stop_instance(1)
        stopped_at = len(load.samples)
        assert load.wait_until(lambda s: len(s) >= stopped_at + 60, timeout=30)
        e2e.stack.start_instance(1)
        restarted_at = len(load.samples)
        assert load.wait_until(lambda s: len(s) >= restarted_at + 30, timeout=30)
    assert not load.errors, load.errors[:5]
    assert {s.status for s in load.samples} == {200}, summarize(load.samples)
    print(f"\nfailover: {len(load.samples)} requests, host 1 down for {restarted_at - stopped_at} of them, 0 failed")
