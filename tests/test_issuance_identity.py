"""A certificate's identity is not its bytes: a revocation reaches every encoding of the same issuance, and a
key revoked as compromised refuses every certificate for that key.

The attack: an ECDSA signature (r, s) is as valid as (r, n - s), and the signature lies outside what the
issuer signed, so anyone holding a certificate (public data) can make a second DER of it with a new
SHA-256 thumbprint and the same serial, subject and key (``tests.derutil.ecdsa_twin``).  Every test here
builds that twin for real and sends it the way nginx does (DRF's test client, ``CertClient``)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from certauth import devpki, services
from certauth.authorities import add_authority
from certauth.certificates import describe, thumbprint_of
from certauth.models import CertificateIdentity, RegisteredCertificate, TrustedAuthority
from certauth.reasons import Reason

from .conftest import escaped, failures
from .derutil import ecdsa_twin, split, tlv

pytestmark = pytest.mark.django_db

PAYMENTS_URI = "spiffe://prod.example/payments/api"


# --- helpers -----------------------------------------------------------------------------------------------------
def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def header(certificate: x509.Certificate) -> str:
    """What nginx forwards for this exact DER."""
    return escaped(pem(certificate))


def twin_of(issued: devpki.Issued, issuer: devpki.Issued) -> x509.Certificate:
    twin = ecdsa_twin(issued.certificate, issuer.certificate)
    assert thumbprint_of(twin) != issued.thumbprint  # a new thumbprint ...
    assert twin.tbs_certificate_bytes == issued.certificate.tbs_certificate_bytes  # ... for the same signed content
    return twin


def issue_for_key(issuer: devpki.Issued, common_name: str, key: ec.EllipticCurvePrivateKey, uri: str) -> devpki.Issued:
    """A client certificate from ``issuer`` for an existing key (what a CA does when a holder renews without
    a new key, or when a stolen key is certified again elsewhere)."""
    now = dt.datetime.now(dt.UTC)
    issuer_key = issuer.private_key
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return devpki.Issued(certificate, key)


def rule_identity(name: str, authority: TrustedAuthority, uri: str = PAYMENTS_URI) -> CertificateIdentity:
    """An identity admitted by rule: any certificate from ``authority`` with exactly this URI SAN."""
    return CertificateIdentity.objects.create(
        name=name, match_authority=authority, match_field="uri_san", match_pattern=uri, scopes="orders:read"
    )


def refused(response: Any, reason: Reason, detail: str) -> str:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == str(reason), body
    assert detail in body["detail"], body
    return str(body["detail"])


@pytest.fixture
def other_authority(db: Any, pki: Any) -> TrustedAuthority:
    """A second, unrelated CA that is trusted too: "whoever issued it"."""
    return add_authority("other trusted CA", pki.other_ca.cert_pem())


# --- the pure layer ----------------------------------------------------------------------------------------------
def test_the_twin_keeps_every_issuance_key_and_changes_only_the_thumbprint(pki) -> None:
    original = describe(pki.client.certificate)
    twin = describe(twin_of(pki.client, pki.root))
    assert twin.thumbprint_sha256 != original.thumbprint_sha256
    assert twin.issuer_serial_sha256 == original.issuer_serial_sha256
    assert twin.tbs_sha256 == original.tbs_sha256
    assert twin.spki_sha256 == original.spki_sha256
    assert twin.serial_number == original.serial_number and twin.subject == original.subject
    # and the keys tell different certificates apart
    other = describe(pki.client2.certificate)
    assert {other.issuer_serial_sha256, other.tbs_sha256, other.spki_sha256}.isdisjoint(
        {original.issuer_serial_sha256, original.tbs_sha256, original.spki_sha256}
    )


@pytest.mark.parametrize("serial", [1, 127, 128, 255, 256, 2**64, 2**159 - 1])
def test_the_issuer_and_serial_key_hashes_the_fields_as_signed(pki, serial) -> None:
    """issuer_serial_of hashes the issuer Name and the serial INTEGER exactly as the TBS carries them, then the
    AuthorityKeyIdentifier's keyIdentifier as an OCTET STRING (which CA of that name); without one, name and
    serial alone."""
    import hashlib

    from certauth.certificates import issuer_serial_of

    from .derutil import content

    certificate = devpki.issue_client(pki.root, "serial-probe", serial=serial).certificate
    fields = split(content(certificate.tbs_certificate_bytes))  # [version], serial, signature alg, issuer, ...
    offset = 1 if fields[0][0] == 0xA0 else 0
    serial_der, issuer_der = fields[offset], fields[offset + 2]
    key_id = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert key_id is not None and len(key_id) < 0x80
    expected = hashlib.sha256(issuer_der + serial_der + tlv(0x04, key_id)).hexdigest()
    assert issuer_serial_of(certificate) == expected
    # No AuthorityKeyIdentifier: name and serial, as before the identifier was added.
    now = dt.datetime.now(dt.UTC)
    bare = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(certificate.issuer)
        .public_key(certificate.public_key())
        .serial_number(certificate.serial_number)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(pki.root.private_key, hashes.SHA256())
    )
    assert issuer_serial_of(bare) == hashlib.sha256(issuer_der + serial_der).hexdigest()


def test_the_key_hash_does_not_depend_on_how_the_point_is_written(pki) -> None:
    """The same EC key written as a compressed point in the SPKI is the same key (key_compromise reaches it)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .derutil import content, resign

    public = pki.client.private_key.public_key()
    uncompressed = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    algorithm = split(content(uncompressed))[0]
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    compressed = tlv(0x30, algorithm + tlv(0x03, b"\x00" + point))

    def with_compressed_key(fields: list[bytes]) -> list[bytes]:
        fields[6 if fields[0][0] == 0xA0 else 5] = compressed  # version, serial, alg, issuer, validity, subject, SPKI
        return fields

    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rewritten = resign(pki.client.certificate, signer, transform=with_compressed_key)
    assert compressed in rewritten.tbs_certificate_bytes
    assert describe(rewritten).spki_sha256 == describe(pki.client.certificate).spki_sha256


