"""The trust policy: does a presented certificate chain to an enabled trusted authority, is it of an allowed
type (chained / self-signed), and is it revoked by its issuer's CRL?  Pure Python on ``cryptography``: no
Django imports.  ``certauth.authorities`` loads the enabled ``TrustedAuthority`` rows into a ``TrustStore``.

Chains are validated by ``cryptography.x509.verification``, under a CA profile of certauth's own (below).
Its error text embeds the certificate's repr, so it goes to the server log only: a refusal's detail comes
from ``diagnose_chain``, which walks the candidate chain itself and names the first problem and the
certificate at fault (bounded, escaped names), or else from a fixed text per error (``map_verification_error``).

**The CA profile: an explicitly trusted private CA is judged on what matters for security.**  cryptography 51's
``ExtensionPolicy.webpki_defaults_ca()`` is the CA/Browser Forum profile for public web PKIs: basicConstraints
present *and critical*, keyUsage present with keyCertSign, AIA/AKI/SKI/EKU non-critical, an AKI (when present)
with a keyIdentifier and without authorityCertIssuer/serial, nameConstraints with some subtree.  Real private
PKIs fail it for details that carry no security: easy-rsa 3 marks basicConstraints non-critical and writes
``authorityKeyIdentifier=keyid,issuer``; ``openssl req -x509`` with Debian's configuration writes no keyUsage.
``_ca_policy`` starts from ``ExtensionPolicy.permit_all()`` and asks, for every CA of a chain, the anchor included:

* basicConstraints present with CA:TRUE (``require_present``, ``Criticality.AGNOSTIC``); the library itself
  also refuses a CA without basicConstraints and enforces pathLenConstraint (it needs the chain depth);
* keyUsage may be absent (RFC 5280 4.2.1.3: no extension, no restriction), but when present it must assert
  keyCertSign;
* extendedKeyUsage may be absent; when present it must allow clientAuth (or anyExtendedKeyUsage): a CA limited
  to server certificates does not vouch for clients;
* every other extension may be present with any criticality, except that an extension the library does not
  process and that is marked critical still refuses the certificate (the library checks that in every policy),
  and nameConstraints are still applied (the library applies them outside the extension policy).

Still checked by the library whatever the profile: every signature, name chaining, validity at the
verification time, v3 for every certificate, key sizes (RSA >= 2048) and the webpki algorithm set (RSA,
P-256/384/521; PKCS#1 v1.5 or PSS with SHA-256/384/512, ECDSA with SHA-256/384/512), the chain depth (8).
certauth adds what the library does not ask: an RSA public exponent of at most 32 bits on every forwarded
certificate and CA (``forwarded_problem``, ``MAX_RSA_EXPONENT_BITS``: a huge one makes each signature check as
costly as a private-key operation), checked before any signature is verified with it.
Deliberately no longer required: basicConstraints criticality, keyUsage presence, AKI/SKI presence and AKI
form, AIA criticality.  Why it is safe: the anchor is trusted because an operator registered it (an explicit
act, checked by ``lint_authority``), not because a browser program audited it; what a forged or misused CA
would need (to be a CA, to be allowed to sign certificates, to sit within its pathLenConstraint, to be valid
now, to sign with a strong key) is all still required of the anchor and of every intermediate below it.

The client certificate (``_ee_policy``): not a CA, no keyCertSign, clientAuth in its extendedKeyUsage when
``VALIDATE_CERTIFICATE_USE`` (an absent EKU means any use), a subjectAltName only when required, no
nameConstraints.  No AKI is required (``openssl x509 -req`` with a short ``-extfile`` writes none).

**Ed25519 and Ed448 CAs.**  cryptography 51's verifier refuses them outright ("Forbidden public key algorithm":
its permitted SPKI and signature algorithm sets are fixed, not configurable from Python), although certauth's
strength rules accept Ed25519/Ed448 keys.  When the verifier refuses a chain *for its key or signature
algorithm* and a candidate CA holds an EdDSA key, ``eddsa_chain`` walks the chain itself (``_walk_chain``,
strict mode) and accepts it only if the chain it builds holds an Ed25519/Ed448 CA.  The walk uses the
library's ``verify_directly_issued_by`` for every signature and applies every check above: issuer name and
signature, CA:TRUE, keyCertSign when keyUsage is present, extendedKeyUsage, pathLenConstraint (counting every
intermediate, stricter than RFC 5280's self-issued exception), validity of every certificate, RSA >= 2048
and P-256/384/521 for any non-EdDSA CA key with SHA-256/384/512 signatures, the depth of 8, and the client
certificate's profile; it refuses any unknown critical extension and, as it cannot apply them, any
nameConstraints.  Disabled authorities, allowed types and revocation apply to its chain exactly as to the
library's (the same code after the chain is built).

Decisions the library leaves to us, made here:

* **Self-signed** means: issuer name equals subject name *and* the signature verifies with the certificate's
  own public key (``Certificate.verify_directly_issued_by``).  The verifier cannot decide it: it accepts any
  certificate that is itself in the store as a one-element chain, self-signed or not.
* ``ALLOWED_CERTIFICATE_TYPES``: ``chained`` - must chain to an enabled authority, a self-signed leaf is
  ``self_signed_not_allowed``; ``self_signed`` - only self-signed leaves (trust comes from the pinned
  thumbprint alone), anything else is ``chained_not_allowed``; ``all`` - a self-signed leaf is accepted
  (pinned only), any other certificate must still chain to an enabled authority.
* Every enabled authority, root or intermediate, is a trust anchor.  The forwarded chain supplies extra
  intermediates; registered intermediates are anchors themselves (nginx forwards only the leaf).
* Every disabled authority is a blocklist entry, by its public key (under any name): never a candidate in a built
  chain, and a chain that contains it or whose anchor it issued is ``untrusted_issuer``.
* Revocation (``REVOCATION_MODE = "crl"``): every certificate in the verified chain below the anchor is
  looked up in the CRL of the authority that issued it, and so is the anchor when its own issuer is a
  registered authority (and so on up).  Revoked -> ``crl_revoked`` (always fatal).  No CRL for that
  issuer, a CRL whose nextUpdate has passed, or one whose distribution point does not cover the certificate
  -> ``crl_unavailable`` unless fail-open, in which case the certificate is accepted and
  ``TrustResult.revocation_warning`` says why (the caller audits it).
* A CRL is used only if it can stand for all of its issuer's revocations (RFC 5280 5.2/5.3): no delta CRL,
  no IssuingDistributionPoint scope, no unknown critical extension (``crl_scope``); it replaces the CRL
  held only if it is not older and its CRLNumber does not go back (``check_crl_succession``).
* OCSP (``"ocsp"``, or ``"crl+ocsp"`` for both): every certificate below the anchor, and the anchor when its
  own issuer is a registered authority (and so on up), is asked about through ``certauth.ocsp.OcspChecker``
  (the issuing authority's configured responder, else the certificate's AIA).
  ``revoked`` -> ``certificate_revoked`` and ``unknown`` -> ``untrusted_issuer`` (both always fatal: the
  responder answered); no usable answer -> ``ocsp_unavailable`` unless fail-open, as for CRLs.  Every
  decision resting on an OCSP answer, an acceptance or a refusal ("unknown" is transient, a certificateHold
  is released), holds until that answer expires in the checker (its nextUpdate at most); one resting on a
  failure, for the checker's retry interval.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PSS, PKCS1v15
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .certificates import CertificateInfo, load_certificates, pem_bodies, printable, spki_of, thumbprint_of
from .lru import MISSING, BoundedCache
from .ocsp import OcspChecker, OcspError
from .policy import CA_LEAF_DETAIL, NO_CLIENT_AUTH_DETAIL, V1_DETAIL, PolicyOptions, check_certificate
from .reasons import CertificateRefused, Reason

logger = logging.getLogger("certauth")

ALLOWED_TYPES = ("chained", "self_signed", "all")
#: REVOCATION_MODE values: the registry alone, or with CRLs, OCSP, or both.
REVOCATION_MODES = ("registry", "crl", "ocsp", "crl+ocsp")
AllowedTypes = Literal["chained", "self_signed", "all"]
#: A refused chain is re-verified at most this often (a validity boundary may have passed meanwhile).
FAILURE_CACHE_SECONDS = 60


# --------------------------------------------------------------------------------------------------
# Policy and authorities
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """The trust settings, as read from ``CERTAUTH``."""

    allowed_types: AllowedTypes = "chained"
    validate_validity_period: bool = True
    validate_certificate_use: bool = True
    require_subject_alternative_name: bool = False
    check_crl: bool = False
    check_ocsp: bool = False
    revocation_fail_open: bool = False

    def __post_init__(self) -> None:
        if self.allowed_types not in ALLOWED_TYPES:
            raise ValueError(f"allowed_types must be one of {', '.join(ALLOWED_TYPES)}")


@dataclass(frozen=True, slots=True)
class CrlIndex:
    """A CRL parsed once: the revoked serial numbers of one issuer in a frozenset (O(1) lookup).

    ``distribution_points`` is empty for a CRL that covers every certificate of its issuer; a CRL whose
    IssuingDistributionPoint names a distribution point covers only the certificates that name it, see
    ``covers``."""

    issuer_thumbprint: str
    revoked_serials: frozenset[int]
    last_update: dt.datetime
    next_update: dt.datetime | None
    number: int | None = None
    distribution_points: frozenset[x509.GeneralName] = frozenset()

    def is_revoked(self, serial_number: int) -> bool:
        return serial_number in self.revoked_serials

    def covers(self, certificate: x509.Certificate) -> bool:
        """Is ``certificate`` within this CRL's scope (RFC 5280 6.3.3 b.2.i)?  A certificate whose CRL
        distribution points name none of this CRL's is in another partition: this CRL says nothing of it.
        Nor does a partition CRL speak for a certificate naming no distribution point at all: RFC 5280 6.3.3
        b.2.i asks for a distribution point of the certificate matching the CRL's, and such a certificate is on
        the CA's full CRL, which this is not."""
        if not self.distribution_points:
            return True
        try:
            points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except Exception:  # absent (ExtensionNotFound) or unreadable: no distribution point of this CRL's
            return False
        names = {name for point in points for name in (point.full_name or ())}
        return bool(names & self.distribution_points)

    def is_stale(self, now: dt.datetime) -> bool:
        """True once nextUpdate has passed.  A CRL without nextUpdate never goes stale by date."""
        return self.next_update is not None and now >= self.next_update

    def __len__(self) -> int:
        return len(self.revoked_serials)


