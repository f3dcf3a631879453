"""The audit survives a flood of distinct certificates (issue 16, class 7).

A client can mint a new certificate for every request.  Refusals before the registry step aggregate per
(reason, client address, window) whatever the certificate; unknown certificates (the ones an operator can
register from the audit) keep their own row and PEM up to AUDIT_CAPTURE_PER_ADDRESS per address and window,
then share one row.  Counts stay exact."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from certauth import audit, devpki
from certauth.certificates import describe
from certauth.models import AuthenticationFailure
from certauth.reasons import Reason

from .conftest import failures

FLOOD = 40
#: One audit window spans the whole test (2001-09-09 .. 2033-05-18), however slowly it runs.
WHOLE_TEST_WINDOW = 10**9


@pytest.fixture(autouse=True)
def _one_window(settings: Any) -> None:
    certauth_settings(settings, AUDIT_WINDOW_SECONDS=WHOLE_TEST_WINDOW)


def certauth_settings(settings: Any, **values: Any) -> None:
    settings.CERTAUTH = {**settings.CERTAUTH, **values}


def self_made(count: int) -> list[devpki.Issued]:
    return [devpki.self_signed_client(f"flood-{i}") for i in range(count)]


def total(**filters: Any) -> int:
    return int(AuthenticationFailure.objects.filter(**filters).aggregate(n=Sum("count"))["n"] or 0)


@pytest.mark.django_db
def test_distinct_self_made_certificates_from_one_address_are_one_row(api) -> None:
    """Today's main wrote one row, with the PEM, per certificate."""
    flood = self_made(FLOOD)
    reasons = {api.get("/api/whoami/", issued, client_ip="198.51.100.66").json()["reason"] for issued in flood}
    [reason] = reasons
    assert reason in {"self_signed_not_allowed", "untrusted_issuer"}
    [row] = failures()
    assert row.count == FLOOD
    assert row.aggregated_by_address
    assert row.client_ip == "198.51.100.66"
    assert row.thumbprint_sha256 == flood[0].thumbprint  # the first seen, for display
    assert row.last_thumbprint_sha256 == flood[-1].thumbprint
    assert row.certificate_pem == ""  # nothing an operator can do with a self-made certificate's PEM
    # another address is another row
    api.get("/api/whoami/", flood[0], client_ip="198.51.100.67")
    assert AuthenticationFailure.objects.count() == 2


@pytest.mark.django_db
def test_untrusted_certificate_keeps_no_pem(api, pki) -> None:
    api.get("/api/whoami/", pki.from_other_ca)
    [row] = failures()
    assert row.reason == "untrusted_issuer"
    assert row.thumbprint_sha256 == pki.from_other_ca.thumbprint
    assert row.certificate_pem == ""


@pytest.mark.django_db
def test_unknown_certificates_keep_their_pem_up_to_the_cap_per_address(api, pki, settings) -> None:
    certauth_settings(settings, AUDIT_CAPTURE_PER_ADDRESS=5)
    unknown = [pki.issue(f"unknown-{i}") for i in range(12)]
    for issued in unknown:
        assert api.get("/api/whoami/", issued, client_ip="203.0.113.50").json()["reason"] == "unknown_certificate"
    api.get("/api/whoami/", unknown[0], client_ip="203.0.113.50")  # a captured one again: its own row
    api.get("/api/whoami/", unknown[11], client_ip="203.0.113.51")  # another address: its own captures
    captured = AuthenticationFailure.objects.filter(client_ip="203.0.113.50", aggregated_by_address=False)
    assert sorted(row.thumbprint_sha256 for row in captured) == sorted(i.thumbprint for i in unknown[:5])
    assert all(
        row.certificate_pem == issued.cert_pem().decode()
        for row, issued in zip(captured.order_by("first_seen"), unknown[:5], strict=True)
    )
    assert captured.get(thumbprint_sha256=unknown[0].thumbprint).count == 2
    [overflow] = AuthenticationFailure.objects.filter(client_ip="203.0.113.50", aggregated_by_address=True)
    assert overflow.reason == "unknown_certificate"
    assert overflow.count == 7
    assert overflow.certificate_pem == ""
    assert (overflow.thumbprint_sha256, overflow.last_thumbprint_sha256) == (
        unknown[5].thumbprint,
        unknown[11].thumbprint,
    )
    assert total(client_ip="203.0.113.50") == 13  # every refusal counted, exactly
    [other] = failures(client_ip="203.0.113.51")
    assert other.certificate_pem and not other.aggregated_by_address