# --- the attack of the issue: a rule-admitted identity, its entry revoked, the twin presented ------------------------
@pytest.mark.parametrize("revocation", ["key_compromise", "superseded"])
def test_the_twin_of_a_revoked_rule_entry_is_refused_and_not_recorded(api, pki, trusted_root, revocation) -> None:
    rule_identity("payments", trusted_root)
    issued = devpki.issue_client(pki.root, "payments-1", uris=[PAYMENTS_URI])
    assert api.get("/api/whoami/", issued).json()["identity"] == "payments"
    entry = RegisteredCertificate.objects.get(thumbprint_sha256=issued.thumbprint)
    assert entry.source == "rule"
    entry.revoke(revocation)

    twin = twin_of(issued, pki.root)
    response = api.get("/api/whoami/", header(twin))
    detail = refused(response, Reason.CERTIFICATE_REVOKED, f"Same issuance as revoked entry {issued.thumbprint}")
    assert revocation in detail
    # Not recorded as a fresh entry: the registry still holds one entry for this certificate.
    assert not RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint_of(twin)).exists()
    [row] = failures(reason="certificate_revoked", thumbprint_sha256=thumbprint_of(twin))
    assert "Same issuance as revoked entry" in row.detail and row.identity_id == entry.identity_id
    refused(api.get("/api/whoami/", issued), Reason.CERTIFICATE_REVOKED, "revoked")  # the original, as before


def test_the_twin_of_a_revoked_pinned_entry_is_revoked_not_unknown(api, pki, register) -> None:
    entry = register(pki.client, identity="billing")
    assert api.get("/api/whoami/", pki.client).status_code == 200
    services.revoke(entry, "unspecified")
    refused(
        api.get("/api/whoami/", header(twin_of(pki.client, pki.root))),
        Reason.CERTIFICATE_REVOKED,
        f"Same issuance as revoked entry {pki.client.thumbprint}",
    )


