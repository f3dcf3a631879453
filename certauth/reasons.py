"""Every reason certauth can refuse a request for: one enumeration shared by the API response,
the audit row, the log line and the tests.  Pure Python: no Django imports."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # transport / proxy
    MISSING_CERTIFICATE = "missing_certificate"
    MALFORMED_CERTIFICATE = "malformed_certificate"
    UNTRUSTED_PROXY = "untrusted_proxy"
    PROXY_VERIFICATION_FAILED = "proxy_verification_failed"
    FORWARDED_HASH_MISMATCH = "forwarded_hash_mismatch"
    # certificate itself
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    WRONG_USAGE = "wrong_usage"
    WEAK_CERTIFICATE = "weak_certificate"
    UNSUPPORTED_CERTIFICATE = "unsupported_certificate"
    # trust policy
    UNTRUSTED_ISSUER = "untrusted_issuer"
    CHAIN_INVALID = "chain_invalid"
    SELF_SIGNED_NOT_ALLOWED = "self_signed_not_allowed"
    CHAINED_NOT_ALLOWED = "chained_not_allowed"
    CRL_REVOKED = "crl_revoked"
    CRL_UNAVAILABLE = "crl_unavailable"
    OCSP_UNAVAILABLE = "ocsp_unavailable"
    # registry
    UNKNOWN_CERTIFICATE = "unknown_certificate"
    CERTIFICATE_REVOKED = "certificate_revoked"
    IDENTITY_DISABLED = "identity_disabled"
    AMBIGUOUS_IDENTITY = "ambiguous_identity"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    # authorization
    INSUFFICIENT_SCOPE = "insufficient_scope"
    CROSS_SITE_REQUEST = "cross_site_request"

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def status_code(self) -> int:
        if self in (Reason.INSUFFICIENT_SCOPE, Reason.CROSS_SITE_REQUEST):
            return 403
        if self is Reason.REGISTRY_UNAVAILABLE:
            return 503
        return 401


_MESSAGES: dict[Reason, str] = {
    Reason.MISSING_CERTIFICATE: "No client certificate was presented.",
    Reason.MALFORMED_CERTIFICATE: "The forwarded client certificate could not be parsed.",
    Reason.UNTRUSTED_PROXY: "A client certificate header came from an address that is not a trusted proxy.",
    Reason.PROXY_VERIFICATION_FAILED: "The TLS proxy did not verify the client certificate.",
    Reason.FORWARDED_HASH_MISMATCH: "The forwarded certificate hash does not match the certificate.",
    Reason.CERTIFICATE_EXPIRED: "The client certificate has expired.",
    Reason.CERTIFICATE_NOT_YET_VALID: "The client certificate is not valid yet.",
    Reason.WRONG_USAGE: "The client certificate is not allowed for client authentication.",
    Reason.WEAK_CERTIFICATE: "The client certificate uses a key or signature that is too weak.",
    Reason.UNSUPPORTED_CERTIFICATE: "The client certificate's version or a critical extension is not supported.",
    Reason.UNTRUSTED_ISSUER: "The client certificate was not issued by a trusted authority.",
    Reason.CHAIN_INVALID: "The client certificate chain is not valid.",
    Reason.SELF_SIGNED_NOT_ALLOWED: "Self-signed client certificates are not allowed.",
    Reason.CHAINED_NOT_ALLOWED: "Only self-signed client certificates are allowed.",
    Reason.CRL_REVOKED: "The client certificate is revoked by its authority's CRL.",
    Reason.CRL_UNAVAILABLE: "The revocation list needed to check the certificate is unavailable.",
    Reason.OCSP_UNAVAILABLE: "The OCSP responder needed to check the certificate gave no usable answer.",
    Reason.UNKNOWN_CERTIFICATE: "The client certificate is not registered.",
    Reason.CERTIFICATE_REVOKED: "The client certificate has been revoked.",
    Reason.IDENTITY_DISABLED: "The identity of this client certificate is disabled.",
    Reason.AMBIGUOUS_IDENTITY: "The client certificate matches more than one identity.",
    Reason.REGISTRY_UNAVAILABLE: "The certificate registry is unavailable; try again later.",
    Reason.INSUFFICIENT_SCOPE: "The identity lacks a scope this endpoint requires.",
    Reason.CROSS_SITE_REQUEST: "A browser sent this request from another site; it is refused.",
}


class CertificateRefused(Exception):
    """Raised by the pure layers when a certificate is refused; carries the reason code and a short,
    safe detail (never the raw certificate or library error text)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail or reason.message