@dataclass(frozen=True, slots=True)
class Authority:
    """An enabled trusted authority (root or intermediate CA) as the trust store sees it."""

    id: int
    name: str
    certificate: x509.Certificate = field(repr=False)
    thumbprint_sha256: str
    crl: CrlIndex | None = None
    crl_problem: str = ""  # why the stored CRL could not be used (bad signature, unreadable), for the audit
    ocsp_url: str = ""  # the responder for certificates this authority issued; "" = each certificate's AIA

    @classmethod
    def from_certificate(
        cls,
        id: int,
        name: str,
        certificate: x509.Certificate,
        crl: CrlIndex | None = None,
        crl_problem: str = "",
        ocsp_url: str = "",
    ) -> Authority:
        return cls(id, name, certificate, thumbprint_of(certificate), crl, crl_problem, ocsp_url)


# --------------------------------------------------------------------------------------------------
# Loading authority certificates and CRLs (admin uploads, CLI files, URL fetches): reasons only, never raw errors
# --------------------------------------------------------------------------------------------------


def load_authority_certificate(data: bytes) -> x509.Certificate:
    """One CA certificate from PEM or DER.  Raises ``CertificateRefused`` (and nothing else) when the data is
    not exactly one certificate, or the certificate is not a CA (basicConstraints CA:TRUE)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certificates = load_certificates(data)
        else:
            # DER read as is: stripping could eat a signature byte that happens to look like whitespace.
            certificates = [x509.load_der_x509_certificate(data)]
    except CertificateRefused:
        raise
    except Exception as exc:  # any parser surprise becomes a reason, never a 500
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "The data is not a certificate.") from exc
    if len(certificates) != 1:
        raise CertificateRefused(
            Reason.MALFORMED_CERTIFICATE, f"Expected one CA certificate, found {len(certificates)}."
        )
    certificate = certificates[0]
    if not is_ca(certificate):
        raise CertificateRefused(
            Reason.WRONG_USAGE,
            "This is not a CA certificate (basicConstraints CA:TRUE is missing): register client "
            "certificates on an identity instead.",
        )
    return certificate


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except Exception:
        return False
    return bool(constraints.ca)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER.  Raises ``CertificateRefused(CRL_UNAVAILABLE)`` and nothing else."""
    try:
        stripped = data.strip()
        if stripped.startswith(b"-----BEGIN"):
            # A linear scan with strict base64 (certificates.pem_bodies): no backtracking on whitespace.
            bodies = pem_bodies(stripped, "X509 CRL", strict=False)
            if not bodies:
                raise CertificateRefused(Reason.CRL_UNAVAILABLE, "No PEM 'X509 CRL' block was found.")
            der = bodies[0]
        else:
            der = data  # not stripped: a DER signature may well end in a byte that looks like whitespace
        return x509.load_der_x509_crl(der)
    except CertificateRefused:
        raise
    except Exception as exc:
        raise CertificateRefused(Reason.CRL_UNAVAILABLE, "The data is not a CRL (PEM or DER).") from exc


def index_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> CrlIndex:
    """Check the CRL belongs to ``issuer`` (name and signature), is a complete CRL certauth can apply (see
    ``crl_scope``), and index its revoked serials.  Raises ``CertificateRefused(CRL_UNAVAILABLE)`` and
    nothing else."""
    try:
        if crl.issuer != issuer.subject:
            raise CertificateRefused(Reason.CRL_UNAVAILABLE, "The CRL was issued by a different authority.")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise CertificateRefused(
                Reason.CRL_UNAVAILABLE, "The CRL's signature does not verify with the authority's key."
            )
        distribution_points = crl_scope(crl)
        if b"\x01\x01\xff" not in crl.tbs_certlist_bytes:
            # A critical flag is DER BOOLEAN TRUE, 01 01 FF (the parser takes DER only): none anywhere, so no
            # entry's extensions need reading, which halves the parse of a 100,000-entry CRL.
            revoked_serials = frozenset(entry.serial_number for entry in crl)
        else:
            revoked_serials = _revoked_serials_checking_entries(crl)
        return CrlIndex(
            issuer_thumbprint=thumbprint_of(issuer),
            revoked_serials=revoked_serials,
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            number=crl_number(crl),
            distribution_points=distribution_points,
        )
    except CertificateRefused:
        raise
    except Exception as exc:
        raise CertificateRefused(Reason.CRL_UNAVAILABLE, "The CRL could not be read.") from exc


def _revoked_serials_checking_entries(crl: x509.CertificateRevocationList) -> frozenset[int]:
    revoked = []
    for entry in crl:
        # An entry extension certauth does not process, marked critical (certificateIssuer, which makes the
        # CRL indirect: the entries that follow belong to another CA), makes the whole CRL unusable.
        for extension in entry.extensions:
            if extension.critical:
                raise CertificateRefused(
                    Reason.CRL_UNAVAILABLE,
                    f"The CRL's entry for serial {entry.serial_number:x} carries the critical extension "
                    f"{_extension_name(extension.oid)}, which certauth does not implement (RFC 5280 5.3): "
                    "the CRL is refused, not applied.",
                )
        revoked.append(entry.serial_number)
    return frozenset(revoked)


#: CRL extensions certauth reads or may safely ignore.  Any other extension marked critical makes the CRL
#: unusable (RFC 5280 5.2: "If a CRL contains a critical extension that the application cannot process,
#: then the application MUST NOT use that CRL to determine the status of certificates").
_UNDERSTOOD_CRL_EXTENSIONS = frozenset(
    {
        x509.oid.ExtensionOID.CRL_NUMBER,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        x509.oid.ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        x509.oid.ExtensionOID.FRESHEST_CRL,  # where delta CRLs are; certauth uses the full CRL only
        x509.oid.ExtensionOID.ISSUING_DISTRIBUTION_POINT,  # read by crl_scope
    }
)


def crl_scope(crl: x509.CertificateRevocationList) -> frozenset[x509.GeneralName]:
    """What this CRL covers: every certificate of its issuer (an empty set), or, when its
    IssuingDistributionPoint names a distribution point, the certificates that name that point.  Raises
    ``CertificateRefused(CRL_UNAVAILABLE)`` for a CRL certauth cannot hold as an authority's one CRL:

    * a delta CRL (DeltaCRLIndicator): it lists only the changes since a base CRL, so storing it in place of
      the full CRL would un-revoke everything the full CRL lists;
    * a CRL scoped by its IssuingDistributionPoint to CA certificates, to user certificates, to attribute
      certificates or to some revocation reasons, or an indirect CRL: each lists only part of what the
      authority revoked, so again it must not replace the full CRL;
    * any other critical extension certauth does not implement."""
    for extension in crl.extensions:
        if extension.oid == x509.oid.ExtensionOID.DELTA_CRL_INDICATOR:
            raise CertificateRefused(
                Reason.CRL_UNAVAILABLE,
                "This is a delta CRL (DeltaCRLIndicator): it lists only the changes since a base CRL, and "
                "certauth applies full CRLs only. Give the authority the CA's full (base) CRL.",
            )
        if extension.critical and extension.oid not in _UNDERSTOOD_CRL_EXTENSIONS:
            raise CertificateRefused(
                Reason.CRL_UNAVAILABLE,
                f"The CRL carries the critical extension {_extension_name(extension.oid)}, which certauth "
                "does not implement (RFC 5280 5.2): the CRL is refused, not applied.",
            )
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return frozenset()
    partial = [
        label
        for label, present in (
            ("onlyContainsUserCerts", point.only_contains_user_certs),
            ("onlyContainsCACerts", point.only_contains_ca_certs),
            ("onlyContainsAttributeCerts", point.only_contains_attribute_certs),
            ("onlySomeReasons", point.only_some_reasons is not None),
            ("indirectCRL", point.indirect_crl),
            ("a relative distribution point name", point.relative_name is not None),
        )
        if present
    ]
    if partial:
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL's IssuingDistributionPoint limits it to part of the authority's revocations "
            f"({', '.join(partial)}): it cannot stand in for the full CRL. Give the authority the CA's full CRL.",
        )
    return frozenset(point.full_name or ())


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return None