def test_a_bulk_revocation_reaches_the_twin_too(api, pki, register) -> None:
    register(pki.client, identity="billing")
    twin = twin_of(pki.client, pki.root)
    # a re-encoding of a live pinned entry: unknown (and that answer is cached in this worker)
    assert api.get("/api/whoami/", header(twin)).json()["reason"] == "unknown_certificate"
    assert services.revoke_many(RegisteredCertificate.objects.all(), "cessation_of_operation") == 1
    refused(api.get("/api/whoami/", header(twin)), Reason.CERTIFICATE_REVOKED, "Same issuance as revoked entry")


# --- a compromised key: every certificate for it, whoever issued it ------------------------------------------------
def test_a_key_revoked_as_compromised_refuses_a_certificate_for_it_from_another_issuer(
    api, pki, register, trusted_root, other_authority
) -> None:
    original = devpki.issue_client(pki.root, "payments-1", uris=[PAYMENTS_URI])
    key = original.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    elsewhere = issue_for_key(pki.other_ca, "payments-elsewhere", key, "spiffe://other.example/payments")
    pinned_elsewhere = register(elsewhere, identity="payments-at-other-ca")
    assert api.get("/api/whoami/", elsewhere).json()["identity"] == "payments-at-other-ca"  # warm in this worker now

    register(original, identity="payments").revoke("key_compromise")
    detail = refused(api.get("/api/whoami/", elsewhere), Reason.CERTIFICATE_REVOKED, "key was revoked as compromised")
    assert original.thumbprint in detail
    [row] = failures(reason="certificate_revoked", thumbprint_sha256=elsewhere.thumbprint)
    assert "compromised" in row.detail and row.identity_id == pinned_elsewhere.identity_id

    # By rule, too: a fresh certificate for the key, from the other CA, matching a rule there, is never recorded.
    rule_identity("by-rule-elsewhere", other_authority, "spiffe://other.example/by-rule")
    by_rule = issue_for_key(pki.other_ca, "by-rule", key, "spiffe://other.example/by-rule")
    refused(api.get("/api/whoami/", by_rule), Reason.CERTIFICATE_REVOKED, "key was revoked as compromised")
    assert not RegisteredCertificate.objects.filter(thumbprint_sha256=by_rule.thumbprint).exists()

    # And registering one is refused with the same reason.
    fresh = issue_for_key(pki.other_ca, "fresh", key, "spiffe://other.example/fresh")
    with pytest.raises(ValidationError) as raised:
        services.register_certificate(CertificateIdentity.objects.get(name="payments"), fresh.certificate)
    assert raised.value.code == "certificate_revoked"
    assert "key was revoked as compromised" in raised.value.messages[0]


def test_another_revocation_reason_leaves_other_certificates_for_the_key_alone(
    api, pki, register, other_authority
) -> None:
    original = devpki.issue_client(pki.root, "payments-1", uris=[PAYMENTS_URI])
    key = original.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    register(original, identity="payments").revoke("superseded")  # rotated out; the key itself is fine
    renewed = issue_for_key(pki.other_ca, "payments-renewed", key, "spiffe://other.example/payments")
    register(renewed, identity="payments")  # no refusal
    assert api.get("/api/whoami/", renewed).json()["identity"] == "payments"
    # ... but the same issuance as the revoked entry stays refused
    refused(
        api.get("/api/whoami/", header(twin_of(original, pki.root))),
        Reason.CERTIFICATE_REVOKED,
        "Same issuance as revoked entry",
    )


