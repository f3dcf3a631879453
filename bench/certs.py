"""Many distinct, valid client certificates, fast: one shared leaf key, each certificate signed by the
dev CA (signing is ~0.1 ms; generating a key per certificate would dominate the set-up time).  Also
the rows that register them, written with ``executemany`` rather than one ``save()`` each."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth import devpki


class FastIssuer:
    """Issues client certificates (clientAuth EKU, SPIFFE URI SAN) from ``ca`` with one shared key."""

    def __init__(self, ca: devpki.Issued) -> None:
        self.ca = ca
        self.key = ec.generate_private_key(ec.SECP256R1())
        self._ca_key = ca.private_key
        self._ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key())  # type: ignore[arg-type]

    def issue(self, common_name: str, *, days: int = 365) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca.certificate.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self._ski, critical=False)
            .add_extension(self._aki, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://bench/{common_name}")]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return builder.sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]

    def issue_many(self, prefix: str, count: int) -> list[x509.Certificate]:
        return [self.issue(f"{prefix}-{index}") for index in range(count)]


def escaped(certificate: x509.Certificate) -> str:
    """What nginx puts in ``$ssl_client_escaped_cert``."""
    return quote(certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"), safe="")


def register_many(identity_name: str, certificates: Sequence[x509.Certificate]) -> int:
    """Register real certificates for one identity in one transaction; returns the identity's id."""
    from certauth.certificates import describe

    from .registry_rows import EntryWriter

    writer = EntryWriter()
    identity_id = writer.identity(identity_name)
    writer.write((identity_id, describe(certificate)) for certificate in certificates)
    return identity_id


def synthetic_thumbprint(index: int) -> str:
    """A stable, well-spread fake thumbprint for synthetic registry rows."""
    return hashlib.sha256(b"certauth-bench-%d" % index).hexdigest()


def chunked(items: Iterable[tuple[int, object]], size: int) -> Iterator[list[tuple[int, object]]]:
    batch: list[tuple[int, object]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
