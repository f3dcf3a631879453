"""An explicitly trusted private CA is judged on what matters for security (issue 12, part 1).

Certificates are built in-process with ``cryptography`` to mimic each tool's profile: easy-rsa 3 (its CA marks
basicConstraints non-critical and writes an authorityKeyIdentifier with issuer and serial), ``openssl req
-x509`` with Debian's default configuration (no keyUsage on the CA), Ed25519 and Ed448 CAs (which
cryptography's verifier refuses: certauth's strict walker takes them, docs/SECURITY.md §39), and the seed
article's ``openssl x509 -req`` without ``-extfile`` (a version 1 client certificate).  Each goes through
``TrustStore.evaluate`` and through the API; the attack cases (forged, non-CA, pathLen, expired, wrong key)
must all be refused, with a detail naming the certificate at fault."""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certauth import devpki
from certauth.certificates import describe
from certauth.policy import V1_DETAIL, PolicyOptions, check_certificate
from certauth.reasons import CertificateRefused, Reason
from certauth.trust import (
    Authority,
    CrlIndex,
    TrustPolicy,
    TrustStore,
    diagnose_chain,
    lint_authority,
    registration_problems,
)

from . import derutil
from .conftest import failures


def now() -> dt.datetime:
    """Read where it is used (never captured at import: a slow machine would make it stale)."""
    return dt.datetime.now(dt.UTC)


# --- building certificates the way each tool does -------------------------------------------------------------
Key = Any


def ec_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    # A hostile CA writes whatever it likes: names past the 64-character limit too.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=len(cn) <= 64)])


def _sign(builder: x509.CertificateBuilder, key: Key) -> x509.Certificate:
    eddsa = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return builder.sign(key, None if eddsa else hashes.SHA256())


KU_CA = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
KU_NO_CERT_SIGN = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
KU_CLIENT = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass
class Made:
    """A certificate and its key (``devpki.Issued`` for the API client)."""

    certificate: x509.Certificate
    key: Key

    @property
    def issued(self) -> devpki.Issued:
        return devpki.Issued(self.certificate, self.key)

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject


def make_ca(
    cn: str,
    key: Key | None = None,
    *,
    issuer: Made | None = None,
    ca: bool | None = True,
    path_length: int | None = None,
    bc_critical: bool = True,
    key_usage: x509.KeyUsage | None = KU_CA,
    aki_issuer_serial: bool = False,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    signer: Key | None = None,
) -> Made:
    """A CA certificate.  ``ca=None`` leaves basicConstraints out; ``signer`` signs with another key than the
    issuer's (a forgery under the issuer's name)."""
    key = key or ec_key()
    start = not_before or now() - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.name if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or now() + dt.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=bc_critical)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=bc_critical)
    issuer_key = issuer.key if issuer else key
    if aki_issuer_serial:  # easy-rsa's authorityKeyIdentifier = keyid:always,issuer:always
        aki = x509.AuthorityKeyIdentifier(
            x509.SubjectKeyIdentifier.from_public_key(issuer_key.public_key()).digest,
            [x509.DirectoryName(issuer.certificate.issuer if issuer else _name(cn))],
            issuer.certificate.serial_number if issuer else 1,
        )
        builder = builder.add_extension(aki, critical=False)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    return Made(_sign(builder, signer or issuer_key), key)