def test_a_superseded_entry_revoked_again_as_key_compromise_refuses_its_key(
    api, pki, register, trusted_root, settings
) -> None:
    """Review 3, F3: revocation is one-way but its reason ratchets up.  A rotation retires the old entry as
    superseded (the key is fine); when the key is later found compromised, revoking that entry again as
    key_compromise must take: otherwise a certificate for the key from another trusted CA, admitted by rule,
    authenticates."""
    other = add_authority("other trusted CA", pki.other_ca.cert_pem())
    original = devpki.issue_client(pki.root, "payments-1", uris=[PAYMENTS_URI])
    key = original.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    entry = register(original, identity="payments")
    services.retire(entry)  # rotated out: superseded
    retired_at = RegisteredCertificate.objects.get(pk=entry.pk).revoked_at
    CertificateIdentity.objects.create(
        name="by-rule", match_authority=other, match_field="uri_san", match_pattern="spiffe://other.example/r"
    )
    # The key turns out to be compromised: the operator says so.
    entry.refresh_from_db()
    changed = services.revoke(entry, "key_compromise")
    entry.refresh_from_db()
    stolen = issue_for_key(pki.other_ca, "stolen", key, "spiffe://other.example/r")
    response = api.get("/api/whoami/", stolen)
    assert response.status_code == 401, (changed, entry.revocation_reason, response.json())
    assert response.json()["reason"] == "certificate_revoked"
    assert changed is True and entry.revocation_reason == "key_compromise"
    assert entry.revoked_at == retired_at  # refused since it was retired: the date stays
    # A ratchet: nothing lowers it again, in the model or in bulk.
    assert services.revoke(entry, "superseded") is False
    assert services.revoke_many(RegisteredCertificate.objects.all(), "unspecified") == 0
    entry.revocation_reason = "superseded"
    with pytest.raises(ValidationError, match="cannot be lowered"):
        entry.save()


def test_a_stale_instance_cannot_lower_a_key_compromise_revocation(register, pki) -> None:
    """Review 4: ``RegisteredCertificate.revoke`` decided on the instance's ``revoked_at`` and saved the reason:
    an instance loaded while the entry was live (an admin page, a rotation that retires its predecessor) that
    revoked after someone else revoked it as ``key_compromise`` overwrote the reason (and the date) in the
    database, and the key was admitted again.  The database decides now (conditional UPDATEs)."""
    from certauth.registry import read_database_generation

    entry = register(pki.client)
    stale = RegisteredCertificate.objects.get(pk=entry.pk)  # loaded while live
    before = read_database_generation()
    assert services.revoke(RegisteredCertificate.objects.get(pk=entry.pk), "key_compromise")  # meanwhile
    assert read_database_generation() > before  # every worker drops its cached answer for the key
    compromised_at = RegisteredCertificate.objects.get(pk=entry.pk).revoked_at
    assert services.retire(stale) is False  # superseded, from the instance loaded earlier: nothing changes
    entry.refresh_from_db()
    assert entry.revocation_reason == "key_compromise"
    assert entry.revoked_at == compromised_at
    assert (stale.revocation_reason, stale.revoked_at) == ("key_compromise", compromised_at)  # refreshed


def test_the_command_line_raises_a_retired_entry_to_key_compromise(pki, register) -> None:
    entry = register(pki.client, identity="payments")
    services.retire(entry)
    out = io.StringIO()
    call_command(
        "certauth", "revoke", "--thumbprint", entry.thumbprint_sha256, "--reason", "key_compromise", stdout=out
    )
    assert "reason raised from superseded to key_compromise" in out.getvalue()
    out = io.StringIO()
    call_command("certauth", "revoke", "--thumbprint", entry.thumbprint_sha256, "--reason", "unspecified", stdout=out)
    assert "already revoked" in out.getvalue() and "key_compromise" in out.getvalue()
    entry.refresh_from_db()
    assert entry.revocation_reason == "key_compromise"


def test_bulk_key_compromise_raises_retired_entries_and_revokes_live_ones(pki, register) -> None:
    retired, live, compromised = register(pki.client, identity="a"), register(pki.client2, identity="b"), None
    services.retire(retired)
    compromised = register(pki.stranger, identity="c")
    compromised.revoke("key_compromise")
    before = {e.pk: e.revoked_at for e in RegisteredCertificate.objects.all()}
    assert services.revoke_many(RegisteredCertificate.objects.all(), "key_compromise") == 2  # retired + live
    after = {e.pk: e for e in RegisteredCertificate.objects.all()}
    assert {e.revocation_reason for e in after.values()} == {"key_compromise"}
    assert after[retired.pk].revoked_at == before[retired.pk] and after[live.pk].revoked_at is not None


