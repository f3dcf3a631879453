"""Certificate policy checks that need no database: validity period and usage.  Pure Python.

Chain and revocation checks build on these in ``certauth.trust``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .certificates import CertificateInfo
from .reasons import CertificateRefused, Reason


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    validate_validity_period: bool = True
    validate_certificate_use: bool = True


def check_certificate(info: CertificateInfo, now: dt.datetime, options: PolicyOptions) -> None:
    """Raise ``CertificateRefused`` when the certificate itself is unacceptable right now."""
    if options.validate_validity_period:
        if now < info.not_before:
            raise CertificateRefused(
                Reason.CERTIFICATE_NOT_YET_VALID, f"The certificate is valid from {info.not_before.isoformat()}."
            )
        if now >= info.not_after:
            raise CertificateRefused(
                Reason.CERTIFICATE_EXPIRED, f"The certificate expired at {info.not_after.isoformat()}."
            )
    if options.validate_certificate_use and not info.allows_client_auth:
        raise CertificateRefused(
            Reason.WRONG_USAGE, "The certificate's extended key usage does not include clientAuth."
        )
