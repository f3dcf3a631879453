"""Attack review of the private-CA trust change (issue 12, part 1): the relaxed CA profile, the Ed25519/Ed448
walk, ``diagnose_chain``, the details it writes.  Each test is one attack; it passes when the attack fails.

Two attacks worked on the merged code and are fixed (docs/SECURITY.md §44):

* with ``VALIDATE_VALIDITY_PERIOD`` off the chain was verified at a moment inside the *leaf's* validity, a
  moment the leaf's issuer picks: an expired anchor or intermediate (or one not yet valid) was accepted for a
  backdated leaf, although docs/trust.md says CAs must still be valid now;
* RSA CA keys with a huge public exponent (OpenSSL takes up to the modulus size for keys <= 3072 bits) cost
  ~6 ms per signature check; same-named decoys in the forwarded chain cost every request about a second of CPU
  in the verifier and the walk.  They are now refused before any signature is checked with them.

The rest are attacks that fail, kept as regression tests, several as a differential between the library path
(EC keys) and the walk (the same chain with an Ed25519 CA)."""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.test import override_settings

from certauth.reasons import CertificateRefused, Reason
from certauth.trust import (
    MAX_FORWARDED_CHAIN,
    MAX_RSA_EXPONENT_BITS,
    WALK_BUDGET,
    Authority,
    CrlIndex,
    TrustPolicy,
    TrustStore,
    lint_authority,
)

from . import derutil
from .conftest import failures
from .test_private_ca import (
    KU_CA,
    KU_CLIENT,
    KU_NO_CERT_SIGN,
    Made,
    _pem,
    _sign,
    accepted,
    ec_key,
    make_ca,
    make_client,
    now,
    refused,
    trust,
)

UNKNOWN = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.9"), b"\x05\x00")


def ed_key() -> Any:
    return ed25519.Ed25519PrivateKey.generate()


KEYS = [pytest.param(ec_key, id="library-ec"), pytest.param(ed_key, id="walk-ed25519")]


def leaf_between(
    issuer: Made,
    cn: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    key: Any = None,
    issuer_name: x509.Name | None = None,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    ku: x509.KeyUsage | None = KU_CLIENT,
    bc: x509.BasicConstraints | None = None,
    aki_of: Any = None,
) -> Made:
    """A client certificate with chosen dates, issuer name encoding and extensions."""
    key = key or ec_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=len(cn) <= 64)]))
        .issuer_name(issuer_name or issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if ku is not None:
        builder = builder.add_extension(ku, critical=True)
    if bc is not None:
        builder = builder.add_extension(bc, critical=True)
    if aki_of is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_of), critical=False)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    return Made(_sign(builder, issuer.key), key)


def fresh_leaf(issuer: Made, cn: str = "client", **kwargs: Any) -> Made:
    return leaf_between(issuer, cn, now() - dt.timedelta(hours=1), now() + dt.timedelta(days=30), **kwargs)


def outcome(store: TrustStore, leaf: Made, forwarded: tuple[Made, ...] = ()) -> str:
    """``accepted`` or the refusal's reason code: what a differential compares."""
    try:
        store.evaluate(leaf.certificate, [c.certificate for c in forwarded], now())
    except CertificateRefused as refusal:
        assert "Certificate(" not in refusal.detail
        return str(refusal.reason)
    return "accepted"


# --- VALIDATE_VALIDITY_PERIOD off: only the leaf's dates are relaxed (fixed, §44) ------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_validity_off_does_not_revive_an_expired_anchor(key: Any) -> None:
    """The leaf's issuer chooses the leaf's dates, hence the moment the chain was verified at: a leaf backdated
    into the life of an expired CA made that CA valid again.  Failed on the merged code: accepted, both paths."""
    old_root = make_ca(
        "Old Root", key(), not_before=now() - dt.timedelta(days=60), not_after=now() - dt.timedelta(days=1)
    )
    backdated = leaf_between(old_root, "backdated", now() - dt.timedelta(days=30), now() - dt.timedelta(days=10))
    problem = refused(trust(old_root, validate_validity_period=False), backdated)
    assert problem.reason is Reason.CHAIN_INVALID
    assert f"The CA 'Old Root' expired on {old_root.certificate.not_valid_after_utc.isoformat()}" in problem.detail
    # The leaf's own dates are still relaxed under a CA valid now and then.
    root = make_ca("Root", key(), not_before=now() - dt.timedelta(days=60))
    expired = leaf_between(root, "expired", now() - dt.timedelta(days=30), now() - dt.timedelta(days=10))
    assert len(accepted(trust(root, validate_validity_period=False), expired)) == 2
    assert refused(trust(root), expired).reason is Reason.CHAIN_INVALID


