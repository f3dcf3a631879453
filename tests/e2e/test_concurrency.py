"""Bounded load through the real stack (nginx mTLS -> gunicorn with 2 workers), on SQLite and on PostgreSQL,
with the default staleness bound (1 s) and in strict mode (0 s): several client threads with real
certificates, each with its own keep-alive session.

* revoking an entry mid-load -> refused on every worker within the bound (strict: from the first request
  sent after the revocation committed); bystanders never notice; the audit counts equal the refusals sent;
* rotating (successor registered for the same identity, clients switched, old entry retired as
  ``superseded``) -> zero failed requests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from .conftest import E2EStack
from .support import (
    ClientCert,
    Load,
    LoadClient,
    Sample,
    audit_counts,
    dev_client,
    issue_clients,
    make_stack,
    postgres_database,
    require_postgres,
    setup_registry,
    summarize,
)

pytestmark = pytest.mark.e2e

SLACK = 0.1  # scheduling slack on top of the staleness bound (one monotonic clock for all processes)


class LoadStack:
    def __init__(self, e2e: E2EStack, bound: float, certs: dict[str, ClientCert]) -> None:
        self.e2e = e2e
        self.bound = bound
        self.certs = certs


@pytest.fixture(
    scope="module",
    params=[("sqlite", "1"), ("sqlite", "0"), ("postgresql", "1"), ("postgresql", "0")],
    ids=["sqlite-bound-1s", "sqlite-strict", "postgresql-bound-1s", "postgresql-strict"],
)
def load_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadStack]:
    database, bound = request.param
    base = tmp_path_factory.mktemp(f"load-{database}-{bound}")

    def start(database_url: str | None) -> Iterator[LoadStack]:
        e2e = make_stack(base, database_url=database_url, env={"CERTAUTH_REGISTRY_MAX_STALENESS_SECONDS": bound})
        certs = issue_clients(e2e.pki, ["victim", "rotating-old", "rotating-new"])
        certs["bystander"] = dev_client(e2e.pki, "client")
        certs["stranger"] = dev_client(e2e.pki, "unregistered")
        setup_registry(
            e2e,
            [
                ("victim", certs["victim"], ["orders:read"]),
                ("bystander", certs["bystander"], ["orders:read"]),
                ("rotating", certs["rotating-old"], ["orders:read"]),
            ],
        )
        with e2e.stack:
            yield LoadStack(e2e, float(bound), certs)

    if database == "sqlite":
        yield from start(None)
        return
    require_postgres()
    with postgres_database() as name:
        yield from start(f"postgres://postgres@127.0.0.1:5432/{name}")


def _pids_answering(e2e: E2EStack, marker: str, status: int) -> set[str]:
    pattern = re.compile(rf'{re.escape(marker)}[^"]*" {status} .*pid=<?(\d+)')
    return {m.group(1) for line in e2e.stack.access_log.read_text().splitlines() if (m := pattern.search(line))}


def _enough(samples: list[Sample], cert: str, status: int, count: int) -> bool:
    return sum(1 for s in samples if s.cert == cert and s.status == status) >= count


def test_revocation_under_load_reaches_every_worker_within_the_bound(load_stack: LoadStack) -> None:
    e2e, certs, bound = load_stack.e2e, load_stack.certs, load_stack.bound
    victim, bystander, stranger = certs["victim"], certs["bystander"], certs["stranger"]
    clients = [
        *(LoadClient(f"victim-{i}", victim, path=f"/api/whoami/?c=victim-{i}") for i in range(3)),
        *(LoadClient(f"bystander-{i}", bystander, path=f"/api/orders/?c=bystander-{i}") for i in range(2)),
        LoadClient("stranger", stranger, path="/api/whoami/?c=stranger"),
    ]
    with Load(e2e, clients) as load:
        assert load.wait_until(lambda s: _enough(s, "victim", 200, 30), timeout=20), summarize(load.samples)
        revoke_started = time.monotonic()
        e2e.manage("certauth", "revoke", "--thumbprint", victim.thumbprint, "--reason", "key_compromise")
        revoked_at = time.monotonic()  # the revocation has committed
        deadline = revoked_at + (bound + SLACK if bound else 0.0)
        # Wait for enough requests sent after the bound to judge, however slowly the machine serves them:
        # a fixed sleep would make the count below depend on the machine's speed.
        judgeable = load.wait_until(
            lambda samples: sum(1 for s in samples if s.cert == "victim" and s.sent > deadline) >= 20, timeout=120
        )
    samples = load.samples
    assert judgeable, f"fewer than 20 victim requests sent after the bound within 120 s: {summarize(samples)}"

    assert not load.errors, load.errors[:5]
    assert all(0 < s.status < 500 for s in samples), summarize(samples)
    assert {(s.status, s.reason) for s in samples if s.cert == "client"} == {(200, "")}, summarize(samples)
    assert {(s.status, s.reason) for s in samples if s.cert == "unregistered"} == {(401, "unknown_certificate")}

    victim_samples = [s for s in samples if s.cert == "victim"]
    assert all(s.status == 200 for s in victim_samples if s.sent < revoke_started), summarize(victim_samples)
    assert {(s.status, s.reason) for s in victim_samples if s.status != 200} == {(401, "certificate_revoked")}
    # Strict mode: from the first request sent after the revocation committed.  Otherwise within the bound.
    judged = [s for s in victim_samples if s.sent > deadline]
    assert len(judged) >= 20, "too few requests after the bound to judge"
    assert [s.status for s in judged] == [401] * len(judged), summarize(judged)
    assert len(_pids_answering(e2e, "c=victim-", 401)) >= 2, "the refusals did not come from both workers"

    # The audit counts every refusal exactly once, also under concurrency.
    counts = audit_counts(e2e)
    refused = sum(1 for s in victim_samples if s.status == 401)
    assert counts[("certificate_revoked", victim.thumbprint)] == refused
    strangers = sum(1 for s in samples if s.cert == "unregistered")
    assert counts[("unknown_certificate", stranger.thumbprint)] == strangers

    last_ok = max(s.sent for s in victim_samples if s.status == 200) - revoked_at
    first_refused = min(s.sent for s in victim_samples if s.status == 401) - revoked_at
    print(
        f"\nrevocation (bound {bound:g} s): {len(samples)} requests, {refused} revoked refusals, "
        f"{strangers} unknown refusals; last 200 sent {last_ok:+.3f} s and first 401 sent {first_refused:+.3f} s "
        f"relative to the revoke command returning (it took {revoked_at - revoke_started:.2f} s)"
    )


_ROTATE_SCRIPT = """
from pathlib import Path
from certauth.certificates import load_certificate
from certauth.models import RegisteredCertificate
from certauth.services import add_successor
old = RegisteredCertificate.objects.get(thumbprint_sha256="{old}")
new = add_successor(old, load_certificate(Path("{new}").read_bytes()), label="rotation under load")
print(new.pk)
"""


def test_rotation_under_load_loses_no_request(load_stack: LoadStack) -> None:
    e2e, certs, bound = load_stack.e2e, load_stack.certs, load_stack.bound
    old, new = certs["rotating-old"], certs["rotating-new"]
    clients = [LoadClient(f"rotating-{i}", old, path=f"/api/whoami/?c=rotating-{i}") for i in range(4)]
    with Load(e2e, clients) as load:
        assert load.wait_until(lambda s: _enough(s, "rotating-old", 200, 20), timeout=20), summarize(load.samples)
        # 1. the successor, for the same identity (what the admin's "add successor" does)
        e2e.manage("shell", "--no-imports", "-c", _ROTATE_SCRIPT.format(old=old.thumbprint, new=new.cert))
        # 2. every client switches to the new certificate, at once
        for client in clients:
            client.switch_to(new)
        assert all(client.switched.wait(15) for client in clients)
        assert load.wait_until(lambda s: _enough(s, "rotating-new", 200, 20), timeout=20), summarize(load.samples)
        # 3. the old entry is retired
        e2e.manage("certauth", "revoke", "--thumbprint", old.thumbprint, "--reason", "superseded")
        time.sleep(bound + SLACK + 0.5)
    samples = load.samples

    assert not load.errors, load.errors[:5]
    assert {s.status for s in samples} == {200}, summarize(samples)  # zero failed requests
    assert {s.cert for s in samples} == {"rotating-old", "rotating-new"}
    with new.session(e2e.pki.path("ca")) as session:
        assert session.get(e2e.url("/api/whoami/"), timeout=10).json()["identity"] == "rotating"
    with old.session(e2e.pki.path("ca")) as session:
        response = session.get(e2e.url("/api/whoami/"), timeout=10)
    assert response.status_code == 401 and response.json()["reason"] == "certificate_revoked"
    assert "superseded" in response.json()["detail"]
    print(f"\nrotation (bound {bound:g} s): {len(samples)} requests, 0 failed")