def check_crl_succession(held: x509.CertificateRevocationList | None, new: x509.CertificateRevocationList) -> None:
    """May ``new`` replace ``held`` (both already verified for the same authority)?  CRLs usually travel over
    plain HTTP: an older CRL, validly signed, replayed by someone on the path would un-revoke certificates.
    So a CRL replaces the one held only if it has the same scope (IssuingDistributionPoint), it is not older
    (thisUpdate), its CRLNumber does not go backwards, and an equal CRLNumber comes with the same content (a
    re-fetch of the same CRL).  Raises ``CertificateRefused(CRL_UNAVAILABLE)`` saying which rule failed."""
    if held is None:
        return
    # CRLNumbers and thisUpdate order CRLs of one scope only (RFC 5280 5.2.3: the number is per scope).  A CRL of
    # another distribution point, validly signed and numbered in its own sequence, would otherwise replace the
    # full CRL (or another partition) and un-revoke everything only the one held lists.
    held_scope, new_scope = _issuing_distribution_point(held), _issuing_distribution_point(new)
    if new_scope != held_scope:
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL covers {_describe_scope(new_scope)}, the one already held covers {_describe_scope(held_scope)}:"
            " a CRL of another scope cannot replace it (it says nothing of the certificates outside its scope). "
            "The one held is kept; give the authority the CRL of the same distribution point (its full CRL).",
        )
    if new.last_update_utc < held.last_update_utc:
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL was issued at {new.last_update_utc.isoformat()}, before the one already held "
            f"({held.last_update_utc.isoformat()}): refusing to go back in time.",
        )
    held_number, new_number = crl_number(held), crl_number(new)
    if held_number is None:
        return  # nothing to compare with (RFC 5280 requires the number; older CAs may omit it)
    if new_number is None:
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL carries no CRLNumber, while the one already held carries {held_number}: refused as a "
            "possible replay (RFC 5280 requires the number on every CRL).",
        )
    if new_number < held_number:
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL's CRLNumber {new_number} is lower than the one already held ({held_number}): an older "
            "CRL, refusing to go back.",
        )
    if new_number == held_number and new.tbs_certlist_bytes != held.tbs_certlist_bytes:
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL has the same CRLNumber ({new_number}) as the one already held but different content: "
            "a CA must not issue two different CRLs under one number. The one held is kept; ask the CA which "
            "is current.",
        )


def _issuing_distribution_point(crl: x509.CertificateRevocationList) -> x509.IssuingDistributionPoint | None:
    try:
        return crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None


def _describe_scope(point: x509.IssuingDistributionPoint | None) -> str:
    if point is None:
        return "every certificate of the authority (no IssuingDistributionPoint)"
    if point.full_name:
        names = ", ".join(str(getattr(name, "value", name)) for name in point.full_name)
        return f"the distribution point {names} only"
    return "a scope set by its IssuingDistributionPoint"


def _extension_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", "")
    return f"{name} ({oid.dotted_string})" if name and name != "Unknown OID" else oid.dotted_string


def parse_crl(data: bytes, issuer: x509.Certificate) -> CrlIndex:
    """``load_crl`` + ``index_crl``: PEM/DER bytes -> a verified index, or ``CertificateRefused``."""
    return index_crl(load_crl(data), issuer)


# --------------------------------------------------------------------------------------------------
# Certificate checks the verifier does not make
# --------------------------------------------------------------------------------------------------


def is_self_signed(certificate: x509.Certificate) -> bool:
    """Issuer equals subject and the signature verifies with the certificate's own key (library check)."""
    try:
        if certificate.issuer != certificate.subject:
            return False
        certificate.verify_directly_issued_by(certificate)
    except Exception:
        return False
    return True


def map_verification_error(message: str) -> tuple[Reason, str]:
    """A reason code and a safe detail for the verifier's error text (which is never shown to clients)."""
    text = message.lower()
    if "eku" in text or "extended key usage" in text:
        return Reason.WRONG_USAGE, NO_CLIENT_AUTH_DETAIL
    if "basicconstraints.ca must not be asserted" in text:
        return Reason.WRONG_USAGE, CA_LEAF_DETAIL
    if "too weak" in text or "signature algorithm" in text:
        return Reason.WEAK_CERTIFICATE, "The chain uses a key or signature algorithm that is too weak."
    if "not valid at validation time" in text:
        return Reason.CHAIN_INVALID, "A certificate in the chain is expired or not yet valid."
    if "2.5.29.35" in text:
        return Reason.CHAIN_INVALID, "The certificate lacks the authorityKeyIdentifier extension (RFC 5280)."
    if "2.5.29.17" in text:
        return Reason.CHAIN_INVALID, "The certificate has no subjectAltName, which this policy requires."
    if "all candidates exhausted with no interior errors" in text:
        return Reason.UNTRUSTED_ISSUER, Reason.UNTRUSTED_ISSUER.message
    if "name constraint" in text:
        return (
            Reason.CHAIN_INVALID,
            "A CA in the chain has nameConstraints that exclude the client certificate's names.",
        )
    if "maximum depth" in text:
        return Reason.CHAIN_INVALID, "The certificate chain is too long."
    return Reason.CHAIN_INVALID, Reason.CHAIN_INVALID.message


# --------------------------------------------------------------------------------------------------
# The profile an explicitly trusted CA is judged on, and the chain walker that names what is wrong
# --------------------------------------------------------------------------------------------------

#: Signature hashes accepted on a certificate the walker checks (the library's webpki set; EdDSA has none).
_WALKER_HASHES = frozenset({"sha256", "sha384", "sha512"})
#: EC curves accepted on a CA key (the library's webpki set).
_WALKER_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
#: Extensions the walker processes; any other one marked critical refuses the certificate (RFC 5280 4.2).
_WALKER_EXTENSIONS = frozenset(
    {
        x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
        x509.oid.ExtensionOID.KEY_USAGE,
        x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)
#: At most this many intermediate CAs between a leaf and its anchor (the library's default depth).
MAX_INTERMEDIATES = 8
#: At most this many issuer candidates are checked in one walk: a forwarded chain is the client's text, and many
#: same-named certificates signed by the same keys would otherwise make the depth-first walk exponential.
WALK_BUDGET = 64
_CLIENT_AUTH = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
_ANY_EKU = x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE


def _ca_basic_constraints(_policy: object, certificate: x509.Certificate, value: x509.BasicConstraints) -> None:
    """CA policy: basicConstraints CA:TRUE, critical or not (the library itself checks its presence and the
    pathLenConstraint)."""
    if not value.ca:
        raise ValueError("basicConstraints CA:FALSE")


def _ca_key_usage(_policy: object, certificate: x509.Certificate, value: x509.KeyUsage | None) -> None:
    """CA policy: keyUsage may be absent (every use allowed, RFC 5280 4.2.1.3); when present it must allow
    certificate signing."""
    if value is not None and not value.key_cert_sign:
        raise ValueError("keyUsage without keyCertSign")


def _ca_extended_key_usage(_policy: object, certificate: x509.Certificate, value: x509.ExtendedKeyUsage | None) -> None:
    """CA policy: a CA whose extendedKeyUsage is present must allow clientAuth (or any usage): a CA limited to
    server certificates does not vouch for clients."""
    if value is not None and _CLIENT_AUTH not in value and _ANY_EKU not in value:
        raise ValueError("CA extendedKeyUsage without clientAuth")


def _ee_basic_constraints(_policy: object, certificate: x509.Certificate, value: x509.BasicConstraints | None) -> None:
    if value is not None and value.ca:
        raise ValueError("basicConstraints CA:TRUE on a client certificate")


def _ee_key_usage(_policy: object, certificate: x509.Certificate, value: x509.KeyUsage | None) -> None:
    if value is not None and value.key_cert_sign:
        raise ValueError("keyUsage keyCertSign on a client certificate")


def _ee_client_auth(_policy: object, certificate: x509.Certificate, value: x509.ExtendedKeyUsage | None) -> None:
    if value is not None and _CLIENT_AUTH not in value:
        raise ValueError("extendedKeyUsage without clientAuth")


def _ca_policy() -> ExtensionPolicy:
    """The profile every CA of a chain is held to, the anchor included: see the module docstring."""
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ca_basic_constraints)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ca_extended_key_usage)
    )


def _ee_policy(policy: TrustPolicy) -> ExtensionPolicy:
    """The client certificate's profile: not a CA, no keyCertSign, clientAuth when its usage is validated, a
    subjectAltName only when required.  AuthorityKeyIdentifier and the rest of the webpki subscriber profile
    are not asked for (``openssl x509 -req`` with a short ``-extfile`` writes none)."""
    ee = (
        ExtensionPolicy.permit_all()
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ee_basic_constraints)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ee_key_usage)
        .require_not_present(x509.NameConstraints)
    )
    if policy.validate_certificate_use:
        ee = ee.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ee_client_auth)
    if policy.require_subject_alternative_name:
        ee = ee.require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    return ee


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """What is wrong with a chain, and at which certificate: ``detail`` is safe to show (names bounded and
    escaped by ``_common_name``) and says how to fix it where there is a fix."""

    reason: Reason
    detail: str


def _is_eddsa(certificate: x509.Certificate) -> bool:
    try:
        return isinstance(certificate.public_key(), ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    except Exception:
        return False


def _extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _what(certificate: x509.Certificate, role: str) -> str:
    """``the client certificate 'x'``, ``the intermediate 'y'``, ``the CA 'z'``: bounded, escaped names."""
    return f"the {'client certificate' if role == 'leaf' else role} {_common_name(certificate)!r}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _validity_problem(certificate: x509.Certificate, at: dt.datetime, what: str) -> ChainProblem | None:
    if at < certificate.not_valid_before_utc:
        return ChainProblem(
            Reason.CHAIN_INVALID, f"{_cap(what)} is not valid before {certificate.not_valid_before_utc.isoformat()}."
        )
    if at > certificate.not_valid_after_utc:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"{_cap(what)} expired on {certificate.not_valid_after_utc.isoformat()}"
            + ("." if "client" in what else ": every certificate under it is refused until it is renewed."),
        )
    return None


def _critical_problem(certificate: x509.Certificate, what: str, *, strict: bool) -> ChainProblem | None:
    for extension in certificate.extensions:
        if strict and extension.oid == x509.oid.ExtensionOID.NAME_CONSTRAINTS:
            return ChainProblem(
                Reason.CHAIN_INVALID,
                f"{_cap(what)} carries nameConstraints, which certauth applies only through "
                "cryptography's verifier, and that verifier does not take Ed25519/Ed448 CA keys: re-issue the "
                "CA with an EC (P-256) or RSA key, or without nameConstraints.",
            )
        if extension.critical and extension.oid not in _WALKER_EXTENSIONS:
            return ChainProblem(
                Reason.CHAIN_INVALID,
                f"{_cap(what)} carries the critical extension {_extension_name(extension.oid)}, "
                "which certauth does not process (RFC 5280 4.2).",
            )
    return None


