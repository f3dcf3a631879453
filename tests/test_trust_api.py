"""The trust policy through the DRF API, as nginx calls it: every case gives its reason code, a 401 and an
audit row.  The ``api`` fixture trusts the test root and intermediate (conftest ``trusted_root``)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from django.test import override_settings

from certauth import devpki
from certauth.models import AuthenticationFailure, CertificateIdentity, RegisteredCertificate, TrustedAuthority
from certauth.reasons import Reason

from .conftest import failures

pytestmark = pytest.mark.django_db
def now() -> dt.datetime:
    """The current time, read where it is used: a value captured at import would be minutes old by the time a
    later test compares it with certificates and CRLs stamped with the real clock (a slow machine)."""
    return dt.datetime.now(dt.UTC)
CHAIN_HEADER = "HTTP_X_SSL_CLIENT_CHAIN"


def refused(response: Any, reason: Reason) -> dict[str, Any]:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == str(reason), body
    assert "Certificate(" not in body["detail"]  # never the library's text
    assert len(failures(reason=str(reason))) >= 1
    return body


def intermediate_authority() -> TrustedAuthority:
    return TrustedAuthority.objects.get(name="test intermediate")


def test_leaf_via_registered_intermediate(api, pki, register) -> None:
    register(pki.via_intermediate)
    assert api.get("/api/whoami/", pki.via_intermediate).status_code == 200


@override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"})
def test_leaf_via_forwarded_intermediate(api, pki, register) -> None:
    register(pki.via_intermediate)
    intermediate_authority().delete()  # not registered: the forwarded chain brings it
    refused(api.get("/api/whoami/", pki.via_intermediate), Reason.UNTRUSTED_ISSUER)
    chain = quote(pki.intermediate.cert_pem().decode(), safe="")
    assert api.get("/api/whoami/", pki.via_intermediate, **{CHAIN_HEADER: chain}).status_code == 200


def test_pinned_leaf_from_another_ca(api, pki, register) -> None:
    register(pki.from_other_ca)
    refused(api.get("/api/whoami/", pki.from_other_ca), Reason.UNTRUSTED_ISSUER)


@override_settings(CERTAUTH={"PROXY_VERIFIES_CERTIFICATE": False})
def test_optional_no_ca_mode_runs_certauths_checks(api, pki, register) -> None:
    register(pki.from_other_ca)
    refused(api.get("/api/whoami/", pki.from_other_ca, verify="FAILED:unable to verify"), Reason.UNTRUSTED_ISSUER)


@pytest.mark.parametrize(
    ("allowed", "self_signed_reason", "chained_reason"),
    [
        ("chained", Reason.SELF_SIGNED_NOT_ALLOWED, None),
        ("self_signed", None, Reason.CHAINED_NOT_ALLOWED),
        ("all", None, None),
    ],
)
def test_self_signed_in_each_mode(api, pki, register, allowed, self_signed_reason, chained_reason) -> None:
    register(pki.self_signed, identity="selfie")
    register(pki.client, identity="billing")
    with override_settings(CERTAUTH={"ALLOWED_CERTIFICATE_TYPES": allowed}):
        for issued, reason in ((pki.self_signed, self_signed_reason), (pki.client, chained_reason)):
            response = api.get("/api/whoami/", issued)
            if reason is None:
                assert response.status_code == 200, response.content
            else:
                refused(response, reason)


def test_default_is_chained_when_debug_is_off(settings) -> None:
    from certauth.conf import settings as certauth_settings

    settings.DEBUG = False
    assert certauth_settings.ALLOWED_CERTIFICATE_TYPES == "chained"


def test_expired_intermediate(api, pki, register) -> None:
    old_intermediate = devpki.make_ca(
        "expired intermediate",
        issuer=pki.root,
        not_before=now() - dt.timedelta(days=60),
        not_after=now() - dt.timedelta(days=1),
    )
    leaf = devpki.issue_client(old_intermediate, "under-expired", not_before=now() - dt.timedelta(days=30))
    register(leaf)
    with override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"}):
        chain = quote(old_intermediate.cert_pem().decode(), safe="")
        body = refused(api.get("/api/whoami/", leaf, **{CHAIN_HEADER: chain}), Reason.CHAIN_INVALID)
    assert "expired" in body["detail"]


def test_server_auth_only_is_wrong_usage(api, pki, register) -> None:
    register(pki.server_usage)
    refused(api.get("/api/whoami/", pki.server_usage), Reason.WRONG_USAGE)


# --- CRLs -------------------------------------------------------------------------------------------------
def load_crl(authority: TrustedAuthority, crl: Any) -> None:
    from certauth.authorities import apply_crl

    apply_crl(authority, crl.public_bytes(serialization.Encoding.DER))
    authority.save()


CRL_MODE = {"REVOCATION_MODE": "crl"}


@override_settings(CERTAUTH=CRL_MODE)
def test_crl_revoked(api, pki, register, trusted_root) -> None:
    register(pki.client)
    register(pki.client2, identity="other")
    load_crl(trusted_root, devpki.make_crl(pki.root, [pki.client.serial_number]))
    refused(api.get("/api/whoami/", pki.client), Reason.CRL_REVOKED)
    assert api.get("/api/whoami/", pki.client2).status_code == 200


@override_settings(CERTAUTH=CRL_MODE)
def test_missing_crl_fails_closed(api, pki, register) -> None:
    register(pki.client)
    refused(api.get("/api/whoami/", pki.client), Reason.CRL_UNAVAILABLE)


def test_stale_crl_fails_closed_then_open_with_an_audit_row(api, pki, register, trusted_root) -> None:
    register(pki.client)
    stale = devpki.make_crl(
        pki.root, [], last_update=now() - dt.timedelta(days=8), next_update=now() - dt.timedelta(minutes=5)
    )
    load_crl(trusted_root, stale)
    with override_settings(CERTAUTH=CRL_MODE):
        body = refused(api.get("/api/whoami/", pki.client), Reason.CRL_UNAVAILABLE)
        assert "stale" in body["detail"]
    with override_settings(CERTAUTH={**CRL_MODE, "REVOCATION_FAIL_OPEN": True}):
        assert api.get("/api/whoami/", pki.client).status_code == 200
    accepted = AuthenticationFailure.objects.get(reason="crl_unavailable", detail__startswith="Accepted")
    assert accepted.identity is not None and accepted.identity.name == "billing"
    assert "stale" in accepted.detail and accepted.thumbprint_sha256 == pki.client.thumbprint


@override_settings(CERTAUTH=CRL_MODE)
def test_stored_crl_with_a_bad_signature(api, pki, register, trusted_root) -> None:
    register(pki.client)
    forged = devpki.make_crl(pki.other_ca, [])  # signed by another CA's key...
    trusted_root.crl_der = forged.public_bytes(serialization.Encoding.DER)  # ...slipped into the row directly
    trusted_root.crl_last_update = now()
    trusted_root.save()
    body = refused(api.get("/api/whoami/", pki.client), Reason.CRL_UNAVAILABLE)
    assert "different authority" in body["detail"]


# --- identity rules --------------------------------------------------------------------------------------------
def rule_identity(name: str, authority: TrustedAuthority, field: str, pattern: str, scopes: str = "") -> Any:
    return CertificateIdentity.objects.create(
        name=name, match_authority=authority, match_field=field, match_pattern=pattern, scopes=scopes
    )


def test_rule_authenticates_renewed_certificates(api, pki, trusted_root) -> None:
    rule_identity("payments", trusted_root, "uri_san", "spiffe://prod.example/payments/*", scopes="orders:read")
    first = devpki.issue_client(pki.root, "payments-1", uris=["spiffe://prod.example/payments/api"])
    renewed = devpki.issue_client(pki.root, "payments-2", uris=["spiffe://prod.example/payments/api"])
    for issued in (first, renewed):
        response = api.get("/api/whoami/", issued)
        assert response.status_code == 200, response.content
        assert response.json()["identity"] == "payments"
        entry = RegisteredCertificate.objects.get(thumbprint_sha256=issued.thumbprint)
        assert entry.source == "rule" and entry.identity.name == "payments" and entry.last_used_at is not None
    # Revocation applies to a rule-seen entry like to any other, and sticks.
    RegisteredCertificate.objects.get(thumbprint_sha256=first.thumbprint).revoke("key_compromise")
    refused(api.get("/api/whoami/", first), Reason.CERTIFICATE_REVOKED)
    assert api.get("/api/whoami/", renewed).status_code == 200


def test_rule_needs_its_authority(api, pki, trusted_root) -> None:
    rule_identity("by-intermediate", intermediate_authority(), "subject_cn", "billing-*")
    refused(api.get("/api/whoami/", pki.client), Reason.UNKNOWN_CERTIFICATE)  # CN matches, issued by the root
    assert not RegisteredCertificate.objects.exists()
    rule_identity("by-root", trusted_root, "subject_cn", "via-*")
    # The leaf under the intermediate chains to the root too: "issued by" follows the whole chain.
    assert api.get("/api/whoami/", pki.via_intermediate).json()["identity"] == "by-root"


@override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"})
def test_a_disabled_authority_binds_no_rule_even_through_a_forwarded_chain(api, pki, trusted_root) -> None:
    authority = intermediate_authority()
    rule_identity("by-intermediate", authority, "subject_cn", "via-*")
    chain = quote(pki.intermediate.cert_pem().decode(), safe="")
    assert (
        api.get("/api/whoami/", pki.via_intermediate, **{CHAIN_HEADER: chain}).json()["identity"] == "by-intermediate"
    )
    authority.is_enabled = False
    authority.save()
    RegisteredCertificate.objects.all().delete()  # forget what the rule recorded: only the rule is on trial
    # The root would still verify the forwarded chain, but a disabled authority is distrusted wherever it
    # appears: the chain through it is refused before any rule is consulted.
    body = refused(api.get("/api/whoami/", pki.via_intermediate, **{CHAIN_HEADER: chain}), Reason.UNTRUSTED_ISSUER)
    assert "disabled" in body["detail"]


def test_two_matching_rules_are_ambiguous(api, pki, trusted_root) -> None:
    rule_identity("billing-a", trusted_root, "subject_cn", "billing-*")
    rule_identity("billing-b", trusted_root, "dns_san", "*.clients.certauth.dev")
    body = refused(api.get("/api/whoami/", pki.client), Reason.AMBIGUOUS_IDENTITY)
    assert "2 identities" in body["detail"]
    assert not RegisteredCertificate.objects.exists()


def test_pinned_entry_wins_over_rules(api, pki, register, trusted_root) -> None:
    register(pki.client, identity="pinned")
    rule_identity("rule", trusted_root, "subject_cn", "billing-*")
    assert api.get("/api/whoami/", pki.client).json()["identity"] == "pinned"


def test_rule_entry_stops_when_the_rule_is_withdrawn(api, pki, trusted_root) -> None:
    identity = rule_identity("billing", trusted_root, "subject_cn", "billing-service")
    assert api.get("/api/whoami/", pki.client).status_code == 200
    identity.match_pattern = "someone-else"
    identity.save()
    refused(api.get("/api/whoami/", pki.client), Reason.UNKNOWN_CERTIFICATE)


def test_self_signed_never_matches_a_rule(api, pki, trusted_root) -> None:
    rule_identity("selfie", trusted_root, "subject_cn", "selfie")
    with override_settings(CERTAUTH={"ALLOWED_CERTIFICATE_TYPES": "all"}):
        refused(api.get("/api/whoami/", pki.self_signed), Reason.UNKNOWN_CERTIFICATE)


# --- the admin ------------------------------------------------------------------------------------------------
def test_disabling_an_authority_in_the_admin_refuses_the_next_request(api, pki, register, trusted_root, admin_client):
    register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    response = admin_client.post(
        f"/admin/certauth/trustedauthority/{trusted_root.pk}/change/",
        {"name": trusted_root.name, "notes": "compromised", "crl_url": ""},  # is_enabled unchecked
    )
    assert response.status_code == 302, response.content.decode()[-1500:]
    refused(api.get("/api/whoami/", pki.client), Reason.UNTRUSTED_ISSUER)
    admin_client.post(
        "/admin/certauth/trustedauthority/",
        {"action": "enable", "_selected_action": [trusted_root.pk]},
    )
    assert api.get("/api/whoami/", pki.client).status_code == 200
