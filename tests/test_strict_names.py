"""Identity rules compare names strictly, through the DRF API as nginx calls it, with real certificates: a
name-constrained sub-CA cannot mint names its constraints do not cover for a rule bound to its root, '*' does
not cross separators, a non-ASCII SAN is not the ASCII name it folds to, several CNs are ambiguous, and a
pattern is validated when the rule is saved."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from django.core.exceptions import ValidationError
from django.test import override_settings

from certauth import devpki
from certauth.authorities import add_authority
from certauth.models import CertificateIdentity, RegisteredCertificate, TrustedAuthority
from certauth.reasons import Reason

from .conftest import failures
from .nameutil import KELVIN, constrained_ca, leaf

pytestmark = pytest.mark.django_db
CHAIN = {"CHAIN_HEADER": "X-SSL-Client-Chain"}


def chain_header(*cas: devpki.Issued) -> dict[str, str]:
    return {"HTTP_X_SSL_CLIENT_CHAIN": quote(b"".join(ca.cert_pem() for ca in cas).decode(), safe="")}


def rule(name: str, authority: TrustedAuthority, field: str, pattern: str) -> CertificateIdentity:
    identity = CertificateIdentity(name=name, match_authority=authority, match_field=field, match_pattern=pattern)
    identity.full_clean()
    identity.save()
    return identity


def refused(response: Any, reason: Reason) -> dict[str, Any]:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == str(reason), body
    assert failures(reason=str(reason))  # and an audit row
    return body


def identity_of(response: Any) -> str:
    assert response.status_code == 200, response.content
    return str(response.json()["identity"])


# --- 5. a name-constrained sub-CA -------------------------------------------------------------------------------
@pytest.fixture
def team_ca(pki: Any) -> devpki.Issued:
    """A sub-CA of the trusted root, constrained to the DNS subtree team.example (and nothing else)."""
    return constrained_ca(pki.root, "team sub-CA", permitted=[x509.DNSName("team.example")])


@override_settings(CERTAUTH=CHAIN)
def test_a_name_constrained_sub_ca_cannot_mint_a_cn_for_a_root_bound_rule(api, pki, trusted_root, team_ca) -> None:
    rule("billing", trusted_root, "subject_cn", "billing-service")
    # Within its DNS constraints (the verifier checks the SAN), but the CN is the billing service's.
    minted = leaf(team_ca, ["billing-service"], dns=["x.team.example"])
    body = refused(api.get("/api/whoami/", minted, **chain_header(team_ca)), Reason.UNKNOWN_CERTIFICATE)
    assert "name-constrained" in body["detail"] and "Bind the rule to that CA" in body["detail"]
    assert not RegisteredCertificate.objects.exists()
    row = failures(reason="unknown_certificate", thumbprint_sha256=minted.thumbprint)[0]
    assert "name-constrained" in row.detail
    # The same CN issued by the root itself (no constrained CA in between) is still the billing service.
    assert identity_of(api.get("/api/whoami/", leaf(pki.root, ["billing-service"], dns=["b.example"]))) == "billing"


@override_settings(CERTAUTH=CHAIN)
def test_a_constrained_sub_ca_vouches_only_for_the_san_types_it_constrains(api, pki, trusted_root, team_ca) -> None:
    rule("team", trusted_root, "dns_san", "*.team.example")
    rule("payments", trusted_root, "uri_san", "spiffe://prod.example/payments/api")
    within = leaf(team_ca, ["anything"], dns=["api.team.example"])
    assert identity_of(api.get("/api/whoami/", within, **chain_header(team_ca))) == "team"
    # A URI SAN is not restricted by DNS constraints: the team CA cannot vouch for the payments SPIFFE ID.
    minted = leaf(team_ca, ["anything"], dns=["a.b.team.example"], uris=["spiffe://prod.example/payments/api"])
    refused(api.get("/api/whoami/", minted, **chain_header(team_ca)), Reason.UNKNOWN_CERTIFICATE)


def test_a_constrained_sub_ca_registered_as_an_authority_binds_its_own_rules_only(api, pki, trusted_root, team_ca):
    """Registered as an authority, the sub-CA anchors the verified chain itself: a rule bound to the root is
    then decided on the chain to the root (TrustStore.chain_to), which passes through the constrained CA."""
    team = add_authority("team sub-CA", team_ca.cert_pem())
    rule("by-root", trusted_root, "subject_cn", "root-named")
    refused(api.get("/api/whoami/", leaf(team_ca, ["root-named"], dns=["z.team.example"])), Reason.UNKNOWN_CERTIFICATE)
    # A rule bound to the constrained CA itself is the operator's explicit trust in that CA's names.
    rule("by-team", team, "subject_cn", "team-named")
    assert identity_of(api.get("/api/whoami/", leaf(team_ca, ["team-named"], dns=["t.team.example"]))) == "by-team"


@override_settings(CERTAUTH=CHAIN)
def test_an_entry_a_cn_rule_recorded_before_is_refused_too(api, pki, trusted_root, team_ca) -> None:
    """A certificate an earlier version recorded through a root-bound CN rule is not grandfathered in."""
    from certauth.certificates import describe

    identity = rule("billing", trusted_root, "subject_cn", "billing-service")
    minted = leaf(team_ca, ["billing-service"], dns=["x.team.example"])
    entry = RegisteredCertificate(identity=identity)
    entry.fill_from(describe(minted.certificate))
    entry.source = RegisteredCertificate.Source.RULE  # as rules.record_seen writes it
    entry.save()
    body = refused(api.get("/api/whoami/", minted, **chain_header(team_ca)), Reason.UNKNOWN_CERTIFICATE)
    assert "name-constrained" in body["detail"]


# --- 5. non-ASCII SANs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "pattern", "san"),
    [
        ("dns_san", "key.clients.example", {"dns": [f"{KELVIN}ey.clients.example"]}),
        ("email_san", "ops@key.example", {"emails": [f"ops@{KELVIN}ey.example"], "dns": ["m.example"]}),
        ("uri_san", "spiffe://key.example/sa/api", {"uris": [f"spiffe://{KELVIN}ey.example/sa/api"]}),
    ],
    ids=["dns", "email", "uri"],
)
def test_a_kelvin_sign_san_is_not_the_ascii_name(api, pki, trusted_root, field, pattern, san) -> None:
    rule("key-service", trusted_root, field, pattern)
    refused(api.get("/api/whoami/", leaf(pki.root, ["k"], **san)), Reason.UNKNOWN_CERTIFICATE)
    ascii_san = {kind: [value.replace(KELVIN, "k") for value in values] for kind, values in san.items()}
    assert identity_of(api.get("/api/whoami/", leaf(pki.root, ["k"], **ascii_san))) == "key-service"


# --- 5. several CNs -----------------------------------------------------------------------------------------------
def test_a_subject_with_several_cns_is_ambiguous_for_a_cn_rule(api, pki, trusted_root) -> None:
    rule("billing", trusted_root, "subject_cn", "billing-service")
    for names in (["billing-service", "admin"], ["admin", "billing-service"]):
        body = refused(
            api.get("/api/whoami/", leaf(pki.root, names, dns=["m.clients.example"])), Reason.AMBIGUOUS_IDENTITY
        )
        assert "2 common names" in body["detail"]
    assert not RegisteredCertificate.objects.exists()
    # A SAN rule does not read the CN: the same kind of certificate is admitted by it.
    rule("by-dns", trusted_root, "dns_san", "n.clients.example")
    assert identity_of(api.get("/api/whoami/", leaf(pki.root, ["a", "b"], dns=["n.clients.example"]))) == "by-dns"


# --- 6. globs as a user reads them ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "hostile", "meant"),
    [
        (
            "spiffe://*/ns/billing/sa/api",
            "spiffe://evil.example/x/ns/billing/sa/api",
            "spiffe://prod/ns/billing/sa/api",
        ),
        ("https://*.example.com/svc", "https://evil.org/x.example.com/svc", "https://api.example.com/svc"),
        (
            "spiffe://prod.example/ns/billing/**",
            "spiffe://prod.example/ns/billing/../admin",
            "spiffe://prod.example/ns/billing/sa/api",
        ),
        (
            "spiffe://prod.example/ns/*/sa/api",
            "spiffe://prod.example/ns/x%2f..%2fbilling/sa/api",
            "spiffe://prod.example/ns/billing/sa/api",
        ),
    ],
    ids=["host-star-crossing-slash", "host-star-reaching-path", "dot-dot-under-any-depth", "encoded-slash"],
)
def test_a_uri_glob_admits_only_what_it_says(api, pki, trusted_root, pattern, hostile, meant) -> None:
    rule("billing", trusted_root, "uri_san", pattern)
    refused(api.get("/api/whoami/", leaf(pki.root, ["x"], uris=[hostile])), Reason.UNKNOWN_CERTIFICATE)
    assert identity_of(api.get("/api/whoami/", leaf(pki.root, ["x"], uris=[meant]))) == "billing"


def test_a_dns_glob_stays_within_one_label(api, pki, trusted_root) -> None:
    rule("clients", trusted_root, "dns_san", "*.clients.example")
    refused(api.get("/api/whoami/", leaf(pki.root, ["x"], dns=["a.evil.clients.example"])), Reason.UNKNOWN_CERTIFICATE)
    assert identity_of(api.get("/api/whoami/", leaf(pki.root, ["x"], dns=["a.clients.example"]))) == "clients"


# --- 6. patterns are validated when saved ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "pattern"),
    [
        ("subject_cn", "billing-?"),
        ("dns_san", "[ab].clients.example"),
        ("uri_san", "spiffe://prod/ns/../admin"),
        ("uri_san", "https://user@api.example/svc"),
        ("uri_san", "spiffe://prod/ns/a%2fb"),
        ("dns_san", f"{KELVIN}ey.clients.example"),
    ],
)
def test_an_invalid_pattern_cannot_be_saved(trusted_root, field, pattern) -> None:
    identity = CertificateIdentity(name="x", match_authority=trusted_root, match_field=field, match_pattern=pattern)
    with pytest.raises(ValidationError) as error:
        identity.full_clean()
    assert "match_pattern" in error.value.message_dict


def test_the_admin_form_says_why_a_pattern_is_refused(admin_client, trusted_root) -> None:
    data = {
        "name": "billing",
        "description": "",
        "is_active": "on",
        "scopes": "",
        "user": "",
        "match_authority": trusted_root.pk,
        "match_field": "uri_san",
        "match_pattern": "spiffe://prod.example/ns/**/api",
        "certificates-TOTAL_FORMS": "0",
        "certificates-INITIAL_FORMS": "0",
        "certificates-MIN_NUM_FORMS": "0",
        "certificates-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post("/admin/certauth/certificateidentity/add/", data)
    assert response.status_code == 200, response.status_code  # the form again, not a redirect
    assert "allowed only as the whole last segment" in response.content.decode()
    assert not CertificateIdentity.objects.filter(name="billing").exists()
    data["match_pattern"] = "spiffe://prod.example/ns/billing/**"
    assert admin_client.post("/admin/certauth/certificateidentity/add/", data).status_code == 302
    assert CertificateIdentity.objects.get(name="billing").match_pattern == "spiffe://prod.example/ns/billing/**"


def test_a_stored_pattern_from_before_matches_nothing(api, pki, trusted_root) -> None:
    # Written without clean(), as a row from an earlier version sits in the database (certauth.W013 names it).
    CertificateIdentity.objects.create(
        name="legacy", match_authority=trusted_root, match_field="subject_cn", match_pattern="billing-servic?"
    )
    refused(api.get("/api/whoami/", pki.client), Reason.UNKNOWN_CERTIFICATE)


def test_a_stored_rule_with_an_unknown_field_admits_no_one_rather_than_failing_every_request(
    api, pki, trusted_root, caplog
) -> None:
    """W013 tells the operator such a rule "admits no certificate until it is corrected", and a stored pattern
    outside the language matches nothing; an unknown field (a row written by an older version, a fixture, SQL)
    used to raise ValueError from ``matching.field_values`` on every request that reached the rules: a 500 for
    every certificate that is not pinned.  ``rules.load_rules`` now skips such rows (and says so once)."""
    from certauth.registry import registry

    rule("billing", trusted_root, "dns_san", "*.billing.example")
    CertificateIdentity.objects.filter(name="billing").update(match_field="subject_o")  # no save(): no clean()
    rule("ops", trusted_root, "subject_cn", "billing-service")  # a valid rule next to it still admits
    registry.invalidate()
    api.client.raise_request_exception = False  # see the status a client gets
    with caplog.at_level(logging.WARNING, logger="certauth"):
        response = api.get("/api/whoami/", pki.stranger)
        assert response.status_code == 401, response.status_code
        refused(response, Reason.UNKNOWN_CERTIFICATE)
        registry.invalidate()  # the rules are read again: the row is not reported again
        assert api.get("/api/whoami/", pki.client).json()["identity"] == "ops"
    warnings = [record for record in caplog.records if "subject_o" in record.getMessage()]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]


@override_settings(CERTAUTH=CHAIN)
def test_a_sub_ca_excluded_from_a_mailbox_cannot_mint_it_in_other_case(api, pki, trusted_root) -> None:
    # The root delegated every address to the sub-CA except the CEO's mailbox (RFC 5280 excluded subtree).
    sub_ca = constrained_ca(pki.root, "mail sub-CA", excluded=[x509.RFC822Name("ceo@victim.example")])
    rule("ceo", trusted_root, "email_san", "ceo@victim.example")
    # The sub-CA cannot mint the CEO's mailbox as written: the chain verifier refuses it...
    exact = leaf(sub_ca, ["mallory"], emails=["ceo@victim.example"])
    assert api.get("/api/whoami/", exact, **chain_header(sub_ca)).status_code == 401
    # ...and the same mailbox with an upper-case local part, which passes the verifier's (case-sensitive, RFC 5321)
    # exclusion, is another mailbox for the rule too: the local part compares exactly (it used to be folded).
    minted = leaf(sub_ca, ["mallory"], emails=["CEO@victim.example"])
    response = api.get("/api/whoami/", minted, **chain_header(sub_ca))
    assert response.status_code == 401, response.content
    refused(response, Reason.UNKNOWN_CERTIFICATE)
    assert not RegisteredCertificate.objects.filter(thumbprint_sha256=minted.thumbprint).exists()
    # The domain still compares case-insensitively, as the verifier does: the real CEO's certificate from the root.
    ceo = leaf(pki.root, ["ceo"], emails=["ceo@Victim.Example"])
    assert api.get("/api/whoami/", ceo).json()["identity"] == "ceo"