@pytest.mark.parametrize("key", KEYS)
def test_validity_off_does_not_accept_an_expired_or_future_intermediate(key: Any) -> None:
    root = make_ca("Root", key(), not_before=now() - dt.timedelta(days=60))
    old_sub = make_ca(
        "Old Sub", key(), issuer=root, not_before=now() - dt.timedelta(days=50), not_after=now() - dt.timedelta(days=2)
    )
    backdated = leaf_between(old_sub, "backdated", now() - dt.timedelta(days=40), now() - dt.timedelta(days=20))
    problem = refused(trust(root, validate_validity_period=False), backdated, (old_sub,))
    assert problem.reason is Reason.CHAIN_INVALID and "intermediate 'Old Sub' expired on" in problem.detail
    # A successor intermediate not valid yet, with a leaf dated in its future validity.
    future = make_ca(
        "Future Sub",
        key(),
        issuer=root,
        not_before=now() + dt.timedelta(days=10),
        not_after=now() + dt.timedelta(days=100),
    )
    ahead = leaf_between(future, "ahead", now() + dt.timedelta(days=20), now() + dt.timedelta(days=30))
    problem = refused(trust(root, validate_validity_period=False), ahead, (future,))
    assert problem.reason is Reason.CHAIN_INVALID and "intermediate 'Future Sub' is not valid before" in problem.detail


@pytest.mark.django_db
def test_validity_off_expired_intermediate_through_the_api(db: Any) -> None:
    """Through the API the leaf must be admitted by an entry that has not expired: a thumbprint registered with
    its own dates (an entry registered from the certificate expires with it).  Failed on the merged code: 200."""
    from certauth.authorities import add_authority
    from certauth.certificates import thumbprint_of
    from certauth.services import get_or_create_identity, register_thumbprint

    from .conftest import CertClient

    root = make_ca("API Root", not_before=now() - dt.timedelta(days=60))
    old_sub = make_ca(
        "API Old Sub", issuer=root, not_before=now() - dt.timedelta(days=50), not_after=now() - dt.timedelta(days=2)
    )
    leaf = leaf_between(old_sub, "backdated", now() - dt.timedelta(days=40), now() - dt.timedelta(days=20))
    add_authority("API Root", _pem(root))
    identity, _ = get_or_create_identity("backdated", scopes=None)
    register_thumbprint(identity, thumbprint_of(leaf.certificate), not_after=now() + dt.timedelta(days=30))
    chain = quote(_pem(old_sub).decode(), safe="")
    with override_settings(CERTAUTH={"VALIDATE_VALIDITY_PERIOD": False, "CHAIN_HEADER": "X-SSL-Client-Chain"}):
        response = CertClient().get("/api/whoami/", leaf.issued, HTTP_X_SSL_CLIENT_CHAIN=chain)
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == "chain_invalid" and "intermediate 'API Old Sub' expired on" in body["detail"]
    assert [row.detail for row in failures(reason="chain_invalid")] == [body["detail"]]


# --- RSA keys with a huge public exponent (fixed, §44) -----------------------------------------------------------
def rsa_key_with_exponent(bits: int, exponent_bits: int) -> rsa.RSAPrivateKey:
    """A real RSA key pair whose public exponent has ``exponent_bits`` bits (OpenSSL signs and verifies with it)."""
    numbers = rsa.generate_private_key(65537, bits).private_numbers()
    p, q = numbers.p, numbers.q
    phi = (p - 1) * (q - 1)
    generator = random.Random(exponent_bits)
    while True:
        e = generator.getrandbits(exponent_bits) | (1 << (exponent_bits - 1)) | 1
        try:
            d = pow(e, -1, phi)
        except ValueError:
            continue
        break
    public = rsa.RSAPublicNumbers(e, p * q)
    private = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public)
    return private.private_key()


def test_huge_rsa_exponent_on_a_forwarded_intermediate_is_refused() -> None:
    """Failed on the merged code: the chain through it was accepted (neither the verifier nor the walk looks
    at the exponent), and same-named decoys with such keys cost ~6 ms each per check."""
    root = make_ca("Root")
    heavy = make_ca("Heavy Sub", rsa_key_with_exponent(2048, 1024), issuer=root)
    leaf = fresh_leaf(heavy)
    problem = refused(trust(root), leaf, (heavy,))
    assert problem.reason is Reason.WEAK_CERTIFICATE
    assert "forwarded certificate 'Heavy Sub' has an RSA public exponent of 1024 bits" in problem.detail
    # The same through "issued by authority A" (identity rules), and for an anchor at `authority add`.
    store = trust(root)
    assert store.chain_to(leaf.certificate, [heavy.certificate], store.authorities[0].thumbprint_sha256, now()) is None
    assert any("public exponent" in p.text for p in lint_authority(heavy.certificate, now()) if p.severity == "refuse")
    # An Ed25519 root: the walk is never reached with it either.
    ed_root = make_ca("Ed Root", ed_key())
    heavy_ed = make_ca("Heavy Ed Sub", rsa_key_with_exponent(2048, 1024), issuer=ed_root)
    assert refused(trust(ed_root), fresh_leaf(heavy_ed), (heavy_ed,)).reason is Reason.WEAK_CERTIFICATE
    # 65537 and a 32-bit exponent are fine.
    fine = make_ca("Fine Sub", rsa_key_with_exponent(2048, MAX_RSA_EXPONENT_BITS), issuer=root)
    assert len(accepted(trust(root), fresh_leaf(fine), (fine,))) == 3