def test_same_name_same_serial_from_another_ca_is_another_certificate(api, register, settings) -> None:
    """Review 3, F5: "the same issuance" is the same issuing CA and serial, not the same issuer NAME and serial.
    Two trusted CAs with one name (two private CAs both called "Internal CA", each numbering from 1; a CA
    re-keyed under its old name) are two issuers; the leaf's AuthorityKeyIdentifier tells them apart."""
    ca_a = devpki.make_ca("review3 internal CA")
    ca_b = devpki.make_ca("review3 internal CA")  # another CA (another key), the same name
    assert ca_a.certificate.subject == ca_b.certificate.subject
    add_authority("internal CA (team A)", ca_a.cert_pem())
    add_authority("internal CA (team B)", ca_b.cert_pem())
    from_a = devpki.issue_client(ca_a, "alice", serial=2)
    from_b = devpki.issue_client(ca_b, "bob", serial=2)
    entry_a = register(from_a, identity="alice")
    register(from_b, identity="bob")  # was: ValidationError "already registered as entry ... (identity 'alice')"
    entry_a.revoke("unspecified")
    assert api.get("/api/whoami/", from_b).json().get("identity") == "bob"
    # ... while A's own issuance stays revoked in every encoding.
    refused(api.get("/api/whoami/", header(twin_of(from_a, ca_a))), Reason.CERTIFICATE_REVOKED, "Same issuance")


def test_a_rule_admits_another_cas_certificate_with_a_registered_name_and_serial(api, register) -> None:
    """Review 3, F5, by rule: B's certificate is not "a re-encoding" of A's registered one."""
    ca_a = devpki.make_ca("review3 shared name")
    ca_b = devpki.make_ca("review3 shared name")
    add_authority("team A", ca_a.cert_pem())
    authority_b = add_authority("team B", ca_b.cert_pem())
    register(devpki.issue_client(ca_a, "alice", serial=7, uris=[PAYMENTS_URI]), identity="alice")
    rule_identity("payments-by-rule", authority_b)
    from_b = devpki.issue_client(ca_b, "payments", serial=7, uris=[PAYMENTS_URI])
    assert api.get("/api/whoami/", from_b).json().get("identity") == "payments-by-rule"


