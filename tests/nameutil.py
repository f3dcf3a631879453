"""Certificates with the names devpki does not write: a sub-CA with NameConstraints, a leaf with several CNs or
a SAN that is not ASCII (U+212A KELVIN SIGN, which ``cryptography``'s constructors rightly refuse; the DER
then holds its UTF-8 bytes in an IA5String, as a hostile CA would write it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth import devpki

KELVIN = "\u212a"  # KELVIN SIGN: casefold() and lower() make it "k"


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=30)


def constrained_ca(
    issuer: devpki.Issued,
    common_name: str,
    *,
    permitted: Sequence[x509.GeneralName] | None = None,
    excluded: Sequence[x509.GeneralName] | None = None,
) -> devpki.Issued:
    """An intermediate CA signed by ``issuer`` carrying a critical NameConstraints extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # keyCertSign, cRLSign
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=list(permitted) if permitted else None,
                excluded_subtrees=list(excluded) if excluded else None,
            ),
            critical=True,
        )
        .sign(issuer.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return devpki.Issued(certificate, key)


def leaf(
    issuer: devpki.Issued,
    common_names: Sequence[str],
    *,
    dns: Sequence[str] = (),
    uris: Sequence[str] = (),
    emails: Sequence[str] = (),
) -> devpki.Issued:
    """A client certificate with exactly these subject CNs and SANs.  SAN values are written as given, without
    the library's A-label check, so a non-ASCII name reaches the DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity()
    san: list[x509.GeneralName] = [x509.DNSName._init_without_validation(name) for name in dns]
    san += [x509.UniformResourceIdentifier._init_without_validation(uri) for uri in uris]
    san += [x509.RFC822Name._init_without_validation(email) for email in emails]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(issuer.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return devpki.Issued(certificate, key)