def test_huge_exponent_decoys_are_refused_before_any_signature_check() -> None:
    """Same-named decoys (they need no valid signature) placed before the real intermediate."""
    root = make_ca("Root")
    sub_key = rsa.generate_private_key(65537, 2048)
    sub = make_ca("Sub", sub_key, issuer=root)
    decoys = []
    for _ in range(8):
        n = random.getrandbits(2048) | (1 << 2047) | 1
        public = rsa.RSAPublicNumbers((n >> 2) | 1, n).public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(sub.name)
            .issuer_name(root.name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - dt.timedelta(days=1))
            .not_valid_after(now() + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        decoys.append(Made(builder.sign(ec_key(), hashes.SHA256()), None))
    leaf = fresh_leaf(Made(sub.certificate, sub_key))
    problem = refused(trust(root), leaf, (*decoys, sub))
    assert problem.reason is Reason.WEAK_CERTIFICATE and "RSA public exponent of 2046 bits" in problem.detail
    assert len(accepted(trust(root), leaf, (sub,))) == 3


# --- the Ed25519/Ed448 walk ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("allowed", ["chained", "self_signed", "all"])
def test_ed25519_self_signed_ca_as_client_in_every_mode(allowed: str) -> None:
    ca = make_ca("Ed CA", ed_key())
    assert refused(trust(ca, allowed_types=allowed), ca).reason is Reason.WRONG_USAGE
    # A self-signed leaf without basicConstraints but with keyCertSign, pinned in "all" mode: still a leaf by
    # certauth's reading (self-signed: trust comes from the pin), never a CA in a chain (see below).
    bare = make_ca("Ed Bare", ed_key(), ca=None, key_usage=KU_CA)
    expected = "self_signed_not_allowed" if allowed == "chained" else "accepted"
    assert outcome(trust(ca, allowed_types=allowed), bare) == expected


def test_ed_leaf_with_key_cert_sign_or_ca_true_is_refused_and_cannot_issue() -> None:
    ca = make_ca("Ed CA", ed_key())
    signer = fresh_leaf(ca, "signer", ku=KU_CA)  # keyCertSign, no basicConstraints
    assert refused(trust(ca), signer).reason is Reason.WRONG_USAGE
    plain = fresh_leaf(ca, "plain")
    assert len(accepted(trust(ca), plain)) == 2
    # The holder of a genuine client certificate uses it as a CA: no basicConstraints, refused as an issuer.
    victim = fresh_leaf(plain, "victim")
    problem = refused(trust(ca), victim, (plain,))
    assert problem.reason is Reason.CHAIN_INVALID and "'plain' has no basicConstraints" in problem.detail


@pytest.mark.parametrize("ed_at", ["root", "intermediate"])
def test_mixed_chains_apply_every_ca_rule(ed_at: str) -> None:
    """Ed25519 above and EC/RSA below (or the reverse): the walk holds every CA to the same rules."""
    root = make_ca("Root", ed_key() if ed_at == "root" else ec_key())
    sub_key = ed_key() if ed_at == "intermediate" else rsa.generate_private_key(65537, 2048)
    no_bc = make_ca("No BC", sub_key, issuer=root, ca=None, key_usage=None)
    assert "'No BC' has no basicConstraints" in refused(trust(root), fresh_leaf(no_bc), (no_bc,)).detail
    not_ca = make_ca("Not CA", sub_key, issuer=root, ca=False)
    assert "'Not CA' is not a CA" in refused(trust(root), fresh_leaf(not_ca), (not_ca,)).detail
    no_sign = make_ca("No Sign", sub_key, issuer=root, key_usage=KU_NO_CERT_SIGN)
    assert "without keyCertSign" in refused(trust(root), fresh_leaf(no_sign), (no_sign,)).detail
    server = make_ca(
        "Server", sub_key, issuer=root, extra=((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),)
    )
    assert refused(trust(root), fresh_leaf(server), (server,)).reason is Reason.WRONG_USAGE
    zero = make_ca("Zero", sub_key, issuer=root, path_length=0)
    under = make_ca("Under", ed_key(), issuer=zero)
    assert "pathLenConstraint of 'Zero' (0)" in refused(trust(root), fresh_leaf(under), (under, zero)).detail
    assert len(accepted(trust(root), fresh_leaf(zero), (zero,))) == 3


def test_name_encoding_is_not_a_way_round_the_signature() -> None:
    """The walk compares names with ``x509.Name ==``; the verifier compares them itself.  Whatever either makes
    of a PrintableString against a UTF8String, the signature decides: another key under an equal-looking name
    is refused on both paths, and the CA's own key is accepted or refused alike on both."""
    results = {}
    for label, key in (("library", ec_key), ("walk", ed_key)):
        ca = make_ca("Enc CA", key())
        printable = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Enc CA", x509.name._ASN1Type.PrintableString)])
        assert ca.name != printable or ca.name == printable  # the comparison must not raise
        same_key = fresh_leaf(ca, "enc", issuer_name=printable)
        forged = fresh_leaf(Made(ca.certificate, key()), "forged", issuer_name=printable)
        assert outcome(trust(ca), forged) in ("chain_invalid", "untrusted_issuer")
        results[label] = outcome(trust(ca), same_key)
    assert results["library"] == results["walk"]  # today both refuse: the verifier matches names byte for byte


def test_a_forwarded_ed_decoy_that_forces_the_walk_does_not_admit_a_forgery() -> None:
    """A forwarded Ed25519 certificate named byte for byte like the leaf's issuer (PrintableString), so that the
    verifier meets an EdDSA key it refuses and the walk, which compares names with ``x509.Name ==`` (string
    types ignored), might reach the UTF8String-named anchor: a leaf not signed by the anchor's key is refused
    (today even one signed by it is, the verifier failing on the name first)."""
    ca = make_ca("Enc CA", ed_key())
    printable = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Enc CA", x509.name._ASN1Type.PrintableString)])
    decoy_key = ed_key()
    decoy = Made(
        x509.CertificateBuilder()
        .subject_name(printable)
        .issuer_name(printable)
        .public_key(decoy_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(days=1))
        .not_valid_after(now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(decoy_key, None),
        decoy_key,
    )
    forged = fresh_leaf(Made(ca.certificate, ed_key()), "forged", issuer_name=printable)
    assert outcome(trust(ca), forged, (decoy,)) == "chain_invalid"
    by_decoy = fresh_leaf(decoy, "by-decoy")  # signed by the decoy's own (untrusted, self-signed) key
    assert outcome(trust(ca), by_decoy, (decoy,)) in ("chain_invalid", "untrusted_issuer")


@pytest.mark.parametrize("key", KEYS)
def test_authority_key_identifier_is_neither_needed_nor_trusted(key: Any) -> None:
    ca = make_ca("AKI CA", key())
    wrong_aki = fresh_leaf(ca, "wrong-aki", aki_of=ec_key().public_key())
    assert outcome(trust(ca), wrong_aki) == "accepted"  # the signature decides, not the AKI
    forged = fresh_leaf(Made(ca.certificate, key()), "forged", aki_of=ca.key.public_key())  # right AKI, wrong key
    assert outcome(trust(ca), forged) == "chain_invalid"


def test_many_forwarded_same_named_certificates_are_bounded() -> None:
    """300 same-named Ed25519 CA certificates (the header limit allows ~130): refused, within the budget."""
    trusted = make_ca("Ed Root", ed_key())
    signer = ed_key()
    decoys = tuple(make_ca("Ed Root", ed_key(), issuer=Made(trusted.certificate, signer)) for _ in range(300))
    leaf = fresh_leaf(Made(decoys[0].certificate, decoys[0].key))
    problem = refused(trust(trusted), leaf, decoys)
    assert problem.reason is Reason.CHAIN_INVALID
    # The chain bound refuses it first; the walk's own budget backs it (a forwarded chain within the bound plus
    # many registered authorities of one name).
    assert "holds 300 certificates" in problem.detail
    assert MAX_FORWARDED_CHAIN < WALK_BUDGET <= 64


@pytest.mark.parametrize("key", [ed_key, ec_key])
def test_a_forwarded_chain_longer_than_the_bound_is_refused_before_any_signature_check(key: Any) -> None:
    """74 P-521 decoys in one header cost 0.15 s per request in the verifier and the walk: a chain of more than
    MAX_FORWARDED_CHAIN certificates is refused outright, while the same real chain with fewer decoys is still
    judged on its merits (so the bound, not the decoys, decides)."""
    root = make_ca("Bound Root", key())
    sub = make_ca("Bound Sub", key(), issuer=root)
    leaf = fresh_leaf(sub)
    decoys = tuple(make_ca("Bound Sub", key(), issuer=root) for _ in range(MAX_FORWARDED_CHAIN))
    assert outcome(trust(root), leaf, (sub, *decoys[: MAX_FORWARDED_CHAIN - 1])) == "accepted"
    problem = refused(trust(root), leaf, (sub, *decoys))
    assert problem.reason is Reason.CHAIN_INVALID
    assert f"holds {MAX_FORWARDED_CHAIN + 1} certificates" in problem.detail


def test_cycle_of_cross_signed_ed_cas_terminates_untrusted() -> None:
    key_a, key_b = ed_key(), ed_key()
    a_self = make_ca("Cycle A", key_a)
    b_self = make_ca("Cycle B", key_b)
    a_by_b = make_ca("Cycle A", key_a, issuer=Made(b_self.certificate, key_b))
    b_by_a = make_ca("Cycle B", key_b, issuer=Made(a_self.certificate, key_a))
    leaf = fresh_leaf(Made(a_by_b.certificate, key_a))
    problem = refused(trust(make_ca("Elsewhere", ed_key())), leaf, (a_by_b, b_by_a))
    assert problem.reason in (Reason.UNTRUSTED_ISSUER, Reason.CHAIN_INVALID)
    # With B trusted the cycle has an exit, and the chain ends there.
    assert len(accepted(trust(b_self), leaf, (a_by_b, b_by_a))) == 3


def test_disabled_ed_authority_under_another_name_is_blocked_on_the_walk() -> None:
    root = make_ca("Ed Root", ed_key())
    sub_key = ed_key()
    sub = make_ca("Ed Sub", sub_key, issuer=root)
    renamed = make_ca("Ed Sub Renewed", sub_key, issuer=root)  # the same key, another name
    leaf_old = fresh_leaf(Made(sub.certificate, sub_key))
    leaf_new = fresh_leaf(Made(renamed.certificate, sub_key))
    store = trust(root, disabled=(sub,))
    assert refused(store, leaf_new, (renamed,)).reason is Reason.UNTRUSTED_ISSUER
    assert refused(store, leaf_old, (sub,)).reason is Reason.UNTRUSTED_ISSUER
    assert len(accepted(trust(root), leaf_new, (renamed,))) == 3


def test_revoked_ed_intermediate_via_the_walk() -> None:
    root = make_ca("Ed Root", ed_key())
    sub = make_ca("EC Sub", issuer=root)
    leaf = fresh_leaf(sub)
    crl = CrlIndex("root", frozenset({sub.certificate.serial_number}), now() - dt.timedelta(hours=1), None)
    store = TrustStore([Authority.from_certificate(1, "Ed Root", root.certificate, crl)], TrustPolicy(check_crl=True))
    problem = refused(store, leaf, (sub,))
    assert problem.reason is Reason.CRL_REVOKED and "intermediate 'EC Sub'" in problem.detail


def test_expired_ed_anchor_refuses_its_mixed_chain() -> None:
    old = make_ca("Ed Old", ed_key(), not_before=now() - dt.timedelta(days=9), not_after=now() - dt.timedelta(days=1))
    sub = make_ca("EC Sub", issuer=old, not_before=now() - dt.timedelta(days=8))
    assert "'Ed Old' expired on" in refused(trust(old), fresh_leaf(sub), (sub,)).detail


def test_name_constraints_on_an_ed_intermediate_are_refused() -> None:
    root = make_ca("EC Root")
    nc = x509.NameConstraints([x509.DNSName("example.com")], None)
    sub = make_ca("Ed NC Sub", ed_key(), issuer=root, extra=((nc, True),))
    problem = refused(trust(root), fresh_leaf(sub), (sub,))
    assert problem.reason is Reason.CHAIN_INVALID and "'Ed NC Sub' carries nameConstraints" in problem.detail
    noncritical = make_ca("Ed NC2", ed_key(), issuer=root, extra=((nc, False),))
    assert "nameConstraints" in refused(trust(root), fresh_leaf(noncritical), (noncritical,)).detail


@pytest.mark.parametrize("key", KEYS)
def test_critical_unknown_extension_in_the_leaf(key: Any) -> None:
    ca = make_ca("CA", key())
    assert outcome(trust(ca), fresh_leaf(ca, extra=((UNKNOWN, True),))) == "chain_invalid"
    assert outcome(trust(ca), fresh_leaf(ca, extra=((UNKNOWN, False),))) == "accepted"


@pytest.mark.parametrize("allowed", ["chained", "self_signed", "all"])
def test_ed_self_signed_leaf_that_also_looks_issued(allowed: str) -> None:
    """A self-signed Ed25519 leaf named like the trusted CA (issuer = subject = 'Ed CA'), and a genuine leaf
    whose subject is its issuer's name: self-signed means the leaf's own key verifies it, never a name."""
    ca = make_ca("Ed CA", ed_key())
    key = ed_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.name)
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(now() + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    impostor = Made(builder.sign(key, None), key)
    store = trust(ca, allowed_types=allowed)
    if allowed == "chained":
        assert refused(store, impostor).reason is Reason.SELF_SIGNED_NOT_ALLOWED
    else:
        result = store.evaluate(impostor.certificate, [], now())
        assert result.kind == "self_signed" and result.anchor is None and result.chain == ()
    looks_self = fresh_leaf(ca, "Ed CA")  # subject == issuer, signed by the CA
    expected = "chained_not_allowed" if allowed == "self_signed" else "accepted"
    assert outcome(store, looks_self) == expected


# --- the relaxed profile: weak and old CAs --------------------------------------------------------------------------
def test_v1_intermediate_is_not_a_ca() -> None:
    """A version 1 CA certificate has no basicConstraints: refused on the library path, and as an anchor."""
    root = make_ca("RSA Root", rsa.generate_private_key(65537, 2048))
    sub_key = rsa.generate_private_key(65537, 2048)
    v3 = make_ca("V1 Sub", sub_key, issuer=root)

    def v1(fields: list[bytes]) -> list[bytes]:
        return [field for field in fields if field[0] not in (0xA0, 0xA3)]

    sub = Made(derutil.resign(v3.certificate, root.key, transform=v1), sub_key)
    assert sub.certificate.version is x509.Version.v1
    problem = refused(trust(root), fresh_leaf(sub), (sub,))
    assert problem.reason is Reason.CHAIN_INVALID and "'V1 Sub' has no basicConstraints" in problem.detail
    assert any("version 1" in p.text for p in lint_authority(sub.certificate, now()) if p.severity == "refuse")


@pytest.mark.parametrize("root_key", [pytest.param(ec_key, id="ec-root"), pytest.param(ed_key, id="ed-root")])
def test_rsa_1024_intermediate_is_weak(root_key: Any) -> None:
    root = make_ca("Root", root_key())
    weak = make_ca("Weak Sub", rsa.generate_private_key(65537, 1024), issuer=root)  # noqa: S505 - the point
    problem = refused(trust(root), fresh_leaf(weak), (weak,))
    assert problem.reason is Reason.WEAK_CERTIFICATE


@pytest.mark.parametrize("digest", ["sha1", "md5"])
@pytest.mark.parametrize("root_key", [pytest.param("rsa", id="rsa-root"), pytest.param("ed", id="ed-root")])
def test_sha1_and_md5_links_are_weak(digest: str, root_key: str) -> None:
    """An RSA intermediate signing the leaf with SHA-1/MD5, under an RSA root (library) or Ed25519 (walk)."""
    root = make_ca("Root", rsa.generate_private_key(65537, 2048) if root_key == "rsa" else ed_key())
    sub_key = rsa.generate_private_key(65537, 2048)
    sub = make_ca("RSA Sub", sub_key, issuer=root)
    leaf = fresh_leaf(sub)
    old = Made(derutil.resign(leaf.certificate, sub_key, digest=digest), leaf.key)
    assert refused(trust(root), old, (sub,)).reason is Reason.WEAK_CERTIFICATE


# --- a differential: the same chain shape on the library path (EC) and the walk (Ed25519) ------------------------
SHAPES = [
    "good",
    "inter_not_ca",
    "inter_no_bc",
    "inter_no_cert_sign",
    "inter_server_eku",
    "inter_path_len",
    "inter_expired",
    "inter_unknown_critical",
    "leaf_server_eku",
    "leaf_ca",
    "leaf_cert_sign",
    "leaf_unknown_critical",
    "leaf_expired",
    "leaf_not_yet_valid",
    "leaf_forged",
    "inter_forged",
    "root_expired",
    "root_not_yet_valid",
    "root_no_cert_sign",
    "root_server_eku",
    "root_unknown_critical",
]


def _shape(shape: str, key: Any) -> tuple[TrustStore, Made, tuple[Made, ...]]:
    day = dt.timedelta(days=1)
    root_kwargs: dict[str, Any] = {
        "root_expired": {"not_before": now() - 9 * day, "not_after": now() - day},
        "root_not_yet_valid": {"not_before": now() + day, "not_after": now() + 9 * day},
        "root_no_cert_sign": {"key_usage": KU_NO_CERT_SIGN},
        "root_server_eku": {"extra": ((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),)},
        "root_unknown_critical": {"extra": ((UNKNOWN, True),)},
    }.get(shape, {})
    path_length = 0 if shape == "inter_path_len" else None
    root = make_ca("Root", key(), path_length=path_length, **root_kwargs)
    kwargs: dict[str, Any] = {
        "inter_not_ca": {"ca": False},
        "inter_no_bc": {"ca": None, "key_usage": None},
        "inter_no_cert_sign": {"key_usage": KU_NO_CERT_SIGN},
        "inter_server_eku": {"extra": ((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),)},
        "inter_expired": {"not_before": now() - dt.timedelta(days=9), "not_after": now() - dt.timedelta(days=1)},
        "inter_unknown_critical": {"extra": ((UNKNOWN, True),)},
        "inter_forged": {"signer": key()},
    }.get(shape, {})
    sub = make_ca("Sub", key(), issuer=root, **kwargs)
    hour = dt.timedelta(hours=1)
    leaf = {
        "leaf_server_eku": lambda: make_client(sub, "c", eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        "leaf_ca": lambda: fresh_leaf(sub, bc=x509.BasicConstraints(ca=True, path_length=None)),
        "leaf_cert_sign": lambda: fresh_leaf(sub, ku=KU_CA),
        "leaf_unknown_critical": lambda: fresh_leaf(sub, extra=((UNKNOWN, True),)),
        "leaf_expired": lambda: leaf_between(sub, "c", now() - 2 * day, now() - hour),
        "leaf_not_yet_valid": lambda: leaf_between(sub, "c", now() + hour, now() + day),
        "leaf_forged": lambda: fresh_leaf(Made(sub.certificate, key())),
    }.get(shape, lambda: fresh_leaf(sub))()
    return trust(root), leaf, (sub,)


@pytest.mark.parametrize("shape", SHAPES)
def test_library_and_walk_agree(shape: str) -> None:
    library = outcome(*_shape(shape, ec_key))
    walk = outcome(*_shape(shape, ed_key))
    assert library == walk, (shape, library, walk)
    assert (library == "accepted") is (shape == "good")


# --- names in the 401 body, the audit row and the log --------------------------------------------------------------
HOSTILE = "evil\n\r\x1b[31m\x00\x85\x9b\u202e\u2028gnp.exe X-Forged: 1 " + "A" * 10_000


def _clean(text: str) -> None:
    for bad in ("\n", "\r", "\x1b", "\x00", "\x85", "\x9b", "\u202e", "\u2028"):
        assert bad not in text, (bad, text[:300])
    assert "A" * 101 not in text


@pytest.mark.filterwarnings("ignore:Attribute's length")
@pytest.mark.django_db
@pytest.mark.parametrize("key", KEYS)
def test_hostile_names_in_the_401_detail_audit_and_log(key: Any, caplog: Any) -> None:
    from certauth.authorities import add_authority
    from certauth.services import get_or_create_identity, register_certificate

    from .conftest import CertClient

    root = make_ca("Root", key())
    add_authority("Root", _pem(root))
    hostile_sub = make_ca(HOSTILE, key(), issuer=root, ca=False)
    leaf = fresh_leaf(hostile_sub, HOSTILE)
    stranger_ca = make_ca(HOSTILE, key())
    stranger = fresh_leaf(stranger_ca, HOSTILE)
    identity, _ = get_or_create_identity("hostile", scopes=None)
    register_certificate(identity, leaf.certificate)
    register_certificate(identity, stranger.certificate)
    chain = quote(_pem(hostile_sub).decode(), safe="")
    with override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"}), caplog.at_level(logging.INFO, "certauth"):
        first = CertClient().get("/api/whoami/", leaf.issued, HTTP_X_SSL_CLIENT_CHAIN=chain)
        second = CertClient().get("/api/whoami/", stranger.issued)
    for response, reason in ((first, "chain_invalid"), (second, "untrusted_issuer")):
        assert response.status_code == 401, response.content
        body = response.json()
        assert body["reason"] == reason
        _clean(body["detail"])
        assert "evil" in body["detail"]
        [row] = failures(reason=reason)
        assert row.detail == body["detail"]
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and "\x1b" not in message and "\u202e" not in message, message[:300]


@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_lint_and_registration_words_escape_hostile_names() -> None:
    from certauth.certificates import describe
    from certauth.policy import PolicyOptions
    from certauth.trust import registration_problems

    ca = make_ca(HOSTILE, ec_key(), key_usage=KU_NO_CERT_SIGN)
    for problem in lint_authority(ca.certificate, now()):
        _clean(problem.text)
    stranger = fresh_leaf(ca, "x")
    for problem in registration_problems(
        describe(stranger.certificate), trust(make_ca("Root")), now(), PolicyOptions()
    ):
        _clean(problem.text)


def test_ec_secp256k1_and_rsa_keys_behind_an_ed_anchor_stay_refused() -> None:
    """An Ed25519 anchor makes the verifier refuse for the algorithm and the walk run: a CA key the verifier
    never takes (secp256k1) on the same chain must not slip through the walk."""
    root = make_ca("Ed Root", ed_key())
    k1 = make_ca("K1 Sub", ec.generate_private_key(ec.SECP256K1()), issuer=root)
    problem = refused(trust(root), fresh_leaf(k1), (k1,))
    assert problem.reason is Reason.WEAK_CERTIFICATE and "secp256k1" in problem.detail


@pytest.mark.parametrize("intermediates", [8, 9])
def test_depth_limit_is_the_same_on_both_paths(intermediates: int) -> None:
    results = {}
    for label, key in (("library", ec_key), ("walk", ed_key)):
        root = make_ca("Root", key())
        chain, current = [], root
        for index in range(intermediates):
            current = make_ca(f"I{index}", key(), issuer=current)
            chain.append(current)
        results[label] = outcome(trust(root), fresh_leaf(current), tuple(reversed(chain)))
    assert results["library"] == results["walk"] == ("accepted" if intermediates == 8 else "chain_invalid")


# --- malformed and odd certificates on the walk: refused, never a 500 ------------------------------------------------
ED25519_ALGORITHM = bytes.fromhex("300506032b6570")


def _duplicate_first_extension(fields: list[bytes]) -> list[bytes]:
    out = []
    for field in fields:
        if field[0] == 0xA3:
            extensions = derutil.split(derutil.content(derutil.content(field)))
            field = derutil.tlv(0xA3, derutil.tlv(0x30, b"".join([extensions[0], *extensions])))
        out.append(field)
    return out


def resign_ed(certificate: x509.Certificate, issuer_key: ed25519.Ed25519PrivateKey, transform: Any) -> x509.Certificate:
    """``derutil.resign`` for an Ed25519 issuer."""
    fields = transform(derutil.split(derutil.content(certificate.tbs_certificate_bytes)))
    fields[2 if fields[0][0] == 0xA0 else 1] = ED25519_ALGORITHM
    tbs = derutil.tlv(0x30, b"".join(fields))
    signature = issuer_key.sign(tbs)
    return x509.load_der_x509_certificate(
        derutil.tlv(0x30, tbs + ED25519_ALGORITHM + derutil.tlv(0x03, b"\x00" + signature))
    )


def test_duplicate_extensions_on_the_walk_are_refused_not_raised() -> None:
    root = make_ca("Ed Root", ed_key())
    sub = make_ca("Ed Sub", ed_key(), issuer=root)
    bad_sub = Made(resign_ed(sub.certificate, root.key, _duplicate_first_extension), sub.key)
    assert outcome(trust(root), fresh_leaf(bad_sub), (bad_sub,)) == "chain_invalid"
    rsa_sub_key = rsa.generate_private_key(65537, 2048)
    rsa_sub = make_ca("RSA Sub", rsa_sub_key, issuer=root)
    leaf = fresh_leaf(rsa_sub)
    bad_leaf = Made(derutil.resign(leaf.certificate, rsa_sub_key, transform=_duplicate_first_extension), leaf.key)
    assert outcome(trust(root), bad_leaf, (rsa_sub,)) in ("chain_invalid", "malformed_certificate")
    store = trust(root)
    authority = store.authorities[0].thumbprint_sha256
    assert store.chain_to(bad_leaf.certificate, [rsa_sub.certificate], authority, now()) is None


@pytest.mark.django_db
def test_duplicate_extension_intermediate_on_the_walk_through_the_api(db: Any) -> None:
    from certauth.authorities import add_authority
    from certauth.services import get_or_create_identity, register_certificate

    from .conftest import CertClient

    root = make_ca("Ed Root", ed_key())
    sub = make_ca("Ed Sub", ed_key(), issuer=root)
    bad_sub = Made(resign_ed(sub.certificate, root.key, _duplicate_first_extension), sub.key)
    leaf = fresh_leaf(bad_sub)
    add_authority("Ed Root", _pem(root))
    identity, _ = get_or_create_identity("dup", scopes=None)
    register_certificate(identity, leaf.certificate)
    chain = quote(_pem(bad_sub).decode(), safe="")
    with override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"}):
        response = CertClient().get("/api/whoami/", leaf.issued, HTTP_X_SSL_CLIENT_CHAIN=chain)
    assert response.status_code == 401, response.content
    assert response.json()["reason"] in ("chain_invalid", "malformed_certificate")


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_keys_that_cannot_sign_or_are_not_taken_under_an_ed_root() -> None:
    from cryptography.hazmat.primitives.asymmetric import dsa, x25519

    root = make_ca("Ed Root", ed_key())
    dsa_key = dsa.generate_private_key(2048)
    dsa_sub = make_ca("DSA Sub", dsa_key, issuer=root)
    assert outcome(trust(root), fresh_leaf(dsa_sub), (dsa_sub,)) == "weak_certificate"
    x_key = x25519.X25519PrivateKey.generate()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "X Sub")]))
        .issuer_name(root.name)
        .public_key(x_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(days=1))
        .not_valid_after(now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    x_sub = Made(builder.sign(root.key, None), x_key)
    stray = fresh_leaf(Made(x_sub.certificate, ec_key()))  # claims X Sub as issuer; X25519 cannot sign
    assert outcome(trust(root), stray, (x_sub,)) == "chain_invalid"


def test_validity_off_identity_rule_chain_to_refuses_an_expired_ca() -> None:
    """``chain_to`` (identity rules "issued by authority A") shares ``_build``: the same fix applies there."""
    old = make_ca(
        "Old Root", ec_key(), not_before=now() - dt.timedelta(days=60), not_after=now() - dt.timedelta(days=1)
    )
    backdated = leaf_between(old, "backdated", now() - dt.timedelta(days=30), now() - dt.timedelta(days=10))
    store = trust(old, validate_validity_period=False)
    assert store.chain_to(backdated.certificate, [], store.authorities[0].thumbprint_sha256, now()) is None


def test_disabled_ed_root_above_an_enabled_ed_anchor_refuses_its_chains() -> None:
    """An Ed25519 intermediate registered as an authority (an anchor) whose root is registered and disabled,
    also when the intermediate names its issuer differently (the disabled key signed it all the same)."""
    root = make_ca("Ed Root", ed_key())
    sub = make_ca("Ed Sub", ed_key(), issuer=root)
    renamed_issuer = Made(make_ca("Not The Root", root.key).certificate, root.key)
    sub_renamed = make_ca("Ed Sub 2", ed_key(), issuer=renamed_issuer)
    for anchor in (sub, sub_renamed):
        store = TrustStore(
            [Authority.from_certificate(1, "sub", anchor.certificate)],
            TrustPolicy(),
            disabled=[Authority.from_certificate(2, "root", root.certificate)],
        )
        assert refused(store, fresh_leaf(anchor)).reason is Reason.UNTRUSTED_ISSUER
        assert len(accepted(trust(anchor), fresh_leaf(anchor))) == 2