# --- the per-worker caches: warm requests read no rows, a change anywhere reaches the cached answers ------------
def test_warm_rule_admitted_requests_read_no_registry_rows(api, pki, trusted_root) -> None:
    """The same-certificate check is cached with the registry cache: once a worker knows a certificate, its
    requests cost no query on the registry table (only the rate-limited last_used_at write may run)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rule_identity("payments", trusted_root)
    issued = devpki.issue_client(pki.root, "payments-1", uris=[PAYMENTS_URI])
    for _ in range(2):  # the first records the entry (a registry change), the second fills the caches again
        assert api.get("/api/whoami/", issued).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        for _ in range(3):
            assert api.get("/api/whoami/", issued).status_code == 200
    reads = [q["sql"] for q in captured.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert not [sql for sql in reads if "certauth_registeredcertificate" in sql], reads


def test_a_revocation_by_another_worker_reaches_the_cached_answer_for_the_twin(api, pki, register, monkeypatch) -> None:
    import time
    import types

    from certauth import registry as registry_module

    from .test_registry_cache import revoke_from_another_worker

    clock = [time.monotonic() + 1_000_000.0]  # far from the real clock (see test_registry_cache.clock)
    monkeypatch.setattr(registry_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    entry = register(pki.client, identity="billing")
    twin = header(twin_of(pki.client, pki.root))
    refused(api.get("/api/whoami/", twin), Reason.UNKNOWN_CERTIFICATE, "A re-encoding of registered certificate")
    revoke_from_another_worker(entry.pk)  # this worker is not told; the shared generation moved
    clock[0] += 1.5  # past REGISTRY_MAX_STALENESS_SECONDS (1 s)
    refused(api.get("/api/whoami/", twin), Reason.CERTIFICATE_REVOKED, "Same issuance as revoked entry")


# --- registration: services, admin form, CLI -------------------------------------------------------------------
@pytest.fixture
def revoked_billing(pki: Any, register: Any) -> RegisteredCertificate:
    entry = register(pki.client, identity="billing")
    entry.revoke("key_compromise")
    return entry  # type: ignore[no-any-return]


def test_registering_the_twin_of_a_revoked_entry_is_refused(pki, revoked_billing) -> None:
    twin = twin_of(pki.client, pki.root)
    identity = CertificateIdentity.objects.create(name="someone-else")
    with pytest.raises(ValidationError) as raised:
        services.register_certificate(identity, twin)
    assert raised.value.code == "certificate_revoked"
    assert "same issuance as revoked entry" in raised.value.messages[0]
    assert not RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint_of(twin)).exists()


def test_the_admin_form_refuses_the_twin_with_the_reason(pki, revoked_billing) -> None:
    from certauth.forms import RegistrationForm

    identity = CertificateIdentity.objects.create(name="someone-else")
    form = RegistrationForm(data={"identity": identity.pk, "pem_text": pem(twin_of(pki.client, pki.root)).decode()})
    assert not form.is_valid()
    [message] = form.errors["pem_text"]
    assert "certificate_revoked" in message and "same issuance as revoked entry" in message


def test_the_cli_refuses_the_twin_with_the_reason(pki, revoked_billing, tmp_path) -> None:
    path = tmp_path / "twin.pem"
    path.write_bytes(pem(twin_of(pki.client, pki.root)))
    with pytest.raises(CommandError, match="same issuance as revoked entry"):
        call_command("certauth", "register", "--identity", "someone-else", "--cert", str(path), stdout=io.StringIO())
    assert RegisteredCertificate.objects.count() == 1


def test_registering_the_twin_of_a_live_entry_is_a_duplicate(pki, register) -> None:
    register(pki.client, identity="billing")
    with pytest.raises(ValidationError) as raised:
        services.register_certificate(CertificateIdentity.objects.create(name="other"), twin_of(pki.client, pki.root))
    assert raised.value.code == "duplicate" and "already registered" in raised.value.messages[0]


# --- a live pinned entry and its twin ------------------------------------------------------------------------------
def test_the_twin_of_a_live_pinned_entry_is_unknown_even_where_a_rule_matches(api, pki, register, trusted_root) -> None:
    """The pin is the registered encoding.  A rule that matches the twin does not record a second entry for the
    same certificate (for its own identity or another): the twin is refused as unknown, with a detail that
    says what it is; the registered certificate keeps working."""
    issued = devpki.issue_client(pki.root, "payments-1", uris=[PAYMENTS_URI])
    register(issued, identity="payments-pinned")
    rule_identity("payments-by-rule", trusted_root)
    twin = twin_of(issued, pki.root)
    refused(
        api.get("/api/whoami/", header(twin)), Reason.UNKNOWN_CERTIFICATE, "A re-encoding of registered certificate"
    )
    assert not RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint_of(twin)).exists()
    assert api.get("/api/whoami/", issued).json()["identity"] == "payments-pinned"


# --- a typed thumbprint gains its keys when its certificate is first presented --------------------------------
def test_a_typed_thumbprint_learns_its_keys_when_presented(api, pki, trusted_root) -> None:
    identity = CertificateIdentity.objects.create(name="typed")
    entry = services.register_thumbprint(
        identity, pki.client.thumbprint, not_after=pki.client.certificate.not_valid_after_utc
    )
    assert entry.tbs_sha256 is None  # nothing to compute them from yet
    assert api.get("/api/whoami/", pki.client).json()["identity"] == "typed"
    entry.refresh_from_db()
    info = describe(pki.client.certificate)
    assert (entry.issuer_serial_sha256, entry.tbs_sha256, entry.spki_sha256) == (
        info.issuer_serial_sha256,
        info.tbs_sha256,
        info.spki_sha256,
    )
    entry.revoke("key_compromise")
    rule_identity("billing-by-rule", trusted_root, "spiffe://certauth.dev/billing-service")
    refused(
        api.get("/api/whoami/", header(twin_of(pki.client, pki.root))),
        Reason.CERTIFICATE_REVOKED,
        "Same issuance as revoked entry",
    )


def test_a_revoked_typed_thumbprint_learns_its_keys_and_refuses_the_twin(api, pki, trusted_root) -> None:
    """Revoked before its certificate was ever seen: the refused original teaches the registry its keys (a
    registry change, so every worker drops a cached answer for a re-encoding), then the twin is refused, even
    with the entry a rule recorded for it meanwhile."""
    identity = CertificateIdentity.objects.create(name="typed")
    entry = services.register_thumbprint(
        identity, pki.client.thumbprint, not_after=pki.client.certificate.not_valid_after_utc
    )
    entry.revoke("key_compromise")
    rule_identity("billing-by-rule", trusted_root, "spiffe://certauth.dev/billing-service")
    twin = header(twin_of(pki.client, pki.root))
    # Nothing to know it by yet: the rule admits (and records) the twin.  The limit of a typed thumbprint.
    assert api.get("/api/whoami/", twin).json()["identity"] == "billing-by-rule"
    refused(api.get("/api/whoami/", pki.client), Reason.CERTIFICATE_REVOKED, "revoked")
    entry.refresh_from_db()
    assert entry.tbs_sha256 == describe(pki.client.certificate).tbs_sha256
    refused(api.get("/api/whoami/", twin), Reason.CERTIFICATE_REVOKED, "Same issuance as revoked entry")


# --- the data migration -----------------------------------------------------------------------------------------
def _issuance_keys_migration(loader: Any) -> tuple[str, str]:
    """The migration that adds the keys, whatever number it was given when merged."""
    [key] = [key for key in loader.disk_migrations if key[0] == "certauth" and key[1].endswith("_issuance_keys")]
    return key  # type: ignore[no-any-return]


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_the_keys_of_existing_rows(pki) -> None:
    """Rows written before the migration (in the old shape) get their keys from their stored PEM; a typed
    thumbprint, or a PEM that is not the pinned certificate, stays NULL."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    target = _issuance_keys_migration(executor.loader)
    before = [parent.key for parent in executor.loader.graph.node_map[target].parents]
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        old_fields = {field.name for field in old.get_model("certauth", "RegisteredCertificate")._meta.get_fields()}
        assert "tbs_sha256" not in old_fields  # really the old shape
        identity = old.get_model("certauth", "CertificateIdentity").objects.create(name="old")
        entries = old.get_model("certauth", "RegisteredCertificate").objects
        not_after = pki.client.certificate.not_valid_after_utc
        for thumbprint, stored in (
            (pki.client.thumbprint, pki.client.cert_pem().decode()),  # a registered certificate
            (pki.client2.thumbprint, ""),  # a typed thumbprint
            (pki.stranger.thumbprint, pki.client.cert_pem().decode()),  # a PEM that is not this thumbprint's
            ("ab" * 32, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"),
        ):
            entries.create(identity=identity, thumbprint_sha256=thumbprint, certificate_pem=stored, not_after=not_after)

        executor = MigrationExecutor(connection)
        executor.migrate([target])
        new = executor.loader.project_state([target]).apps
        rows = {
            row["thumbprint_sha256"]: row
            for row in new.get_model("certauth", "RegisteredCertificate").objects.values(
                "thumbprint_sha256", "issuer_serial_sha256", "tbs_sha256", "spki_sha256"
            )
        }
        info = describe(pki.client.certificate)
        assert rows[pki.client.thumbprint] == {
            "thumbprint_sha256": pki.client.thumbprint,
            "issuer_serial_sha256": info.issuer_serial_sha256,
            "tbs_sha256": info.tbs_sha256,
            "spki_sha256": info.spki_sha256,
        }
        for untouched in (pki.client2.thumbprint, pki.stranger.thumbprint, "ab" * 32):
            assert rows[untouched]["tbs_sha256"] is None and rows[untouched]["spki_sha256"] is None
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
