"""The trust policy: does a presented certificate chain to an enabled trusted authority, is it of an allowed
type (chained / self-signed), and is it revoked by its issuer's CRL?  Pure Python on ``cryptography``: no
Django imports.  ``certauth.authorities`` loads the enabled ``TrustedAuthority`` rows into a ``TrustStore``.

Chains are validated by ``cryptography.x509.verification`` (the webpki profile), never by hand-written
signature checks.  Its error text embeds the certificate's repr, so every error is mapped to a ``Reason``
and a fixed, safe detail; the library's text goes to the server log only.

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
* Revocation (``REVOCATION_MODE = "crl"``): every certificate in the verified chain below the anchor is
  looked up in the CRL of the authority that issued it.  Revoked -> ``crl_revoked`` (always fatal).  No CRL
  for that issuer, or a CRL whose nextUpdate has passed -> ``crl_unavailable`` unless fail-open, in which
  case the certificate is accepted and ``TrustResult.revocation_warning`` says why (the caller audits it).
"""

from __future__ import annotations

import binascii
import datetime as dt
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .certificates import load_certificates, thumbprint_of
from .lru import MISSING, BoundedCache
from .reasons import CertificateRefused, Reason

logger = logging.getLogger("certauth")

ALLOWED_TYPES = ("chained", "self_signed", "all")
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
    revocation_fail_open: bool = False

    def __post_init__(self) -> None:
        if self.allowed_types not in ALLOWED_TYPES:
            raise ValueError(f"allowed_types must be one of {', '.join(ALLOWED_TYPES)}")