def make_client(
    issuer: Made,
    cn: str,
    key: Key | None = None,
    *,
    eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    aki: bool = True,
    not_after: dt.datetime | None = None,
    signer: Key | None = None,
) -> Made:
    key = key or ec_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(not_after or now() + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(KU_CLIENT, critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    return Made(_sign(builder, signer or issuer.key), key)


def easy_rsa_ca(cn: str = "Easy-RSA CA") -> Made:
    """easy-rsa 3 (x509-types/ca): basicConstraints = CA:TRUE (non-critical), keyUsage = cRLSign, keyCertSign,
    authorityKeyIdentifier = keyid:always,issuer:always."""
    return make_ca(cn, rsa.generate_private_key(65537, 2048), bc_critical=False, aki_issuer_serial=True)


def openssl_default_ca(cn: str = "MyDev CA") -> Made:
    """``openssl req -x509`` with Debian's openssl.cnf (v3_ca): basicConstraints=critical,CA:true, no keyUsage."""
    return make_ca(cn, rsa.generate_private_key(65537, 2048), key_usage=None)


def trust(*cas: Made, disabled: tuple[Made, ...] = (), **policy: Any) -> TrustStore:
    return TrustStore(
        [Authority.from_certificate(i, _cn(c), c.certificate) for i, c in enumerate(cas, 1)],
        TrustPolicy(**policy),
        disabled=[Authority.from_certificate(100 + i, _cn(c), c.certificate) for i, c in enumerate(disabled)],
    )


def _cn(made: Made) -> str:
    return str(made.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def refused(store: TrustStore, leaf: Made, forwarded: tuple[Made, ...] = ()) -> CertificateRefused:
    with pytest.raises(CertificateRefused) as info:
        store.evaluate(leaf.certificate, [c.certificate for c in forwarded], now())
    assert "Certificate(" not in info.value.detail and "AlgorithmIdentifier" not in info.value.detail
    return info.value


def accepted(store: TrustStore, leaf: Made, forwarded: tuple[Made, ...] = ()) -> tuple[str, ...]:
    result = store.evaluate(leaf.certificate, [c.certificate for c in forwarded], now())
    assert result.kind == "chained"
    return result.chain


EDDSA = [pytest.param(ed25519.Ed25519PrivateKey, id="ed25519"), pytest.param(ed448.Ed448PrivateKey, id="ed448")]


# --- the profiles real tools write: accepted ------------------------------------------------------------------
def test_easy_rsa_ca_with_non_critical_basic_constraints() -> None:
    ca = easy_rsa_ca()
    leaf = make_client(ca, "easy-client")
    assert len(accepted(trust(ca), leaf)) == 2


def test_openssl_default_ca_without_key_usage() -> None:
    ca = openssl_default_ca()
    assert len(accepted(trust(ca), make_client(ca, "my-service"))) == 2


def test_client_without_authority_key_identifier() -> None:
    """``openssl x509 -req -extfile`` with only the three lines of the recipe: the webpki subscriber profile
    wanted an authorityKeyIdentifier; nothing security-relevant rests on it."""
    ca = openssl_default_ca()
    assert len(accepted(trust(ca), make_client(ca, "no-aki", aki=False))) == 2


def test_easy_rsa_intermediate_under_openssl_root() -> None:
    root = openssl_default_ca("Root")
    sub = make_ca("Sub", issuer=root, bc_critical=False, aki_issuer_serial=True)
    leaf = make_client(sub, "sub-client")
    assert len(accepted(trust(root), leaf, (sub,))) == 3


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_ca_chains(key_type: Any) -> None:
    ca = make_ca("Ed CA", key_type.generate())
    for leaf_key in (ec_key(), ed25519.Ed25519PrivateKey.generate()):
        leaf = make_client(ca, "ed-client", leaf_key)
        result = trust(ca).evaluate(leaf.certificate, [], now())
        assert result.kind == "chained" and result.anchor is not None and result.anchor.name == "Ed CA"


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_intermediate_under_ec_root_and_ec_intermediate_under_eddsa_root(key_type: Any) -> None:
    ec_root = make_ca("EC root")
    ed_sub = make_ca("Ed sub", key_type.generate(), issuer=ec_root)
    assert len(accepted(trust(ec_root), make_client(ed_sub, "a"), (ed_sub,))) == 3
    ed_root = make_ca("Ed root", key_type.generate())
    ec_sub = make_ca("EC sub", issuer=ed_root)
    assert len(accepted(trust(ed_root), make_client(ec_sub, "b"), (ec_sub,))) == 3
    # An Ed25519 intermediate registered as an authority (nginx forwards only the leaf) is an anchor itself.
    assert len(accepted(trust(ec_root, ed_sub), make_client(ed_sub, "c"))) == 2


def test_eddsa_chain_for_identity_rules() -> None:
    """``chain_to`` ("issued by authority A") takes the same Ed25519 path."""
    ca = make_ca("Ed CA", ed25519.Ed25519PrivateKey.generate())
    store = trust(ca)
    leaf = make_client(ca, "rule-client")
    assert store.issued_by(leaf.certificate, [], store.authorities[0].thumbprint_sha256, now())
    other = make_ca("Ed CA", ed25519.Ed25519PrivateKey.generate())  # same name, another key
    assert not trust(other).issued_by(leaf.certificate, [], trust(other).authorities[0].thumbprint_sha256, now())


# --- what still matters is still enforced (the library path) ---------------------------------------------------
def test_ca_key_usage_without_cert_sign_is_refused_and_named() -> None:
    ca = make_ca("No Sign CA", key_usage=KU_NO_CERT_SIGN)
    problem = refused(trust(ca), make_client(ca, "x"))
    assert problem.reason is Reason.CHAIN_INVALID
    assert "'No Sign CA' has a keyUsage extension without keyCertSign" in problem.detail


def test_intermediate_that_is_not_a_ca_is_refused_and_named() -> None:
    root = openssl_default_ca("Root")
    for ca_flag, words in ((False, "is not a CA"), (None, "has no basicConstraints")):
        fake = make_ca("Fake Sub", issuer=root, ca=ca_flag, key_usage=None)
        problem = refused(trust(root), make_client(fake, "x"), (fake,))
        assert problem.reason is Reason.CHAIN_INVALID
        assert f"intermediate 'Fake Sub' {words}" in problem.detail


def test_path_length_is_honoured_and_named() -> None:
    root = make_ca("Root", path_length=0, bc_critical=False)
    sub = make_ca("Sub", issuer=root)
    problem = refused(trust(root), make_client(sub, "x"), (sub,))
    assert problem.reason is Reason.CHAIN_INVALID
    assert "pathLenConstraint of 'Root' (0) forbids the 1 intermediate CA(s)" in problem.detail
    assert len(accepted(trust(root), make_client(root, "direct"))) == 2  # pathLen 0 still issues leaves


def test_expired_ca_is_named_with_its_date() -> None:
    start, end = now() - dt.timedelta(days=30), now() - dt.timedelta(days=1)
    root = openssl_default_ca("Root")
    old = make_ca("Old Sub", issuer=root, not_before=start, not_after=end)
    problem = refused(trust(root), make_client(old, "x"), (old,))
    assert problem.reason is Reason.CHAIN_INVALID
    assert f"intermediate 'Old Sub' expired on {old.certificate.not_valid_after_utc.isoformat()}" in problem.detail


def test_ca_limited_to_server_auth_does_not_vouch_for_clients() -> None:
    ca = make_ca("Server CA", extra=((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),))
    problem = refused(trust(ca), make_client(ca, "x"))
    assert problem.reason is Reason.WRONG_USAGE and "'Server CA'" in problem.detail


def test_leaf_usage_still_checked() -> None:
    ca = easy_rsa_ca()
    server_only = make_client(ca, "srv", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    assert refused(trust(ca), server_only).reason is Reason.WRONG_USAGE
    assert accepted(trust(ca, validate_certificate_use=False), server_only)
    assert refused(trust(ca), make_ca("Sub", issuer=ca)).reason is Reason.WRONG_USAGE  # a CA as the client


def test_unknown_issuer_is_named() -> None:
    problem = refused(trust(openssl_default_ca("Root")), make_client(easy_rsa_ca("Elsewhere CA"), "x"))
    assert problem.reason is Reason.UNTRUSTED_ISSUER and "'Elsewhere CA'" in problem.detail


@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_names_in_details_are_escaped_and_bounded() -> None:
    root = openssl_default_ca("Root")
    hostile = "evil\nX-Forged: 1 " + "A" * 500
    fake = make_ca(hostile, issuer=root, ca=False, key_usage=None)
    detail = refused(trust(root), make_client(fake, "x"), (fake,)).detail
    assert "\n" not in detail and "x0aX-Forged: 1 AAA" in detail and "A" * 101 not in detail


# --- Ed25519 / Ed448: the attack cases of the strict walker ------------------------------------------------------
@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_forged_chain_is_refused(key_type: Any) -> None:
    ca = make_ca("Ed CA", key_type.generate())
    forged = make_client(ca, "forged", signer=key_type.generate())  # the CA's name, another key
    problem = refused(trust(ca), forged)
    assert problem.reason is Reason.CHAIN_INVALID and "does not verify with the key of 'Ed CA'" in problem.detail


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_wrong_key_intermediate_is_refused(key_type: Any) -> None:
    root = make_ca("Ed Root", key_type.generate())
    sub = make_ca("Ed Sub", key_type.generate(), issuer=root, signer=key_type.generate())
    problem = refused(trust(root), make_client(sub, "x"), (sub,))
    assert problem.reason is Reason.CHAIN_INVALID and "intermediate 'Ed Sub'" in problem.detail


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_non_ca_intermediate_is_refused(key_type: Any) -> None:
    root = make_ca("Ed Root", key_type.generate())
    for ca_flag, words in ((False, "is not a CA"), (None, "has no basicConstraints")):
        fake = make_ca("Ed Fake", key_type.generate(), issuer=root, ca=ca_flag, key_usage=None)
        problem = refused(trust(root), make_client(fake, "x"), (fake,))
        assert problem.reason is Reason.CHAIN_INVALID and f"'Ed Fake' {words}" in problem.detail
    nosign = make_ca("Ed NoSign", key_type.generate(), issuer=root, key_usage=KU_NO_CERT_SIGN)
    assert "without keyCertSign" in refused(trust(root), make_client(nosign, "x"), (nosign,)).detail


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_path_length_violation_is_refused(key_type: Any) -> None:
    root = make_ca("Ed Root", key_type.generate(), path_length=0)
    sub = make_ca("Ed Sub", key_type.generate(), issuer=root)
    problem = refused(trust(root), make_client(sub, "x"), (sub,))
    assert "pathLenConstraint of 'Ed Root' (0)" in problem.detail
    root1 = make_ca("Ed Root1", key_type.generate(), path_length=1)
    a = make_ca("Ed A", key_type.generate(), issuer=root1)
    b = make_ca("Ed B", key_type.generate(), issuer=a)
    assert len(accepted(trust(root1), make_client(a, "ok"), (a,))) == 3
    too_deep = refused(trust(root1), make_client(b, "x"), (b, a))
    assert "pathLenConstraint of 'Ed Root1' (1) forbids the 2" in too_deep.detail


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_expired_ca_and_leaf_are_refused(key_type: Any) -> None:
    start, end = now() - dt.timedelta(days=30), now() - dt.timedelta(days=1)
    old_root = make_ca("Ed Old", key_type.generate(), not_before=start, not_after=end)
    problem = refused(trust(old_root), make_client(old_root, "x"))
    assert problem.reason is Reason.CHAIN_INVALID and "CA 'Ed Old' expired on" in problem.detail
    root = make_ca("Ed Root", key_type.generate())
    old_sub = make_ca("Ed Old Sub", key_type.generate(), issuer=root, not_before=start, not_after=end)
    assert "'Ed Old Sub' expired on" in refused(trust(root), make_client(old_sub, "x"), (old_sub,)).detail
    expired_leaf = make_client(root, "late", not_after=now() - dt.timedelta(minutes=1))
    assert refused(trust(root), expired_leaf).reason is Reason.CHAIN_INVALID
    # VALIDATE_VALIDITY_PERIOD off relaxes the leaf's own dates only, as for the library path.
    assert accepted(trust(root, validate_validity_period=False), expired_leaf)
    assert refused(trust(old_root, validate_validity_period=False), make_client(old_root, "y")).reason is (
        Reason.CHAIN_INVALID
    )


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_leaf_usage_and_extensions_are_checked(key_type: Any) -> None:
    root = make_ca("Ed Root", key_type.generate())
    assert refused(trust(root), make_client(root, "s", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))).reason is (
        Reason.WRONG_USAGE
    )
    assert refused(trust(root), make_ca("Ed Sub", issuer=root)).reason is Reason.WRONG_USAGE
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    odd = make_ca("Ed Odd", key_type.generate(), issuer=root, extra=((unknown, True),))
    assert "critical extension 1.3.6.1.4.1.55555.1" in refused(trust(root), make_client(odd, "x"), (odd,)).detail
    constrained = make_ca(
        "Ed NC",
        key_type.generate(),
        extra=((x509.NameConstraints([x509.DNSName("example.com")], None), True),),
    )
    assert "nameConstraints" in refused(trust(constrained), make_client(constrained, "x")).detail


@pytest.mark.parametrize("key_type", EDDSA)
def test_eddsa_disabled_authority_and_revocation_still_apply(key_type: Any) -> None:
    root = make_ca("Ed Root", key_type.generate())
    sub = make_ca("Ed Sub", key_type.generate(), issuer=root)
    leaf = make_client(sub, "x")
    assert refused(trust(root, disabled=(sub,)), leaf, (sub,)).reason is Reason.UNTRUSTED_ISSUER
    # The CRL of the Ed25519 sub-CA (registered as an authority) lists the leaf.
    crl = CrlIndex("sub", frozenset({leaf.certificate.serial_number}), now() - dt.timedelta(hours=1), None)
    store = TrustStore([Authority.from_certificate(1, "Ed Sub", sub.certificate, crl)], TrustPolicy(check_crl=True))
    assert refused(store, leaf).reason is Reason.CRL_REVOKED
    clean = TrustStore(
        [Authority.from_certificate(1, "Ed Sub", sub.certificate, CrlIndex("sub", frozenset(), now(), None))],
        TrustPolicy(check_crl=True),
    )
    assert len(accepted(clean, leaf)) == 2


def test_fallback_never_widens_a_chain_without_an_eddsa_ca() -> None:
    """An Ed25519 CA merely in the store does not make the walker accept a chain the library refused: the
    walker's acceptance needs an EdDSA CA in the chain it built."""
    ed = make_ca("Ed CA", ed25519.Ed25519PrivateKey.generate())
    root = openssl_default_ca("Root")
    fake = make_ca("Fake Sub", issuer=root, ca=False, key_usage=None)
    assert refused(trust(root, ed), make_client(fake, "x"), (fake,)).reason is Reason.CHAIN_INVALID
    # A CA key the verifier never takes, and no EdDSA: refused as weak, never walked into acceptance.
    k1 = make_ca("K1 CA", ec.generate_private_key(ec.SECP256K1()))
    problem = refused(trust(k1, ed), make_client(k1, "x"))
    assert problem.reason is Reason.WEAK_CERTIFICATE and "secp256k1" in problem.detail


def test_diagnose_chain_names_nothing_for_a_good_chain() -> None:
    ca = easy_rsa_ca()
    leaf = make_client(ca, "fine")
    assert diagnose_chain(leaf.certificate, [], [ca.certificate], now(), TrustPolicy()) is None


# --- the seed article's recipe: a v1 client certificate ---------------------------------------------------------
def v1_client() -> tuple[Made, Made]:
    """What ``openssl x509 -req`` without ``-extfile`` writes: version 1, no extensions (RSA, as the seed)."""
    ca = openssl_default_ca()
    v3 = make_client(ca, "my-service", rsa.generate_private_key(65537, 2048))

    def drop_version_and_extensions(fields: list[bytes]) -> list[bytes]:
        return [field for field in fields if field[0] not in (0xA0, 0xA3)]

    v1 = derutil.resign(v3.certificate, ca.key, transform=drop_version_and_extensions)
    assert v1.version is x509.Version.v1
    return ca, Made(v1, v3.key)


def test_v1_client_is_refused_with_the_recipe_that_fixes_it() -> None:
    ca, v1 = v1_client()
    with pytest.raises(CertificateRefused) as info:
        check_certificate(describe(v1.certificate), now(), PolicyOptions())
    assert info.value.reason is Reason.UNSUPPORTED_CERTIFICATE and info.value.detail == V1_DETAIL
    assert "-extfile" in V1_DETAIL and "extendedKeyUsage=clientAuth" in V1_DETAIL
    assert refused(trust(ca), v1).reason is Reason.UNSUPPORTED_CERTIFICATE


# --- hypothesis: every combination of the profile details a tool may choose -------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bc_critical=st.booleans(),
    key_usage=st.sampled_from(["absent", "cert_sign", "no_cert_sign"]),
    aki_issuer_serial=st.booleans(),
    key_kind=st.sampled_from(["ec", "ed25519", "ed448"]),
    ca_flag=st.sampled_from([True, False, None]),
)
def test_only_ca_ness_and_cert_sign_decide(
    bc_critical: bool, key_usage: str, aki_issuer_serial: bool, key_kind: str, ca_flag: bool | None
) -> None:
    key = {"ec": ec_key, "ed25519": ed25519.Ed25519PrivateKey.generate, "ed448": ed448.Ed448PrivateKey.generate}
    usage = {"absent": None, "cert_sign": KU_CA, "no_cert_sign": KU_NO_CERT_SIGN}[key_usage]
    root = make_ca("Root")
    sub = make_ca(
        "Sub",
        key[key_kind](),
        issuer=root,
        ca=ca_flag,
        bc_critical=bc_critical,
        key_usage=usage,
        aki_issuer_serial=aki_issuer_serial,
    )
    leaf = make_client(sub, "leaf")
    should_pass = ca_flag is True and key_usage != "no_cert_sign"
    store = trust(root)
    if should_pass:
        assert len(accepted(store, leaf, (sub,))) == 3
    else:
        problem = refused(store, leaf, (sub,))
        assert problem.reason is Reason.CHAIN_INVALID and "'Sub'" in problem.detail


# --- lint_authority: what `authority add` and the admin refuse or warn about -----------------------------------
def texts(problems: list[Any], severity: str) -> str:
    return " ".join(p.text for p in problems if p.severity == severity)


def lint(made: Made) -> list[Any]:
    return lint_authority(made.certificate, now())


def test_lint_authority() -> None:
    assert texts(lint(make_ca("Good")), "refuse") == ""
    easy = lint(easy_rsa_ca())
    assert texts(easy, "refuse") == "" and "non-critical" in texts(easy, "warn")
    assert "no keyUsage" in texts(lint(openssl_default_ca()), "warn")
    assert "keyCertSign" in texts(lint(make_ca("N", key_usage=KU_NO_CERT_SIGN)), "refuse")
    assert "not a CA" in texts(lint(make_ca("L", ca=False)), "refuse")
    old = make_ca("Old", not_before=now() - dt.timedelta(days=9), not_after=now() - dt.timedelta(days=1))
    assert "expired on" in texts(lint(old), "refuse")
    assert "secp256k1" in texts(lint(make_ca("K", ec.generate_private_key(ec.SECP256K1()))), "refuse")
    weak = make_ca("Weak", rsa.generate_private_key(65537, 1024))  # noqa: S505 - the weak key is the point
    assert "1024 bits" in texts(lint(weak), "refuse")
    server = make_ca("S", extra=((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),))
    assert "clientAuth" in texts(lint(server), "refuse")
    ed = lint(make_ca("Ed", ed25519.Ed25519PrivateKey.generate()))
    assert texts(ed, "refuse") == "" and "Ed25519/Ed448" in texts(ed, "warn")
    root = make_ca("R")
    assert "intermediate CA" in texts(lint(make_ca("I", issuer=root)), "warn")
    soon = make_ca("Soon", not_after=now() + dt.timedelta(days=3))
    assert "renew it soon" in texts(lint(soon), "warn")


def _pem(made: Made) -> bytes:
    return made.certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.django_db
def test_cli_authority_add_refuses_with_the_fix_and_warns(tmp_path: Any) -> None:
    from certauth.models import TrustedAuthority

    bad = tmp_path / "nosign.pem"
    bad.write_bytes(_pem(make_ca("No Sign CA", key_usage=KU_NO_CERT_SIGN)))
    with pytest.raises(CommandError, match=r"without keyCertSign.*keyUsage=critical,keyCertSign,cRLSign"):
        call_command("certauth", "authority", "add", "--name", "nosign", "--cert", str(bad))
    assert not TrustedAuthority.objects.exists()
    easy = tmp_path / "easy.pem"
    easy.write_bytes(_pem(easy_rsa_ca()))
    out = io.StringIO()
    call_command("certauth", "authority", "add", "--name", "easy", "--cert", str(easy), stdout=out)
    assert "warning:" in out.getvalue() and "non-critical" in out.getvalue()
    assert TrustedAuthority.objects.filter(name="easy").exists()


@pytest.mark.django_db
def test_admin_authority_form_refuses_and_warns(admin_client: Any) -> None:
    from certauth.models import TrustedAuthority

    url = "/admin/certauth/trustedauthority/add/"
    nosign = _pem(make_ca("No Sign CA", key_usage=KU_NO_CERT_SIGN)).decode()
    response = admin_client.post(url, {"name": "nosign", "is_enabled": "on", "certificate_text": nosign})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["certificate_text"]
    assert any("without keyCertSign" in str(error) for error in errors)
    assert not TrustedAuthority.objects.exists()
    easy = _pem(openssl_default_ca()).decode()
    response = admin_client.post(url, {"name": "mydev", "is_enabled": "on", "certificate_text": easy}, follow=True)
    assert response.status_code == 200 and TrustedAuthority.objects.filter(name="mydev").exists()
    shown = [str(message) for message in response.context["messages"]]
    assert any("no keyUsage" in message for message in shown), shown


# --- registration tells when a certificate could never authenticate (CLI and admin, the same words) ------------
def test_registration_problems() -> None:
    ca = openssl_default_ca()
    good = make_client(ca, "good")
    assert registration_problems(describe(good.certificate), trust(ca), now(), PolicyOptions()) == []
    _, v1 = v1_client()
    [problem] = registration_problems(describe(v1.certificate), trust(ca), now(), PolicyOptions())
    assert problem.severity == "refuse" and problem.text.startswith("This certificate could never authenticate")
    assert "-extfile" in problem.text
    [untrusted] = registration_problems(describe(good.certificate), trust(easy_rsa_ca()), now(), PolicyOptions())
    assert untrusted.severity == "warn" and untrusted.reason is Reason.UNTRUSTED_ISSUER
    selfie = devpki.self_signed_client("selfie")
    [self_signed] = registration_problems(describe(selfie.certificate), trust(ca), now(), PolicyOptions())
    assert self_signed.severity == "warn" and self_signed.reason is Reason.SELF_SIGNED_NOT_ALLOWED
    # Not yet valid is fine (a successor registered ahead of its start), as of its start.
    later = devpki.issue_client(devpki.make_ca("Later CA"), "later", not_before=now() + dt.timedelta(days=2))
    assert all(
        p.reason is Reason.UNTRUSTED_ISSUER
        for p in registration_problems(describe(later.certificate), trust(ca), now(), PolicyOptions())
    )


@pytest.mark.django_db
def test_cli_register_and_admin_form_give_the_same_words(tmp_path: Any, admin_client: Any) -> None:
    from certauth.models import CertificateIdentity, RegisteredCertificate

    _, v1 = v1_client()
    path = tmp_path / "v1.pem"
    path.write_bytes(_pem(v1))
    with pytest.raises(CommandError) as cli:
        call_command("certauth", "register", "--identity", "billing", "--cert", str(path))
    identity = CertificateIdentity.objects.create(name="admin-billing")
    data = {
        "identity": identity.pk,
        "label": "",
        "predecessor": "",
        "pem_text": _pem(v1).decode(),
        "pkcs12_password": "",
        "thumbprint": "",
        "thumbprint_not_before_0": "",
        "thumbprint_not_before_1": "",
        "thumbprint_not_after_0": "",
        "thumbprint_not_after_1": "",
    }
    response = admin_client.post("/admin/certauth/registeredcertificate/add/", data)
    assert response.status_code == 200
    [admin_error] = response.context["adminform"].form.errors["pem_text"]
    assert str(cli.value) == str(admin_error)
    assert "could never authenticate (unsupported_certificate)" in admin_error and "-extfile" in admin_error
    assert not RegisteredCertificate.objects.exists()
    # No enabled authority issued it: registered, with a warning (set-up scripts register before trusting).
    good = make_client(openssl_default_ca(), "good")
    path.write_bytes(_pem(good))
    out = io.StringIO()
    call_command("certauth", "register", "--identity", "billing", "--cert", str(path), stdout=out)
    warning = "  warning: Registering it is allowed, but requests with this certificate will still be refused"
    assert f"{warning} under the current trust policy (untrusted_issuer)" in out.getvalue()
    other = make_client(openssl_default_ca(), "other")
    data["pem_text"] = _pem(other).decode()
    response = admin_client.post("/admin/certauth/registeredcertificate/add/", data, follow=True)
    shown = [str(message) for message in response.context["messages"]]
    assert any("(untrusted_issuer)" in message for message in shown), shown
    assert RegisteredCertificate.objects.count() == 2


# --- through the API: the 401 body, the audit row and the log ---------------------------------------------------
@pytest.fixture
def private_api(db: Any) -> Any:
    from .conftest import CertClient

    return CertClient()


def _trust_and_register(ca: Made, leaf: Made, identity: str = "private") -> None:
    from certauth.authorities import add_authority
    from certauth.services import get_or_create_identity, register_certificate

    add_authority(_cn(ca), _pem(ca))
    ident, _ = get_or_create_identity(identity, scopes=None)
    register_certificate(ident, leaf.certificate)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(easy_rsa_ca, id="easy-rsa"),
        pytest.param(openssl_default_ca, id="openssl-default"),
        pytest.param(lambda: make_ca("Ed25519 CA", ed25519.Ed25519PrivateKey.generate()), id="ed25519"),
        pytest.param(lambda: make_ca("Ed448 CA", ed448.Ed448PrivateKey.generate()), id="ed448"),
    ],
)
def test_private_ca_profiles_authenticate_through_the_api(private_api: Any, make: Any) -> None:
    ca = make()
    leaf = make_client(ca, "api-client")
    _trust_and_register(ca, leaf)
    response = private_api.get("/api/whoami/", leaf.issued)
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_v1_client_through_the_api(private_api: Any) -> None:
    ca, v1 = v1_client()
    from certauth.authorities import add_authority

    add_authority("MyDev CA", _pem(ca))
    response = private_api.get("/api/whoami/", v1.issued)
    assert response.status_code == 401
    body = response.json()
    assert body["reason"] == "unsupported_certificate" and "-extfile" in body["detail"]