def _key_problem(certificate: x509.Certificate, what: str) -> ChainProblem | None:
    """A CA key the verifier would refuse as too weak (or of a kind it never takes), or an RSA key with a public
    exponent above ``MAX_RSA_EXPONENT_BITS`` (which the verifier takes, at great cost)."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            return ChainProblem(
                Reason.WEAK_CERTIFICATE,
                f"{_cap(what)} has an RSA key of {key.key_size} bits; at least 2048 are needed. "
                "Re-create the CA with `openssl genrsa 4096` (or an EC P-256 key).",
            )
        return _rsa_exponent_problem(key, what)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _WALKER_CURVES:
            return ChainProblem(
                Reason.WEAK_CERTIFICATE,
                f"{_cap(what)} has an EC key on the curve {key.curve.name}; only P-256, P-384 "
                "and P-521 are accepted for CAs.",
            )
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return ChainProblem(
        Reason.WEAK_CERTIFICATE,
        f"{_cap(what)} has a {type(key).__name__.removesuffix('PublicKey') or 'unknown'} key, which "
        "certauth does not accept for CAs: use RSA (2048 bits or more), EC P-256/P-384/P-521, Ed25519 or Ed448.",
    )


#: The largest RSA public exponent accepted on a CA key, in bits.  Every CA tool writes 65537 (17 bits); Go's
#: crypto/x509 and ring (rustls) refuse exponents above 31 and 33 bits.  OpenSSL takes any exponent up to the
#: modulus for keys of at most 3072 bits, and a 3072-bit exponent makes each signature check cost about 6 ms, as
#: much as a private-key operation: dozens of such same-named certificates in a forwarded chain would cost every
#: request a second of CPU in the verifier and the walk.
MAX_RSA_EXPONENT_BITS = 32


def _rsa_exponent_problem(key: rsa.RSAPublicKey, what: str) -> ChainProblem | None:
    exponent = key.public_numbers().e
    if exponent.bit_length() <= MAX_RSA_EXPONENT_BITS:
        return None
    return ChainProblem(
        Reason.WEAK_CERTIFICATE,
        f"{_cap(what)} has an RSA public exponent of {exponent.bit_length()} bits; certauth accepts at most "
        f"{MAX_RSA_EXPONENT_BITS} bits (CA tools write 65537): re-create the key with `openssl genrsa`.",
    )


#: The most certificates a forwarded chain may hold (the leaf not counted).  A client's chain holds its
#: intermediates, a few at most (certauth follows at most ``MAX_AUTHORITY_DEPTH`` authorities above an anchor),
#: while every extra same-named candidate costs the verifier and the walk signature checks: about 74 P-521
#: decoys fit in a 64 KiB header and cost 0.15 s per request before this bound.
MAX_FORWARDED_CHAIN = 16


def forwarded_problem(forwarded: Sequence[x509.Certificate]) -> ChainProblem | None:
    """A forwarded chain no verification may use and that would be costly to try: more than
    ``MAX_FORWARDED_CHAIN`` certificates, or an RSA key with a huge public exponent (``MAX_RSA_EXPONENT_BITS``).
    Checked before any signature is verified with it, by the verifier, the walk or the disabled-authority search
    (docs/SECURITY.md §44).  Pure; never raises."""
    if len(forwarded) > MAX_FORWARDED_CHAIN:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"The forwarded chain holds {len(forwarded)} certificates; certauth reads at most "
            f"{MAX_FORWARDED_CHAIN}: send the client's intermediates only (register the root, and any intermediate "
            "the proxy cannot forward, as trusted authorities).",
        )
    for certificate in forwarded:
        key = _public_key(certificate)
        if isinstance(key, rsa.RSAPublicKey):
            problem = _rsa_exponent_problem(key, f"the forwarded certificate {_common_name(certificate)!r}")
            if problem is not None:
                return problem
    return None


def _public_key(certificate: x509.Certificate) -> object:
    """The certificate's public key, or None when it cannot be loaded (the verifier and the walk refuse such a
    certificate without computing anything)."""
    try:
        return certificate.public_key()
    except Exception:
        return None


def _signature_problem(child: x509.Certificate, parent: x509.Certificate, what: str) -> ChainProblem | None:
    """The signature algorithm of ``child`` (EdDSA, or RSA/ECDSA over SHA-256/384/512) and the signature itself."""
    if not _is_eddsa(parent):
        hash_name = _signature_hash_name(child)
        if hash_name not in _WALKER_HASHES:
            return ChainProblem(
                Reason.WEAK_CERTIFICATE,
                f"{_cap(what)} is signed with {hash_name or 'an unknown algorithm'}; certauth "
                "accepts SHA-256, SHA-384 or SHA-512 (or Ed25519/Ed448): re-issue it with `-sha256`.",
            )
    try:
        child.verify_directly_issued_by(parent)
    except Exception:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"The signature on {what} does not verify with the key of {_common_name(parent)!r}: it was signed "
            "by another key (another CA of the same name, a re-keyed CA, or a forgery).",
        )
    return None


def _signature_hash_name(certificate: x509.Certificate) -> str:
    try:
        algorithm = certificate.signature_hash_algorithm
    except Exception:
        return ""
    return algorithm.name if algorithm is not None else ""


def _ca_problem(ca: x509.Certificate, role: str, below: int, at: dt.datetime, *, strict: bool) -> ChainProblem | None:
    """What keeps ``ca`` from issuing in this chain, where ``below`` intermediate CAs stand under it."""
    what = _what(ca, role)
    bc = _extension(ca, x509.BasicConstraints)
    if bc is None:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"{_cap(what)} has no basicConstraints extension, so it is not a CA: re-issue it with "
            "`basicConstraints=critical,CA:TRUE` (openssl: `-addext`).",
        )
    if not bc.value.ca:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"{_cap(what)} is not a CA (basicConstraints CA:FALSE): only a CA may issue certificates.",
        )
    ku = _extension(ca, x509.KeyUsage)
    if ku is not None and not ku.value.key_cert_sign:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"{_cap(what)} has a keyUsage extension without keyCertSign, so it may not sign "
            "certificates: re-issue it with `keyUsage=critical,keyCertSign,cRLSign` (or without keyUsage).",
        )
    eku = _extension(ca, x509.ExtendedKeyUsage)
    if eku is not None and _CLIENT_AUTH not in eku.value and _ANY_EKU not in eku.value:
        return ChainProblem(
            Reason.WRONG_USAGE,
            f"{_cap(what)} limits its extendedKeyUsage to other uses than clientAuth, so it does "
            "not vouch for client certificates.",
        )
    if bc.value.path_length is not None and below > bc.value.path_length:
        return ChainProblem(
            Reason.CHAIN_INVALID,
            f"The pathLenConstraint of {_common_name(ca)!r} ({bc.value.path_length}) forbids the {below} "
            "intermediate CA(s) below it in this chain.",
        )
    return _validity_problem(ca, at, what) or _key_problem(ca, what) or _critical_problem(ca, what, strict=strict)


def _leaf_problem(leaf: x509.Certificate, at: dt.datetime, policy: TrustPolicy, *, strict: bool) -> ChainProblem | None:
    what = _what(leaf, "leaf")
    if leaf.version != x509.Version.v3:
        return ChainProblem(Reason.UNSUPPORTED_CERTIFICATE, V1_DETAIL)
    if is_ca(leaf):
        return ChainProblem(Reason.WRONG_USAGE, CA_LEAF_DETAIL)
    ku = _extension(leaf, x509.KeyUsage)
    if ku is not None and ku.value.key_cert_sign:
        return ChainProblem(
            Reason.WRONG_USAGE, "The client certificate's keyUsage allows keyCertSign, which is for CAs only."
        )
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    if policy.validate_certificate_use and eku is not None and _CLIENT_AUTH not in eku.value:
        return ChainProblem(Reason.WRONG_USAGE, NO_CLIENT_AUTH_DETAIL)
    if policy.require_subject_alternative_name and _extension(leaf, x509.SubjectAlternativeName) is None:
        return ChainProblem(Reason.CHAIN_INVALID, "The certificate has no subjectAltName, which this policy requires.")
    if _extension(leaf, x509.NameConstraints) is not None:
        return ChainProblem(
            Reason.CHAIN_INVALID, "The client certificate carries nameConstraints, which is for CAs only."
        )
    return _validity_problem(leaf, at, what) or _critical_problem(leaf, what, strict=False)


@dataclass(slots=True)
class _Walk:
    chain: tuple[x509.Certificate, ...] | None = None
    problems: list[ChainProblem] = field(default_factory=list)

    def first_problem(self) -> ChainProblem | None:
        """A problem found on a certificate that does chain by name and signature outranks "no issuer found"
        on some other path: it is the likelier cause."""
        for problem in self.problems:
            if problem.reason is not Reason.UNTRUSTED_ISSUER:
                return problem
        return self.problems[0] if self.problems else None


def _walk_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    policy: TrustPolicy,
    *,
    strict: bool,
) -> _Walk:
    """Walk from ``leaf`` towards an anchor, depth first, through ``intermediates`` (at most
    ``MAX_INTERMEDIATES``), checking every link: the issuer's name and signature (``verify_directly_issued_by``,
    the library's primitive), the issuer being a CA with keyCertSign (when it has a keyUsage), its
    pathLenConstraint, validity at ``at``, key strength, the signature algorithm, and unknown critical
    extensions.  Returns the first complete chain (leaf..anchor), or none and every problem met on the way.

    ``strict`` (the Ed25519/Ed448 fallback) also refuses a certificate with nameConstraints, which only the
    library applies."""
    walk = _Walk()
    budget = [WALK_BUDGET]
    problem = _leaf_problem(leaf, at, policy, strict=strict)
    if problem is not None:
        walk.problems.append(problem)
        return walk

    def extend(path: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...] | None:
        child = path[-1]
        child_role = "leaf" if len(path) == 1 else "intermediate"
        candidates = [(c, True) for c in anchors if c.subject == child.issuer]
        candidates += [
            (c, False) for c in intermediates if c.subject == child.issuer and c not in path and c not in anchors
        ]
        if not candidates:
            if len(path) == 1:
                detail = (
                    f"No trusted authority named {_issuer_name(child)!r} (the client certificate's issuer) is "
                    "enabled, and the forwarded chain holds no certificate of that name: add that CA under "
                    "Trusted authorities (`certauth authority add`), with its intermediates."
                )
            else:
                detail = (
                    f"The intermediate {_common_name(child)!r} was issued by {_issuer_name(child)!r}, which is "
                    "not an enabled trusted authority: add that CA under Trusted authorities."
                )
            walk.problems.append(ChainProblem(Reason.UNTRUSTED_ISSUER, detail))
            return None
        for parent, is_anchor in candidates:
            budget[0] -= 1
            if budget[0] < 0:
                if budget[0] == -1:
                    walk.problems.insert(
                        0, ChainProblem(Reason.CHAIN_INVALID, "The forwarded chain holds too many candidate CAs.")
                    )
                return None
            below = len(path) - 1  # intermediate CAs under ``parent``
            role = "CA" if is_anchor else "intermediate"
            if not is_anchor and below >= MAX_INTERMEDIATES:
                walk.problems.append(ChainProblem(Reason.CHAIN_INVALID, "The certificate chain is too long."))
                continue
            problem = _signature_problem(child, parent, _what(child, child_role)) or _ca_problem(
                parent, role, below, at, strict=strict
            )
            if problem is not None:
                walk.problems.append(problem)
                continue
            if is_anchor:
                return (*path, parent)
            found = extend((*path, parent))
            if found is not None:
                return found
        return None

    walk.chain = extend((leaf,))
    return walk


def _issuer_name(certificate: x509.Certificate) -> str:
    try:
        values = certificate.issuer.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        value = values[0].value if values else certificate.issuer.rfc4514_string()
    except Exception:
        return "?"
    return printable(value if isinstance(value, str) else value.decode("utf-8", "replace"))[:100]


def diagnose_chain(
    leaf: x509.Certificate,
    forwarded: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    policy: TrustPolicy,
) -> ChainProblem | None:
    """Why would ``leaf`` not chain to one of ``anchors`` (through ``forwarded``) at ``at``?  The first
    problem on the likeliest path, naming the certificate at fault, or None when the walk finds a chain (the
    verifier refused for a reason the walk does not model).  Pure; never raises."""
    try:
        walk = _walk_chain(leaf, forwarded, anchors, at, policy, strict=False)
    except Exception:
        logger.info("certauth chain diagnosis raised", exc_info=True)
        return None
    return None if walk.chain is not None else walk.first_problem()


def _library_refused_the_algorithm(message: str) -> bool:
    """Did the verifier refuse a key or signature *algorithm* it never takes (Ed25519/Ed448 among them)?"""
    text = message.lower()
    return "forbidden public key algorithm" in text or "forbidden signature algorithm" in text


def eddsa_chain(
    leaf: x509.Certificate,
    forwarded: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    policy: TrustPolicy,
) -> tuple[x509.Certificate, ...] | None:
    """The Ed25519/Ed448 fallback (see the module docstring): a chain the walker accepts in strict mode, and
    only when one of its CAs holds an Ed25519 or Ed448 key, the one thing cryptography's verifier refuses."""
    if not any(_is_eddsa(c) for c in (*forwarded, *anchors)):
        return None
    walk = _walk_chain(leaf, forwarded, anchors, at, policy, strict=True)
    if walk.chain is None or not any(_is_eddsa(c) for c in walk.chain[1:]):
        return None
    return walk.chain