@pytest.mark.django_db
def test_self_made_flood_rotating_ipv6_addresses_of_one_slash64_is_o1_rows(api, settings) -> None:
    """Review 3, F1: one client holds a whole IPv6 /64 (often a /56 or /48) and rotates through its 2**64
    addresses at no cost.  Keyed on the exact address, every refusal from a new address opened a new row."""
    certauth_settings(settings, AUDIT_WINDOW_SECONDS=WHOLE_TEST_WINDOW)
    flood = 30
    for i in range(flood):
        issued = devpki.self_signed_client(f"v6-flood-{i}")
        reason = api.get("/api/whoami/", issued, client_ip=f"2001:db8:1:2::{i + 1:x}").json()["reason"]
        assert reason in {"self_signed_not_allowed", "untrusted_issuer"}
    total = AuthenticationFailure.objects.aggregate(n=Sum("count"))["n"]
    assert total == flood  # every refusal is counted ...
    rows = AuthenticationFailure.objects.count()
    assert rows <= 2, f"{rows} audit rows for {flood} refusals from one /64"  # ... in O(1) rows
    [row] = failures()
    assert row.client_network == "2001:db8:1:2::/64" and row.client_ip == "2001:db8:1:2::1"  # the first address
    # Another /64 is another client.
    api.get("/api/whoami/", devpki.self_signed_client("v6-other"), client_ip="2001:db8:1:3::1")
    assert len(failures()) == 2


@pytest.mark.django_db
def test_unknown_certificates_are_capped_per_ipv6_network_too(api, pki, settings) -> None:
    """The capture cap counts per /64 as well: rotating addresses does not buy a PEM row per address."""
    certauth_settings(settings, AUDIT_CAPTURE_PER_ADDRESS=3)
    unknown = [pki.issue(f"v6-unknown-{i}") for i in range(8)]
    for i, issued in enumerate(unknown):
        api.get("/api/whoami/", issued, client_ip=f"2001:db8:5:6:{i + 1:x}::1")
    captured = AuthenticationFailure.objects.filter(client_network="2001:db8:5:6::/64", aggregated_by_address=False)
    assert captured.count() == 3 and all(row.certificate_pem for row in captured)
    [overflow] = AuthenticationFailure.objects.filter(client_network="2001:db8:5:6::/64", aggregated_by_address=True)
    assert overflow.count == 5 and overflow.certificate_pem == ""


@pytest.mark.parametrize(
    ("address", "prefix", "network"),
    [
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2ff::1", 56, "2001:db8:1:200::/56"),
        ("2001:db8::1", 128, "2001:db8::1/128"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),  # IPv4-mapped: the IPv4 address
        ("192.0.2.7", 64, "192.0.2.7"),  # IPv4: one by one
        (None, 64, ""),
    ],
)
def test_the_client_network_of_an_address(settings, address: str | None, prefix: int, network: str) -> None:
    certauth_settings(settings, AUDIT_IPV6_PREFIX=prefix)
    assert audit.client_network(address) == network


@pytest.mark.django_db
def test_registry_step_refusals_stay_per_certificate(api, pki, register) -> None:
    """A refusal that names an identity (revoked, disabled, scope) is about one registered certificate."""
    register(pki.client).revoke("superseded")
    register(pki.client2).revoke("superseded")
    api.get("/api/whoami/", pki.client)
    api.get("/api/whoami/", pki.client2)
    rows = failures(reason="certificate_revoked")
    assert sorted(row.thumbprint_sha256 for row in rows) == sorted([pki.client.thumbprint, pki.client2.thumbprint])
    assert not any(row.aggregated_by_address for row in rows)


def _event(issued: devpki.Issued, reason: Reason, client_ip: str = "192.0.2.9") -> audit.RefusalEvent:
    return audit.RefusalEvent(
        reason=reason, detail=reason.message, at=timezone.now(), certificate=describe(issued.certificate),
        client_ip=client_ip,
    )  # fmt: skip


