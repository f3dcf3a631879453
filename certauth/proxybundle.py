"""The CA bundle a TLS proxy verifies client certificates against, compared with certauth's registry of
trusted authorities.  Pure Python: no Django imports (``certauth authority bundle``, ``certauth doctor``, the
system check certauth.W019 and the admin's warning read the registry and call this).

Behind ``ssl_verify_client on``/``optional`` two lists decide: the proxy's CA file first, then certauth's
enabled authorities.  A CA enabled in certauth but missing from the file is refused by the proxy
(``untrusted_issuer`` / a TLS failure) although the admin says it is trusted; a CA in the file that certauth
does not (or no longer) trust still passes the proxy's handshake.  ``render_bundle`` writes the file from the
registry; ``compare`` names the differences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .certificates import load_certificates, spki_of, thumbprint_of
from .reasons import CertificateRefused


@dataclass(frozen=True, slots=True)
class Authority:
    """An enabled trusted authority as the comparison needs it."""

    name: str
    certificate: x509.Certificate


@dataclass(slots=True)
class BundleReport:
    """What differs between the proxy's CA bundle and the enabled authorities."""

    path: str
    #: Enabled authorities the bundle lacks: the proxy refuses their clients before certauth sees them.
    missing: list[Authority] = field(default_factory=list)
    #: Certificates in the bundle that are no enabled authority: the proxy trusts more than certauth does.
    extra: list[x509.Certificate] = field(default_factory=list)
    #: Why the bundle could not be read ('' when it was).
    unreadable: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.unreadable)


def _same_anchor_key(certificate: x509.Certificate) -> tuple[bytes, str]:
    """OpenSSL finds an issuer in its CA file by subject and checks the signature with its key: a CA
    re-issued with the same subject and key is the same trust anchor to the proxy."""
    return certificate.subject.public_bytes(), spki_of(certificate)


def read_bundle(path: Path | str) -> tuple[list[x509.Certificate], str]:
    """``(certificates, problem)``: the PEM certificates in ``path``, or ``([], why not)``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return [], f"{path} cannot be read ({error.strerror or error})"
    try:
        certificates = load_certificates(data) if data.strip() else []
    except CertificateRefused as refused:
        return [], f"{path} is not a PEM CA bundle ({refused.detail})"
    if not certificates:
        return [], f"{path} holds no certificate"
    return certificates, ""


def compare(path: Path | str, enabled: Sequence[Authority]) -> BundleReport:
    """The differences between the CA bundle at ``path`` and the ``enabled`` authorities (by thumbprint, or
    by subject and public key: see ``_same_anchor_key``)."""
    report = BundleReport(path=str(path))
    bundle, report.unreadable = read_bundle(path)
    if report.unreadable:
        return report

    def present(certificate: x509.Certificate, thumbprints: set[str], anchors: set[tuple[bytes, str]]) -> bool:
        return thumbprint_of(certificate) in thumbprints or _same_anchor_key(certificate) in anchors

    bundle_thumbprints = {thumbprint_of(c) for c in bundle}
    bundle_anchors = {_same_anchor_key(c) for c in bundle}
    trusted_thumbprints = {thumbprint_of(a.certificate) for a in enabled}
    trusted_anchors = {_same_anchor_key(a.certificate) for a in enabled}
    report.missing = [a for a in enabled if not present(a.certificate, bundle_thumbprints, bundle_anchors)]
    report.extra = [c for c in bundle if not present(c, trusted_thumbprints, trusted_anchors)]
    return report


def render_bundle(certificates: Iterable[x509.Certificate]) -> bytes:
    """A PEM CA bundle (what nginx's ``ssl_client_certificate``, HAProxy's ``ca-file``, Apache's
    ``SSLCACertificateFile`` and Caddy's ``trusted_ca_cert_file`` read), one block per certificate, each once."""
    seen: set[str] = set()
    blocks = []
    for certificate in certificates:
        thumbprint = thumbprint_of(certificate)
        if thumbprint not in seen:
            seen.add(thumbprint)
            blocks.append(certificate.public_bytes(serialization.Encoding.PEM))
    return b"".join(blocks)


def describe_report(report: BundleReport) -> list[str]:
    """One line per problem, each with its fix (the doctor's, the system check's and the admin's words)."""
    fix = (
        "write the bundle from the registry (manage.py certauth authority bundle --output "
        f"{report.path}) and reload the proxy"
    )
    if report.unreadable:
        return [f"the proxy's CA bundle {report.unreadable}: {fix}"]
    lines = [
        f"enabled authority {a.name!r} ({thumbprint_of(a.certificate)}) is missing from the proxy's CA bundle "
        f"{report.path}, so the proxy refuses its clients (untrusted_issuer): {fix}"
        for a in report.missing
    ]
    lines += [
        f"the proxy's CA bundle {report.path} holds {c.subject.rfc4514_string()} ({thumbprint_of(c)}), which is no "
        f"enabled authority: the proxy accepts its clients at TLS although certauth does not trust it; {fix}"
        for c in report.extra
    ]
    return lines


__all__ = ["Authority", "BundleReport", "compare", "describe_report", "read_bundle", "render_bundle"]