# --------------------------------------------------------------------------------------------------
# Checking a CA when it is added (CLI `authority add`, the admin's authority form)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a certificate: ``refuse`` (no chain can ever build through it, or it cannot
    authenticate) or ``warn`` (accepted, but worth knowing).  ``text`` says what and how to fix it."""

    severity: Literal["refuse", "warn"]
    text: str
    reason: Reason | None = None  # the reason a request would be refused with, when there is one


#: A CA expiring sooner than this is added with a warning.
EXPIRY_WARNING = dt.timedelta(days=30)


def lint_authority(certificate: x509.Certificate, now: dt.datetime) -> list[Problem]:
    """What certauth's CA profile (``_ca_policy`` and the walker) will make of ``certificate`` as a trusted
    authority.  Refuses what no chain can ever build through: not a CA, keyUsage without keyCertSign, an
    extendedKeyUsage without clientAuth, expired, a key the verifier never accepts or too weak, an unknown
    critical extension.  Warns on what is accepted but unusual.  Pure; never raises."""
    name = _common_name(certificate)
    problems: list[Problem] = []

    def refuse(text: str) -> None:
        problems.append(Problem("refuse", text))

    def warn(text: str) -> None:
        problems.append(Problem("warn", text))

    try:
        bc = _extension(certificate, x509.BasicConstraints)
        if certificate.version != x509.Version.v3:
            refuse(
                f"{name!r} is a version 1 certificate: it has no basicConstraints, so it is not a CA. Re-create the "
                "CA with `openssl req -x509` (which writes basicConstraints=critical,CA:TRUE)."
            )
        elif bc is None or not bc.value.ca:
            refuse(
                f"{name!r} is not a CA (basicConstraints CA:TRUE is missing): no chain can go through it. Re-create "
                "it with `-addext basicConstraints=critical,CA:TRUE`, or register a client certificate on an "
                "identity instead."
            )
        elif not bc.critical:
            warn(
                f"{name!r} marks basicConstraints non-critical (as easy-rsa does); RFC 5280 asks for critical. "
                "Accepted: certauth checks CA:TRUE, not its criticality."
            )
        ku = _extension(certificate, x509.KeyUsage)
        if ku is not None and not ku.value.key_cert_sign:
            refuse(
                f"{name!r} has a keyUsage extension without keyCertSign, so it may not sign certificates: re-issue "
                "it with `keyUsage=critical,keyCertSign,cRLSign` (or without keyUsage)."
            )
        elif ku is None:
            warn(f"{name!r} has no keyUsage extension (openssl's default CA profile). Accepted: every use is allowed.")
        eku = _extension(certificate, x509.ExtendedKeyUsage)
        if eku is not None and _CLIENT_AUTH not in eku.value and _ANY_EKU not in eku.value:
            refuse(
                f"{name!r} limits its extendedKeyUsage to other uses than clientAuth, so no client certificate "
                "under it is accepted: re-issue it with clientAuth in extendedKeyUsage, or without the extension."
            )
        if now > certificate.not_valid_after_utc:
            refuse(
                f"{name!r} expired on {certificate.not_valid_after_utc.isoformat()}: renew the CA certificate "
                "(same key: `openssl x509 -days …`) and add the new one."
            )
        elif certificate.not_valid_after_utc - now < EXPIRY_WARNING:
            warn(f"{name!r} expires on {certificate.not_valid_after_utc.isoformat()}: renew it soon.")
        if now < certificate.not_valid_before_utc:
            start = certificate.not_valid_before_utc.isoformat()
            warn(f"{name!r} is not valid before {start}: nothing chains to it until then.")
        key = _key_problem(certificate, f"the CA {name!r}")
        if key is not None:
            refuse(key.detail)
        critical = _critical_problem(certificate, f"the CA {name!r}", strict=False)
        if critical is not None:
            refuse(critical.detail)
        if _is_eddsa(certificate):
            if _extension(certificate, x509.NameConstraints) is not None:
                refuse(
                    f"{name!r} has an Ed25519/Ed448 key and nameConstraints: cryptography's verifier, which alone "
                    "applies nameConstraints, does not take EdDSA CA keys, so no chain is accepted. Re-create the "
                    "CA with an EC P-256 or RSA key, or without nameConstraints."
                )
            else:
                warn(
                    f"{name!r} has an Ed25519/Ed448 key, which cryptography's verifier does not take: certauth "
                    "checks its chains itself (docs/SECURITY.md §39)."
                )
        hash_name = _signature_hash_name(certificate)
        if not _is_eddsa(certificate) and certificate.issuer == certificate.subject and hash_name not in _WALKER_HASHES:
            warn(
                f"{name!r} signs itself with {hash_name or 'an unknown algorithm'}. Accepted: a trusted root's own "
                "signature is not relied on, but the certificates it issues must use SHA-256 or better."
            )
        if certificate.issuer != certificate.subject:
            warn(
                f"{name!r} is an intermediate CA (issued by {_issuer_name(certificate)!r}): chains end at it, so "
                "its certificates are trusted whether or not that issuer is registered."
            )
    except Exception:  # an unreadable extension: refused, never a 500
        logger.info("certauth authority lint raised", exc_info=True)
        refuse(f"{name!r} has an extension certauth cannot read.")
    return problems


_CA_POLICY = _ca_policy()


# --------------------------------------------------------------------------------------------------
# The trust store
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustResult:
    """Why a certificate is trusted: ``kind`` self_signed (pinning is the only trust) or chained (then
    ``chain`` lists thumbprints leaf..anchor and ``anchor`` is the enabled authority it reached)."""

    kind: Literal["self_signed", "chained"]
    chain: tuple[str, ...] = ()
    anchor: Authority | None = None
    revocation_warning: str = ""
    # The reason a fail-open acceptance is audited under (crl_unavailable or ocsp_unavailable).
    revocation_warning_reason: Reason = Reason.CRL_UNAVAILABLE
    # This answer holds until then (earliest not_after of the checked chain, earliest nextUpdate of the CRLs
    # consulted), for this trust store; callers that cache it must not serve it at or after that instant.
    valid_until: dt.datetime | None = field(default=None, compare=False)

    def reaches(self, authority_thumbprint: str) -> bool:
        return authority_thumbprint in self.chain


@dataclass(frozen=True, slots=True)
class _Verified:
    kind: Literal["self_signed", "chained"]
    chain: tuple[x509.Certificate, ...] = ()
    thumbprints: tuple[str, ...] = ()
    refused: CertificateRefused | None = None
    valid_until: dt.datetime | None = None
    # Above the anchor: (certificate, the enabled authority that issued it), for an anchor that is itself
    # issued by another registered authority (an intermediate registered next to its root).
    above: tuple[tuple[x509.Certificate, Authority], ...] = ()


@dataclass(frozen=True, slots=True)
class _Decided:
    """A cached answer of ``evaluate``: the result or the refusal, served only within [checked_at, until)."""

    result: TrustResult | None
    refused: CertificateRefused | None
    checked_at: dt.datetime
    until: dt.datetime


#: How many registered authorities above a chain's anchor are followed (a cycle of cross-certificates ends
#: here too).
MAX_AUTHORITY_DEPTH = 8


def authority_key(certificate: x509.Certificate) -> str:
    """What makes two CA certificates the same authority: the public key (SHA-256 of its SPKI, re-encoded so
    one key has one hash: ``spki_of``).  A re-issued or cross-signed certificate of a CA (new serial, validity
    or issuer) is the same CA, and so is one whose name is spelled with other string types or changed
    altogether: whatever name it carries, the key signs the same certificates.  Keying on the name's bytes
    too let a disabled CA's key through under a re-encoded or new name."""
    return spki_of(certificate)