@pytest.mark.django_db
def test_deferred_flood_inside_one_transaction_is_bounded_too(settings) -> None:
    """Inside a transaction the refusals wait in memory: the same aggregation and cap apply there."""
    certauth_settings(settings, AUDIT_CAPTURE_PER_ADDRESS=3)
    flood = self_made(FLOOD)
    with transaction.atomic():
        for issued in flood:
            audit.record(_event(issued, Reason.UNTRUSTED_ISSUER))
            audit.record(_event(issued, Reason.UNKNOWN_CERTIFICATE))
        pending = audit.get_handler()._pending.events  # type: ignore[attr-defined]
        assert len(pending) == 1 + 3 + 1  # one per-address row, three captured, one overflow
    audit.flush_pending()
    assert total(reason="untrusted_issuer") == FLOOD
    assert total(reason="unknown_certificate") == FLOOD
    assert AuthenticationFailure.objects.count() == 5
    assert AuthenticationFailure.objects.exclude(certificate_pem="").count() == 3


@pytest.mark.django_db
def test_admin_shows_an_aggregated_row_as_many_certificates(admin_client, api) -> None:
    flood = self_made(3)
    for issued in flood:
        api.get("/api/whoami/", issued, client_ip="198.51.100.66")
    [row] = failures()
    listing = admin_client.get("/admin/certauth/authenticationfailure/").content.decode()
    assert "and others from this address" in listing
    assert "?from_failure=" not in listing  # no registration link: no certificate was kept
    detail = admin_client.get(f"/admin/certauth/authenticationfailure/{row.pk}/change/").content.decode()
    assert flood[-1].thumbprint in detail  # the last thumbprint seen


@pytest.mark.django_db
def test_bench_audit_flood_runs_and_counts_exactly(trusted_root, pki) -> None:
    """The benchmark script's flood (bench/audit_flood.py), tiny: it answers, and its counts add up."""
    from bench.audit_flood import flood

    assert flood("smoke", 3, lambda i: devpki.self_signed_client(f"bench-{i}").cert_pem())
    assert AuthenticationFailure.objects.count() == 1
    assert flood("smoke", 3, lambda i: pki.issue(f"bench-{i}").cert_pem())
    assert AuthenticationFailure.objects.exclude(certificate_pem="").count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_the_client_network_of_existing_rows() -> None:
    """Rows written before ``client_network`` existed get it from their ``client_ip`` (an IPv6 address its /64)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    [target] = [k for k in executor.loader.disk_migrations if k[0] == "certauth" and k[1].endswith("_client_network")]
    before = [parent.key for parent in executor.loader.graph.node_map[target].parents]
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps.get_model("certauth", "AuthenticationFailure").objects
        at = timezone.now()
        for key, address in (("a", "2001:db8:7:8::99"), ("b", "192.0.2.44"), ("c", "::ffff:192.0.2.45"), ("d", None)):
            old.create(
                key=key, window_start=at, reason="untrusted_issuer", client_ip=address, first_seen=at, last_seen=at
            )
        executor = MigrationExecutor(connection)
        executor.migrate([target])
        new = executor.loader.project_state([target]).apps.get_model("certauth", "AuthenticationFailure").objects
        assert dict(new.values_list("key", "client_network")) == {
            "a": "2001:db8:7:8::/64",
            "b": "192.0.2.44",
            "c": "192.0.2.45",
            "d": "",
        }
    finally:
        MigrationExecutor(connection).migrate(latest)


@pytest.mark.django_db
def test_an_address_row_with_one_certificate_does_not_claim_others(admin_client, api) -> None:
    """Aggregated by address, but every refusal was the same certificate: the list shows it as itself."""
    [issued] = self_made(1)
    for _ in range(2):
        api.get("/api/whoami/", issued, client_ip="198.51.100.67")
    [row] = failures()
    assert row.aggregated_by_address and row.count == 2
    listing = admin_client.get("/admin/certauth/authenticationfailure/").content.decode()
    assert "and others from this address" not in listing