@dataclass(frozen=True, slots=True)
class CrlIndex:
    """A CRL parsed once: the revoked serial numbers of one issuer in a frozenset (O(1) lookup)."""

    issuer_thumbprint: str
    revoked_serials: frozenset[int]
    last_update: dt.datetime
    next_update: dt.datetime | None

    def is_revoked(self, serial_number: int) -> bool:
        return serial_number in self.revoked_serials

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

    @classmethod
    def from_certificate(
        cls, id: int, name: str, certificate: x509.Certificate, crl: CrlIndex | None = None, crl_problem: str = ""
    ) -> Authority:
        return cls(id, name, certificate, thumbprint_of(certificate), crl, crl_problem)


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


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----\s*(?P<body>[A-Za-z0-9+/=\s]+?)\s*-----END X509 CRL-----")


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER.  Raises ``CertificateRefused(CRL_UNAVAILABLE)`` and nothing else."""
    try:
        stripped = data.strip()
        if stripped.startswith(b"-----BEGIN"):
            match = _PEM_CRL.search(stripped)
            if match is None:
                raise CertificateRefused(Reason.CRL_UNAVAILABLE, "No PEM 'X509 CRL' block was found.")
            der = binascii.a2b_base64(b"".join(match.group("body").split()))
        else:
            der = data  # not stripped: a DER signature may well end in a byte that looks like whitespace
        return x509.load_der_x509_crl(der)
    except CertificateRefused:
        raise
    except Exception as exc:
        raise CertificateRefused(Reason.CRL_UNAVAILABLE, "The data is not a CRL (PEM or DER).") from exc


def index_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> CrlIndex:
    """Check the CRL belongs to ``issuer`` (name and signature) and index its revoked serials.  Raises
    ``CertificateRefused(CRL_UNAVAILABLE)`` and nothing else."""
    try:
        if crl.issuer != issuer.subject:
            raise CertificateRefused(Reason.CRL_UNAVAILABLE, "The CRL was issued by a different authority.")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise CertificateRefused(
                Reason.CRL_UNAVAILABLE, "The CRL's signature does not verify with the authority's key."
            )
        revoked = frozenset(entry.serial_number for entry in crl)
        return CrlIndex(
            issuer_thumbprint=thumbprint_of(issuer),
            revoked_serials=revoked,
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
        )
    except CertificateRefused:
        raise
    except Exception as exc:
        raise CertificateRefused(Reason.CRL_UNAVAILABLE, "The CRL could not be read.") from exc


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
        return Reason.WRONG_USAGE, "The certificate's extended key usage does not include clientAuth."
    if "basicconstraints.ca must not be asserted" in text:
        return Reason.WRONG_USAGE, "A CA certificate cannot be used as a client certificate."
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
    if "maximum depth" in text:
        return Reason.CHAIN_INVALID, "The certificate chain is too long."
    return Reason.CHAIN_INVALID, Reason.CHAIN_INVALID.message


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


@dataclass(frozen=True, slots=True)
class _Decided:
    """A cached answer of ``evaluate``: the result or the refusal, served only within [checked_at, until)."""

    result: TrustResult | None
    refused: CertificateRefused | None
    checked_at: dt.datetime
    until: dt.datetime


class TrustStore:
    """The enabled authorities and the policy, with a bounded cache of chain verifications.  Built once
    per registry generation (``certauth.authorities.current_trust_store``); immutable afterwards."""

    def __init__(self, authorities: Iterable[Authority], policy: TrustPolicy, cache_size: int = 2048) -> None:
        self.policy = policy
        self.authorities: tuple[Authority, ...] = tuple(authorities)
        self.by_thumbprint: dict[str, Authority] = {a.thumbprint_sha256: a for a in self.authorities}
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
        if self.policy.check_crl:
            # A CRL that is still fresh can only turn stale later: the answer holds until its nextUpdate.
            until = min([until, *self._crl_deadlines(verified, now)])
            try:
                warning = self._check_revocation(verified, now)
            except CertificateRefused as refused:
                return _Decided(None, refused, now, until)
        else:
            warning = ""
        return _Decided(TrustResult("chained", verified.thumbprints, anchor, warning, until), None, now, until)

    def _crl_deadlines(self, verified: _Verified, now: dt.datetime) -> list[dt.datetime]:
        deadlines = []
        for thumbprint in verified.thumbprints[1:]:
            issuer = self.by_thumbprint.get(thumbprint)
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
        if authority is None:
            return None
        key = (thumbprint_of(leaf), tuple(thumbprint_of(c) for c in forwarded), authority_thumbprint)
        cached = self._issued_by.get(key)
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        intermediates = [*forwarded, *(a.certificate for a in self.authorities if a is not authority)]
        result: tuple[x509.Certificate, ...] | None
        try:
            result = tuple(
                self._verifier(Store([authority.certificate]), self._verification_time(leaf, now))
                .verify(leaf, intermediates)
                .chain
            )
        except Exception:
            result = None
        self._issued_by.set(key, result)
        return result

    # --- internals ---------------------------------------------------------------------------------
    def _verify(
        self, leaf: x509.Certificate, forwarded: Sequence[x509.Certificate], key: tuple[str, ...], now: dt.datetime
    ) -> _Verified:
        retry_at = now + dt.timedelta(seconds=FAILURE_CACHE_SECONDS)
        try:
            if is_ca(leaf):
                raise CertificateRefused(Reason.WRONG_USAGE, "A CA certificate cannot be used as a client certificate.")
            allowed = self.policy.allowed_types
            if is_self_signed(leaf):
                if allowed == "chained":
                    raise CertificateRefused(Reason.SELF_SIGNED_NOT_ALLOWED)
                return _Verified("self_signed", valid_until=leaf.not_valid_after_utc)
            if allowed == "self_signed":
                raise CertificateRefused(Reason.CHAINED_NOT_ALLOWED)
            if self._store is None:
                raise CertificateRefused(
                    Reason.UNTRUSTED_ISSUER, "No trusted authority is enabled, so no chained certificate is trusted."
                )
            try:
                result = self._verifier(self._store, self._verification_time(leaf, now)).verify(leaf, list(forwarded))
            except VerificationError as exc:
                reason, detail = map_verification_error(str(exc))
                logger.info("certauth chain verification failed (%s): %r", reason, str(exc))  # repr: no forged lines
                raise CertificateRefused(reason, detail) from None
        except CertificateRefused as refused:
            return _Verified("chained", refused=refused, valid_until=retry_at)
        except Exception:
            # Anything else from the library (odd encodings): refuse, never raise into the request.
            logger.info("certauth chain verification raised", exc_info=True)
            return _Verified("chained", refused=CertificateRefused(Reason.CHAIN_INVALID), valid_until=retry_at)
        chain = tuple(result.chain)
        checked = chain if self.policy.validate_validity_period else chain[1:]
        valid_until = min((c.not_valid_after_utc for c in checked), default=None)
        # Thumbprints already known (the leaf's, the forwarded ones', the anchors') are not hashed again.
        known = {**dict(zip((leaf, *forwarded), key, strict=False)), **self._anchor_thumbprints}
        thumbprints = tuple(known.get(c) or thumbprint_of(c) for c in chain)
        return _Verified("chained", chain, thumbprints, valid_until=valid_until or retry_at)

    def _verification_time(self, leaf: x509.Certificate, now: dt.datetime) -> dt.datetime:
        if self.policy.validate_validity_period:
            return now
        # ASP.NET's ValidateValidityPeriod=False: the leaf's own dates are not enforced, the chain's still are.
        start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        if now >= end:
            return max(start, end - dt.timedelta(seconds=1))
        return max(now, start)

    def _verifier(self, store: Store, at: dt.datetime) -> ClientVerifier:
        return (
            PolicyBuilder()
            .store(store)
            .time(at)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=self._ee_policy)
            .build_client_verifier()
        )

    def _check_revocation(self, verified: _Verified, now: dt.datetime) -> str:
        """Each certificate below the anchor against its issuer's CRL.  Returns a fail-open warning or ''."""
        problems: list[str] = []
        for index in range(len(verified.chain) - 1):
            certificate = verified.chain[index]
            issuer = self.by_thumbprint.get(verified.thumbprints[index + 1])
            if issuer is None or issuer.crl is None:
                why = issuer.crl_problem if issuer is not None and issuer.crl_problem else "no CRL is loaded"
                issuer_name = _common_name(verified.chain[index + 1])
                problems.append(f"No usable CRL for issuer {issuer_name!r} ({why}).")
                continue
            if issuer.crl.is_revoked(certificate.serial_number):
                issuer_name = _common_name(verified.chain[index + 1])
                what = "The client certificate" if index == 0 else f"The intermediate {_common_name(certificate)!r}"
                raise CertificateRefused(Reason.CRL_REVOKED, f"{what} is listed in the CRL of {issuer_name!r}.")
            if issuer.crl.is_stale(now):
                assert issuer.crl.next_update is not None
                issuer_name = _common_name(verified.chain[index + 1])
                problems.append(
                    f"The CRL of {issuer_name!r} is stale (nextUpdate {issuer.crl.next_update.isoformat()} has passed)."
                )
        if not problems:
            return ""
        detail = " ".join(problems)
        if not self.policy.revocation_fail_open:
            raise CertificateRefused(Reason.CRL_UNAVAILABLE, detail)
        return detail


def _ee_policy(policy: TrustPolicy) -> ExtensionPolicy:
    ee = ExtensionPolicy.webpki_defaults_ee()
    if not policy.require_subject_alternative_name:
        # Client certificates from internal CAs often carry only a CN; identity comes from pinning or rules.
        ee = ee.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    if not policy.validate_certificate_use:
        ee = ee.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    return ee


def _common_name(certificate: x509.Certificate) -> str:
    try:
        values = certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    except Exception:
        return "?"
    if not values:
        return certificate.subject.rfc4514_string()[:100]
    value = values[0].value
    return (value if isinstance(value, str) else value.decode("utf-8", "replace"))[:100]