@dataclass(frozen=True, slots=True)
class _RevocationAnswer:
    """What one revocation source (the CRLs, OCSP) says about a verified chain: a refusal, or an acceptance
    with a fail-open ``warning`` (or none), and the instant until which that holds."""

    until: dt.datetime
    warning: str = ""
    refused: CertificateRefused | None = None


#: No bound yet (every answer consulted narrows it).
_UNBOUNDED = dt.datetime.max.replace(tzinfo=dt.UTC)


class TrustStore:
    """The enabled authorities and the policy, with a bounded cache of chain verifications.  Built once
    per registry generation (``certauth.authorities.current_trust_store``); immutable afterwards.

    ``disabled`` are the registered authorities that are disabled: a blocklist.  Their certificates are
    removed from every forwarded chain before it is built, and a chain that still contains one of them (an
    enabled certificate of the same CA: the same key, whatever its name) or whose anchor was issued by one is refused
    with ``untrusted_issuer``."""

    def __init__(
        self,
        authorities: Iterable[Authority],
        policy: TrustPolicy,
        cache_size: int = 2048,
        *,
        ocsp: OcspChecker | None = None,
        disabled: Iterable[Authority] = (),
    ) -> None:
        if policy.check_ocsp and ocsp is None:
            raise ValueError("a policy that checks OCSP needs an OcspChecker")
        self.policy = policy
        self.ocsp = ocsp
        self.authorities: tuple[Authority, ...] = tuple(authorities)
        self.disabled: tuple[Authority, ...] = tuple(disabled)
        self._disabled_keys: dict[str, Authority] = {authority_key(a.certificate): a for a in self.disabled}
        # subject -> registered authorities (enabled or not) with that subject: who may have issued an anchor
        self._registered_by_subject: dict[x509.Name, list[tuple[Authority, bool, str]]] = {}
        for registered, enabled in [*((a, True) for a in self.authorities), *((a, False) for a in self.disabled)]:
            entry = (registered, enabled, authority_key(registered.certificate))
            self._registered_by_subject.setdefault(registered.certificate.subject, []).append(entry)
        self.by_thumbprint: dict[str, Authority] = {a.thumbprint_sha256: a for a in self.authorities}
        # anchor -> the registered authorities above it (or why a disabled one refuses it); see _check_not_disabled
        self._above: dict[x509.Certificate, tuple[tuple[x509.Certificate, Authority], ...] | CertificateRefused] = {}
        self._anchors = [a.certificate for a in self.authorities]
        self._anchor_thumbprints: dict[x509.Certificate, str] = {
            a.certificate: a.thumbprint_sha256 for a in self.authorities
        }
        self._store = Store(self._anchors) if self._anchors else None
        self._ee_policy = _ee_policy(policy)
        self._decided: BoundedCache[tuple[str, ...], _Decided] = BoundedCache(cache_size)
        self._issued_by: BoundedCache[tuple[str, tuple[str, ...], str], tuple[x509.Certificate, ...] | None] = (
            BoundedCache(cache_size)
        )

    def __len__(self) -> int:
        return len(self.authorities)

    # --- the decision ------------------------------------------------------------------------------
    def evaluate(
        self,
        leaf: x509.Certificate,
        forwarded: Sequence[x509.Certificate],
        now: dt.datetime,
        *,
        thumbprints: tuple[str, ...] | None = None,
    ) -> TrustResult:
        """Apply the allowed types, chain validation and (when enabled) CRLs.  Raises ``CertificateRefused``.

        ``thumbprints`` (the SHA-256 thumbprints of ``leaf`` and ``forwarded``, when the caller already has
        them) spare hashing the certificates again.  Answers are cached per store by those thumbprints and
        served only until ``TrustResult.valid_until`` (refusals: ``FAILURE_CACHE_SECONDS`` at most)."""
        key = thumbprints if thumbprints is not None else (thumbprint_of(leaf), *(thumbprint_of(c) for c in forwarded))
        decided = self._decided.get(key)
        if not (isinstance(decided, _Decided) and decided.checked_at <= now < decided.until):
            decided = self._decide(leaf, forwarded, key, now)
            self._decided.set(key, decided)
        if decided.refused is not None:
            # A fresh exception each time: re-raising one cached instance would grow its traceback.
            raise CertificateRefused(decided.refused.reason, decided.refused.detail)
        assert decided.result is not None
        return decided.result

    def _decide(
        self, leaf: x509.Certificate, forwarded: Sequence[x509.Certificate], key: tuple[str, ...], now: dt.datetime
    ) -> _Decided:
        verified = self._verify(leaf, forwarded, key, now)
        until = verified.valid_until or now + dt.timedelta(seconds=FAILURE_CACHE_SECONDS)
        if verified.refused is not None:
            return _Decided(None, verified.refused, now, until)
        if verified.kind == "self_signed":
            return _Decided(TrustResult("self_signed", valid_until=until), None, now, until)
        anchor = self.by_thumbprint.get(verified.thumbprints[-1])
        warning, warning_reason = "", Reason.CRL_UNAVAILABLE
        # Each revocation source answers with its own bound (a CRL's nextUpdate, an OCSP answer's cache_until,
        # the retry of a failed fetch), and that bound holds for whatever it decided, acceptance or refusal: a
        # "revoked" or "unknown" answer is as provisional as a "good" one.
        if self.policy.check_crl:
            crl = self._check_revocation(verified, now)
            until = min(until, crl.until)
            if crl.refused is not None:
                return _Decided(None, crl.refused, now, until)
            warning = crl.warning
        if self.policy.check_ocsp:
            ocsp = self._check_ocsp(verified, now)
            until = min(until, ocsp.until)
            if ocsp.refused is not None:
                return _Decided(None, ocsp.refused, now, until)
            if ocsp.warning:
                warning_reason = Reason.CRL_UNAVAILABLE if warning else Reason.OCSP_UNAVAILABLE
                warning = f"{warning} {ocsp.warning}".strip()
        result = TrustResult("chained", verified.thumbprints, anchor, warning, warning_reason, until)
        return _Decided(result, None, now, until)

    def _crl_deadlines(self, verified: _Verified, now: dt.datetime) -> list[dt.datetime]:
        deadlines = []
        issuers = [self.by_thumbprint.get(t) for t in verified.thumbprints[1:]] + [a for _, a in verified.above]
        for issuer in issuers:
            if issuer is not None and issuer.crl is not None and issuer.crl.next_update is not None:
                if now < issuer.crl.next_update:
                    deadlines.append(issuer.crl.next_update)
        return deadlines

    def issued_by(
        self, leaf: x509.Certificate, forwarded: Sequence[x509.Certificate], authority_thumbprint: str, now: dt.datetime
    ) -> bool:
        """Does ``leaf`` chain to this one enabled authority?  (Identity rules: "issued by authority A".)"""
        return self.chain_to(leaf, forwarded, authority_thumbprint, now) is not None

    def chain_to(
        self, leaf: x509.Certificate, forwarded: Sequence[x509.Certificate], authority_thumbprint: str, now: dt.datetime
    ) -> tuple[x509.Certificate, ...] | None:
        """The verified chain leaf..authority when ``leaf`` chains to this one enabled authority, else None.
        Verified by the library with that authority as the only anchor, the forwarded chain and every other
        enabled authority as candidate intermediates (identity rules also read the CAs in between)."""
        authority = self.by_thumbprint.get(authority_thumbprint)
        if authority is None or (self._disabled_keys and authority_key(authority.certificate) in self._disabled_keys):
            return None
        key = (thumbprint_of(leaf), tuple(thumbprint_of(c) for c in forwarded), authority_thumbprint)
        cached = self._issued_by.get(key)
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        # Never through a disabled CA, nor through an enabled certificate of one (same key, any name).
        intermediates = self._without_disabled(
            [*forwarded, *(a.certificate for a in self.authorities if a is not authority)]
        )
        try:
            hostile = forwarded_problem(forwarded)
            if hostile is not None:
                raise CertificateRefused(hostile.reason, hostile.detail)
            built = self._build(leaf, intermediates, [authority.certificate], Store([authority.certificate]), now)
        except Exception:
            built = CertificateRefused(Reason.CHAIN_INVALID)
        result = None if isinstance(built, CertificateRefused) else built
        self._issued_by.set(key, result)
        return result

    def trust_refusal(self, leaf: x509.Certificate, now: dt.datetime) -> CertificateRefused | None:
        """Why the allowed types and chain validation refuse ``leaf`` presented alone at ``now``, or None.
        No revocation check and no cache: for registration (``registration_problems``), not requests."""
        return self._verify(leaf, (), (thumbprint_of(leaf),), now).refused

    # --- internals ---------------------------------------------------------------------------------
    def _verify(
        self, leaf: x509.Certificate, forwarded: Sequence[x509.Certificate], key: tuple[str, ...], now: dt.datetime
    ) -> _Verified:
        retry_at = now + dt.timedelta(seconds=FAILURE_CACHE_SECONDS)
        try:
            if is_ca(leaf):
                raise CertificateRefused(Reason.WRONG_USAGE, CA_LEAF_DETAIL)
            allowed = self.policy.allowed_types
            if is_self_signed(leaf):
                if allowed == "chained":
                    raise CertificateRefused(Reason.SELF_SIGNED_NOT_ALLOWED)
                return _Verified("self_signed", valid_until=leaf.not_valid_after_utc)
            if allowed == "self_signed":
                raise CertificateRefused(Reason.CHAINED_NOT_ALLOWED)
            if self._store is None:
                raise CertificateRefused(
                    Reason.UNTRUSTED_ISSUER,
                    "No trusted authority is enabled, so no chained certificate is trusted: add the CA that "
                    "issues your clients' certificates under Trusted authorities (`certauth authority add`).",
                )
            hostile = forwarded_problem(forwarded)
            if hostile is not None:
                raise CertificateRefused(hostile.reason, hostile.detail)
            # A disabled authority's certificate is no candidate: no path is built through it.
            built = self._build(leaf, self._without_disabled(forwarded), self._anchors, self._store, now)
            if isinstance(built, CertificateRefused):
                if built.reason is Reason.UNTRUSTED_ISSUER:
                    blocked = self._disabled_on_a_path(leaf, forwarded)
                    if blocked is not None:
                        raise CertificateRefused(built.reason, _disabled_detail(blocked))
                raise built
            above = self._check_not_disabled(built)
        except CertificateRefused as refused:
            return _Verified("chained", refused=refused, valid_until=retry_at)
        except Exception:
            # Anything else from the library (odd encodings): refuse, never raise into the request.
            logger.info("certauth chain verification raised", exc_info=True)
            return _Verified("chained", refused=CertificateRefused(Reason.CHAIN_INVALID), valid_until=retry_at)
        chain = built
        checked = chain if self.policy.validate_validity_period else chain[1:]
        valid_until = min((c.not_valid_after_utc for c in checked), default=None)
        # Thumbprints already known (the leaf's, the forwarded ones', the anchors') are not hashed again.
        known = {**dict(zip((leaf, *forwarded), key, strict=False)), **self._anchor_thumbprints}
        thumbprints = tuple(known.get(c) or thumbprint_of(c) for c in chain)
        return _Verified("chained", chain, thumbprints, valid_until=valid_until or retry_at, above=above)

    def _build(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        store: Store,
        now: dt.datetime,
    ) -> tuple[x509.Certificate, ...] | CertificateRefused:
        """The chain leaf..anchor as cryptography's verifier builds it under certauth's CA profile, or, for a
        chain it refuses only because a CA holds an Ed25519/Ed448 key, as the strict walker builds it
        (``eddsa_chain``).  Otherwise the refusal, its detail from ``diagnose_chain`` (the verifier's own
        text embeds reprs: it goes to the log only).  Raises nothing but what the library raises unexpectedly."""
        at = self._verification_time(leaf, now)
        try:
            return _cas_valid_now(tuple(self._verifier(store, at).verify(leaf, list(intermediates)).chain), at, now)
        except VerificationError as exc:
            message = str(exc)
        if _library_refused_the_algorithm(message):
            chain = eddsa_chain(leaf, intermediates, anchors, at, self.policy)
            if chain is not None:
                logger.info("certauth accepted an Ed25519/Ed448 chain the verifier does not take: %r", message)
                return _cas_valid_now(chain, at, now)
            strict = _walk_chain(leaf, intermediates, anchors, at, self.policy, strict=True)
            problem = None if strict.chain is not None else strict.first_problem()
        else:
            problem = diagnose_chain(leaf, intermediates, anchors, at, self.policy)
        reason, detail = map_verification_error(message)
        if problem is not None:
            reason, detail = problem.reason, problem.detail
        # repr: the library's text cannot forge log lines; the diagnosis names the certificate at fault.
        logger.info("certauth chain verification failed (%s): %s; verifier said %r", reason, detail, message)
        return CertificateRefused(reason, detail)

    def _without_disabled(self, forwarded: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        if not self._disabled_keys:
            return list(forwarded)
        return [c for c in forwarded if authority_key(c) not in self._disabled_keys]

    def _check_not_disabled(
        self, chain: tuple[x509.Certificate, ...]
    ) -> tuple[tuple[x509.Certificate, Authority], ...]:
        """Refuse a built chain in which a disabled authority appears, then follow the registered authorities
        above its anchor (an intermediate registered as an authority is an anchor, but its own issuer may be
        registered too): a disabled one there refuses the chain as well.  Returns those (certificate, enabled
        issuing authority) pairs above the anchor, for the revocation check.

        The library returns one built chain.  Could another path avoid the disabled authority?  Its
        certificates are removed from the forwarded chain before building, so the library never builds
        through them; a path that avoids the disabled CA entirely (say through a cross-certificate of a
        subordinate CA issued by another enabled authority) is a path the operator still trusts, and is
        accepted.  Each certificate's issuer is matched by name and signature, so no path through the
        disabled CA's key can be accepted under another certificate of it: the key decides, not the name."""
        for certificate in chain:
            blocked = self._disabled_keys.get(authority_key(certificate)) if self._disabled_keys else None
            if blocked is not None:
                raise CertificateRefused(Reason.UNTRUSTED_ISSUER, _disabled_detail(blocked))
        anchor = chain[-1]
        cached = self._above.get(anchor)
        if cached is None:
            try:
                cached = self._authorities_above(anchor)
            except CertificateRefused as refused:
                cached = refused
            self._above[anchor] = cached  # one entry per anchor, and anchors are this store's authorities
        if isinstance(cached, CertificateRefused):
            raise CertificateRefused(cached.reason, cached.detail)
        return cached

    def _authorities_above(self, anchor: x509.Certificate) -> tuple[tuple[x509.Certificate, Authority], ...]:
        above: list[tuple[x509.Certificate, Authority]] = []
        top, seen = anchor, {authority_key(anchor)}
        for _ in range(MAX_AUTHORITY_DEPTH):
            # Signed by a disabled CA's key under whatever name (its registered certificate's or another): the
            # name lookup below would miss a renamed issuer.  Once per anchor (the answer is cached).
            for disabled in self.disabled:
                if authority_key(disabled.certificate) != authority_key(top) and _signed_with(
                    top, disabled.certificate.public_key()
                ):
                    raise CertificateRefused(Reason.UNTRUSTED_ISSUER, _disabled_detail(disabled))
            # Candidates are registered CAs named as top's issuer, other than top's own CA (a self-signed root
            # ends here without a signature check: its only candidate is itself).
            parents = [
                (a, enabled, key)
                for a, enabled, key in self._registered_by_subject.get(top.issuer, ())
                if key not in seen and _issued(top, a.certificate)
            ]
            for parent, enabled, _key in parents:
                if not enabled:
                    raise CertificateRefused(Reason.UNTRUSTED_ISSUER, _disabled_detail(parent))
            if not parents:
                break
            parent, _enabled, key = parents[0]
            above.append((top, parent))
            top = parent.certificate
            seen.add(key)
        return tuple(above)

    def _disabled_on_a_path(self, leaf: x509.Certificate, forwarded: Sequence[x509.Certificate]) -> Authority | None:
        """After a refused chain: is a disabled authority the reason (the leaf, or a certificate above it in
        the forwarded chain, was issued by one)?  Only to say so in the detail."""
        if not self._disabled_keys:
            return None
        pool = [*forwarded, *(a.certificate for a in self.authorities)]
        current, seen = [leaf], set()
        for _ in range(MAX_AUTHORITY_DEPTH):
            following = []
            for certificate in current:
                for disabled in self.disabled:
                    if _issued(certificate, disabled.certificate):
                        return disabled
                for candidate in pool:
                    key = authority_key(candidate)
                    if key not in seen and _issued(certificate, candidate):
                        if key in self._disabled_keys:  # another certificate of a disabled CA's key
                            return self._disabled_keys[key]
                        seen.add(key)
                        following.append(candidate)
            current = following
            if not current:
                break
        return None

    def _verification_time(self, leaf: x509.Certificate, now: dt.datetime) -> dt.datetime:
        if self.policy.validate_validity_period:
            return now
        # ASP.NET's ValidateValidityPeriod=False: the leaf's own dates are not enforced, the chain's still are
        # (built at this moment, then every CA checked at ``now`` as well: ``_cas_valid_now``).
        start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        if now >= end:
            return max(start, end - dt.timedelta(seconds=1))
        return max(now, start)

    def _verifier(self, store: Store, at: dt.datetime) -> ClientVerifier:
        return (
            PolicyBuilder()
            .store(store)
            .time(at)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=self._ee_policy)
            .build_client_verifier()
        )

    def _check_revocation(self, verified: _Verified, now: dt.datetime) -> _RevocationAnswer:
        """Each certificate of the chain against its issuer's CRL: below the anchor, and the anchor itself (and
        so on up) when its issuer is a registered authority too.  A CRL that is still fresh can only turn
        stale later: what the CRLs say holds until the earliest nextUpdate among them."""
        until = min(self._crl_deadlines(verified, now), default=_UNBOUNDED)
        problems: list[str] = []
        pairs: list[tuple[x509.Certificate, x509.Certificate, Authority | None]] = [
            (verified.chain[i], verified.chain[i + 1], self.by_thumbprint.get(verified.thumbprints[i + 1]))
            for i in range(len(verified.chain) - 1)
        ]
        pairs += [(certificate, parent.certificate, parent) for certificate, parent in verified.above]
        for index, (certificate, issuer_certificate, issuer) in enumerate(pairs):
            issuer_name = _common_name(issuer_certificate)
            if issuer is None or issuer.crl is None:
                why = issuer.crl_problem if issuer is not None and issuer.crl_problem else "no CRL is loaded"
                problems.append(f"No usable CRL for issuer {issuer_name!r} ({why}).")
                continue
            if issuer.crl.is_revoked(certificate.serial_number):
                if index == 0:
                    what = "The client certificate"
                else:
                    what = f"The intermediate {_common_name(certificate)!r} (serial {certificate.serial_number:x})"
                under = "" if index == 0 else ", so every certificate it issued is refused"
                detail = f"{what} is listed in the CRL of {issuer_name!r}{under}."
                refused = CertificateRefused(Reason.CRL_REVOKED, detail)
                return _RevocationAnswer(until, refused=refused)
            if not issuer.crl.covers(certificate):
                problems.append(
                    f"The CRL of {issuer_name!r} covers other distribution points than the one "
                    f"{_common_name(certificate)!r} names."
                )
                continue
            if issuer.crl.is_stale(now):
                assert issuer.crl.next_update is not None
                problems.append(
                    f"The CRL of {issuer_name!r} is stale (nextUpdate {issuer.crl.next_update.isoformat()} has passed)."
                )
        if not problems:
            return _RevocationAnswer(until)
        detail = " ".join(problems)
        if not self.policy.revocation_fail_open:
            return _RevocationAnswer(until, refused=CertificateRefused(Reason.CRL_UNAVAILABLE, detail))
        return _RevocationAnswer(until, warning=detail)

    def _check_ocsp(self, verified: _Verified, now: dt.datetime) -> _RevocationAnswer:
        """Each certificate below the anchor against its issuer's OCSP responder, and the anchor itself (and so
        on up) when its issuer is a registered authority too, as for CRLs: an intermediate registered next to
        its root is asked about at the root's responder (the root authority's ``ocsp_url``, else the
        intermediate's AIA).  What it decides holds until the earliest ``cache_until`` of the answers it
        rests on (``retry`` after a failure)."""
        assert self.ocsp is not None
        problems: list[str] = []
        until = _UNBOUNDED
        pairs = [
            (verified.chain[index], verified.chain[index + 1], verified.thumbprints[index + 1])
            for index in range(len(verified.chain) - 1)
        ]
        pairs += [(certificate, parent.certificate, parent.thumbprint_sha256) for certificate, parent in verified.above]
        for index, (certificate, issuer_certificate, issuer_thumbprint) in enumerate(pairs):
            issuer = self.by_thumbprint.get(issuer_thumbprint)
            subject = "the client certificate" if index == 0 else f"the intermediate {_common_name(certificate)!r}"
            try:
                answer = self.ocsp.check(
                    certificate, issuer_certificate, issuer_thumbprint, now, issuer.ocsp_url if issuer else ""
                )
            except OcspError as error:
                problems.append(f"OCSP gave no usable answer for {subject} ({error}).")
                until = min(until, now + self.ocsp.retry)
                continue
            until = min(until, answer.cache_until)
            if answer.status == "revoked":
                since = f" since {answer.revocation_time.isoformat()}" if answer.revocation_time else ""
                why = f" ({answer.revocation_reason})" if answer.revocation_reason else ""
                refused = CertificateRefused(
                    Reason.CERTIFICATE_REVOKED,
                    f"{subject[0].upper()}{subject[1:]} is revoked according to the OCSP responder of "
                    f"{_common_name(issuer_certificate)!r}{since}{why}.",
                )
                return _RevocationAnswer(until, refused=refused)  # a certificateHold may be released
            if answer.status == "unknown":
                refused = CertificateRefused(
                    Reason.UNTRUSTED_ISSUER,
                    f"The OCSP responder of {_common_name(issuer_certificate)!r} does not know {subject} "
                    "(status unknown): its authority may never have issued it, or the responder serves another CA.",
                )
                return _RevocationAnswer(until, refused=refused)  # a responder may learn of it later (RFC 6960)
        if not problems:
            return _RevocationAnswer(until)
        detail = " ".join(problems)
        if not self.policy.revocation_fail_open:
            return _RevocationAnswer(until, refused=CertificateRefused(Reason.OCSP_UNAVAILABLE, detail))
        return _RevocationAnswer(until, warning=detail)


