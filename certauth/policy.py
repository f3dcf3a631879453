"""Certificate policy checks that need no database: validity period and usage.  Pure Python.

Chain and revocation checks build on these in ``certauth.trust``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .certificates import CertificateInfo
from .reasons import CertificateRefused, Reason

#: Below these a certificate is refused as ``weak_certificate`` whatever else is configured.
MINIMUM_KEY_BITS = {"rsa": 2048, "dsa": 2048, "ec": 256, "ed25519": 256, "ed448": 448}
WEAK_SIGNATURE_HASHES = frozenset({"md5", "sha1", "md2", "md4", "unknown"})

#: How to make the seed's ``openssl x509 -req`` recipe write a v3 client certificate (without ``-extfile`` it
#: writes version 1: no extensions, so nothing says it is a client certificate rather than a CA).
V3_RECIPE = (
    "openssl x509 -req -days 365 -sha256 -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt "
    '-extfile <(printf "basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=clientAuth")'
)
NO_CLIENT_AUTH_DETAIL = (
    "The certificate's extended key usage does not include clientAuth: re-issue it with `extendedKeyUsage=clientAuth`."
)
CA_LEAF_DETAIL = (
    "A CA certificate cannot authenticate a client: issue a client certificate from this CA "
    "(basicConstraints CA:FALSE, extendedKeyUsage clientAuth) and use that; trust the CA itself under "
    "Trusted authorities."
)
V1_DETAIL = (
    "Version 1 certificates are not accepted (they carry no extensions, so nothing limits them to client "
    f"authentication): re-issue it as version 3, e.g. `{V3_RECIPE}`."
)


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    validate_validity_period: bool = True
    validate_certificate_use: bool = True


def check_certificate(info: CertificateInfo, now: dt.datetime, options: PolicyOptions) -> None:
    """Raise ``CertificateRefused`` when the certificate itself is unacceptable right now.

    Structure and strength are always enforced (they are not a matter of configuration): no v1
    certificates, no critical extension certauth does not understand (RFC 5280 4.2), no CA
    certificate as a client, no RSA/DSA key under 2048 bits or EC under 256, no MD5/SHA-1 signature.
    """
    if info.serial_number <= 0 or info.serial_number.bit_length() > 159:
        # RFC 5280 4.1.2.2: a positive integer of at most 20 octets.
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "The certificate's serial number is not valid.")
    if info.version != 3:
        raise CertificateRefused(Reason.UNSUPPORTED_CERTIFICATE, V1_DETAIL)
    if info.unsupported_critical_extensions:
        raise CertificateRefused(
            Reason.UNSUPPORTED_CERTIFICATE,
            f"The certificate has an unsupported critical extension ({info.unsupported_critical_extensions[0]}).",
        )
    minimum = MINIMUM_KEY_BITS.get(info.public_key_algorithm)
    if minimum is None or info.public_key_bits < minimum:
        raise CertificateRefused(
            Reason.WEAK_CERTIFICATE,
            f"The certificate's {info.public_key_algorithm or 'unknown'} key of {info.public_key_bits} bits "
            "is too weak: issue a new key of RSA 2048 bits or more (`openssl genrsa -out client.key 2048`), "
            "EC P-256 or stronger, or Ed25519, and a certificate for it.",
        )
    if info.signature_hash in WEAK_SIGNATURE_HASHES:
        raise CertificateRefused(
            Reason.WEAK_CERTIFICATE,
            f"The certificate is signed with {info.signature_hash}, which is broken: have it re-issued with SHA-256 "
            "(`openssl x509 -req -sha256 …`).",
        )
    if options.validate_validity_period:
        if now < info.not_before:
            raise CertificateRefused(
                Reason.CERTIFICATE_NOT_YET_VALID, f"The certificate is valid from {info.not_before.isoformat()}."
            )
        if now >= info.not_after:
            raise CertificateRefused(
                Reason.CERTIFICATE_EXPIRED, f"The certificate expired at {info.not_after.isoformat()}."
            )
    if options.validate_certificate_use:
        if not info.allows_client_auth:
            raise CertificateRefused(Reason.WRONG_USAGE, NO_CLIENT_AUTH_DETAIL)
        if info.is_ca:
            raise CertificateRefused(Reason.WRONG_USAGE, CA_LEAF_DETAIL)
        if info.key_usage_allows_signing is False:
            raise CertificateRefused(
                Reason.WRONG_USAGE, "The certificate's key usage does not allow digital signatures."
            )