@pytest.mark.django_db
@override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"})
def test_chain_invalid_detail_in_body_audit_and_log(private_api: Any, caplog: Any) -> None:
    root = make_ca("Ed Root", ed25519.Ed25519PrivateKey.generate(), path_length=0)
    sub = make_ca("Ed Sub", ed25519.Ed25519PrivateKey.generate(), issuer=root)
    leaf = make_client(sub, "deep")
    _trust_and_register(root, leaf)
    chain = quote(_pem(sub).decode(), safe="")
    with caplog.at_level(logging.INFO, logger="certauth"):
        response = private_api.get("/api/whoami/", leaf.issued, HTTP_X_SSL_CLIENT_CHAIN=chain)
    assert response.status_code == 401
    body = response.json()
    assert body["reason"] == "chain_invalid"
    assert "pathLenConstraint of 'Ed Root' (0) forbids the 1 intermediate CA(s)" in body["detail"]
    assert "Certificate(" not in body["detail"] and "AlgorithmIdentifier" not in body["detail"]
    [row] = failures(reason="chain_invalid")
    assert row.detail == body["detail"]
    assert any("pathLenConstraint of 'Ed Root'" in record.getMessage() for record in caplog.records)


@pytest.mark.django_db
def test_system_check_w016_names_an_authority_no_chain_can_use() -> None:
    """An authority stored before ``lint_authority`` existed (or expired since) is reported by the database
    check; a good one is not."""
    from django.core.checks import run_checks

    from certauth.authorities import add_authority
    from certauth.models import TrustedAuthority

    add_authority("good", _pem(openssl_default_ca()))
    TrustedAuthority.objects.create(
        name="nosign",
        certificate_pem=_pem(make_ca("No Sign CA", key_usage=KU_NO_CERT_SIGN)).decode(),
        thumbprint_sha256="0" * 64,
    )
    found = [m for m in run_checks(databases=["default"]) if m.id == "certauth.W016"]
    assert len(found) == 1 and "'nosign'" in found[0].msg and "keyCertSign" in found[0].msg