def _cas_valid_now(
    chain: tuple[x509.Certificate, ...], at: dt.datetime, now: dt.datetime
) -> tuple[x509.Certificate, ...] | CertificateRefused:
    """``chain`` as built at ``at``, or the refusal of its first CA that is not valid at ``now``.

    With ``VALIDATE_VALIDITY_PERIOD`` off the chain is built at a moment inside the *leaf's* validity
    (``_verification_time``): a moment the leaf's issuer chose.  Every CA was valid then, but an anchor or
    intermediate that has expired since (or is not valid yet) must still refuse: only the leaf's own dates are
    relaxed (docs/trust.md), and a CA's key is retired, or no longer guarded, once it expires; anyone holding
    it could otherwise issue backdated leaves.  A chain that needs a CA valid at both moments is the
    conservative answer (docs/SECURITY.md §44)."""
    if at == now:
        return chain
    for index, ca in enumerate(chain[1:], 1):
        problem = _validity_problem(ca, now, _what(ca, "CA" if index == len(chain) - 1 else "intermediate"))
        if problem is not None:
            return CertificateRefused(problem.reason, problem.detail)
    return chain


def _issued(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Was ``certificate`` issued by ``issuer`` (name and signature)?"""
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True


def _signed_with(certificate: x509.Certificate, public_key: object) -> bool:
    """Does ``certificate``'s signature verify with ``public_key``, whatever issuer name it carries?"""
    signature, signed = certificate.signature, certificate.tbs_certificate_bytes
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            padding = certificate.signature_algorithm_parameters
            algorithm = certificate.signature_hash_algorithm
            if not isinstance(padding, PKCS1v15 | PSS) or algorithm is None:
                return False
            public_key.verify(signature, signed, padding, algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            ecdsa = certificate.signature_algorithm_parameters
            if not isinstance(ecdsa, ec.ECDSA):
                return False
            public_key.verify(signature, signed, ecdsa)
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, signed)
        else:
            return False
    except Exception:
        return False
    return True


def _disabled_detail(authority: Authority) -> str:
    return (
        f"The chain goes through the authority {_common_name(authority.certificate)!r}, which is disabled: "
        "certificates under it are refused until an administrator enables it again."
    )


def _common_name(certificate: x509.Certificate) -> str:
    try:
        values = certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    except Exception:
        return "?"
    if not values:
        return printable(certificate.subject.rfc4514_string())[:100]
    value = values[0].value
    # Bounded and escaped: the name reaches 401 bodies, audit rows and log lines.
    return printable(value if isinstance(value, str) else value.decode("utf-8", "replace"))[:100]


# --------------------------------------------------------------------------------------------------
# Checking a client certificate when it is registered (CLI `register`, the admin's registration form)
# --------------------------------------------------------------------------------------------------


def registration_problems(
    info: CertificateInfo, store: TrustStore | None, now: dt.datetime, options: PolicyOptions
) -> list[Problem]:
    """Can ``info`` ever authenticate?  ``refuse``: the certificate itself is refused on every request
    (``policy.check_certificate``: version 1, a CA, no clientAuth, expired, weak, an unknown critical
    extension), whatever is configured.  ``warn``: the current trust policy refuses it (a self-signed
    certificate where only chained ones are allowed, or the reverse; no enabled authority issued it; its chain
    is invalid): that can change (an authority added, a policy changed, an intermediate the proxy forwards), so
    it is said, not refused.  A certificate not yet valid is fine (a successor registered ahead of its start):
    the trust policy is asked as of its start.  One check for the admin form and the CLI, the same words.
    Pure but for ``store`` (which it only reads: no revocation check, no network)."""
    problems: list[Problem] = []
    try:
        check_certificate(info, now, options)
    except CertificateRefused as refused:
        if refused.reason is not Reason.CERTIFICATE_NOT_YET_VALID:
            problems.append(
                Problem(
                    "refuse",
                    f"This certificate could never authenticate ({refused.reason}): {refused.detail}",
                    refused.reason,
                )
            )
            return problems
    if store is not None and info.certificate is not None:
        distrusted = store.trust_refusal(info.certificate, max(now, info.not_before))
        if distrusted is not None:
            hint = REGISTRATION_HINTS.get(distrusted.reason, "")
            problems.append(
                Problem(
                    "warn",
                    "Registering it is allowed, but requests with this certificate will still be refused under the "
                    f"current trust policy ({distrusted.reason}): {distrusted.detail or distrusted.reason.message}"
                    + (f" {hint}" if hint else ""),
                    distrusted.reason,
                )
            )
    return problems


#: How to make a certificate that the trust policy refuses today authenticate, where the refusal's detail does
#: not say (an untrusted issuer's detail names the CA and the fix already).
REGISTRATION_HINTS = {
    Reason.SELF_SIGNED_NOT_ALLOWED: "CERTAUTH['ALLOWED_CERTIFICATE_TYPES'] is 'chained' (the default outside DEBUG): "
    "have it issued by a trusted CA, or allow 'self_signed' or 'all'.",
    Reason.CHAINED_NOT_ALLOWED: "CERTAUTH['ALLOWED_CERTIFICATE_TYPES'] is 'self_signed': register a self-signed "
    "certificate, or allow 'chained' or 'all'.",
}