def test_walk_is_bounded_on_a_hostile_forwarded_chain() -> None:
    """Many same-named CA certificates for the same keys (the forwarded chain is the client's text): the
    walk stops after ``WALK_BUDGET`` candidates instead of trying every path, and refuses."""
    from certauth.trust import MAX_FORWARDED_CHAIN, WALK_BUDGET

    keys = [ed25519.Ed25519PrivateKey.generate() for _ in range(4)]
    trusted = make_ca("Ed Root", ed25519.Ed25519PrivateKey.generate())
    layers: list[list[Made]] = []
    for depth, key in enumerate(keys):
        signer = keys[depth - 1] if depth else ed25519.Ed25519PrivateKey.generate()  # the top layer: nobody's
        issuer = Made(make_ca("Loop", signer).certificate, signer)
        layers.append([make_ca("Loop", key, issuer=issuer) for _ in range(4)])
    leaf = make_client(Made(layers[-1][0].certificate, keys[-1]), "x")
    forwarded = tuple(c for layer in layers for c in layer)
    # Within the chain bound (trust.forwarded_problem), yet 4**4 paths of same-named candidates.
    assert len(forwarded) <= MAX_FORWARDED_CHAIN and 4 ** len(keys) > WALK_BUDGET
    problem = refused(trust(trusted), leaf, forwarded)
    assert problem.reason is Reason.CHAIN_INVALID and "too many candidate CAs" in problem.detail


def test_name_constraints_still_applied_and_said() -> None:
    ca = make_ca("NC CA", extra=((x509.NameConstraints([x509.DNSName("example.com")], None), True),))

    def with_san(name: str) -> Made:
        key = ec_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("nc-client"))
            .issuer_name(ca.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - dt.timedelta(hours=1))
            .not_valid_after(now() + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        )
        return Made(_sign(builder, ca.key), key)

    assert accepted(trust(ca), with_san("api.example.com"))
    problem = refused(trust(ca), with_san("evil.org"))
    assert problem.reason is Reason.CHAIN_INVALID and "nameConstraints" in problem.detail
