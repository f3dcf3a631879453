"""Certificate facts: parsing, SHA-256 thumbprints and an immutable summary of what a certificate says.
Pure Python on top of ``cryptography``: no Django imports."""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .reasons import CertificateRefused, Reason

THUMBPRINT_LENGTH = 64
_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = re.compile(r"\A[0-9a-f]{64}\Z")


def normalize_thumbprint(text: str) -> str:
    """Return the canonical spelling of a SHA-256 thumbprint: 64 lowercase hex characters.

    Accepts colons, spaces, dashes and any letter case (``AB:CD:...``, ``ab cd ...``), and an
    optional ``sha256:``/``SHA256=`` prefix as printed by openssl.  Raises ``ValueError`` otherwise.
    """
    value = text.strip()
    lowered = value.lower()
    for prefix in ("sha256 fingerprint=", "sha256fingerprint=", "sha256:", "sha256="):
        if lowered.startswith(prefix):
            value = value[len(prefix) :]
            break
    value = _SEPARATORS.sub("", value).lower()
    if not _HEX.match(value):
        raise ValueError("A SHA-256 thumbprint is 64 hexadecimal characters (colons and spaces allowed).")
    return value


def is_thumbprint(text: str) -> bool:
    try:
        normalize_thumbprint(text)
    except ValueError:
        return False
    return True


def format_thumbprint(thumbprint: str, separator: str = ":") -> str:
    """``ab:cd:...`` uppercase pairs, the way browsers and openssl print it."""
    upper = thumbprint.upper()
    return separator.join(upper[i : i + 2] for i in range(0, len(upper), 2))


def thumbprint_of(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


# --- "the same certificate" beyond its exact bytes --------------------------------------------------------
# The thumbprint hashes the whole DER, signature included, and the signature is not covered by what the
# issuer signed: the same signed content can be re-encoded (an ECDSA signature (r, s) is as valid as
# (r, n - s)), giving a new thumbprint for the same serial, subject and key.  These keys do not move with
# such a re-encoding; the registry uses them so that a revocation reaches every encoding.


def _der_integer(value: int) -> bytes:
    """An INTEGER's DER (two's complement, minimal length): how a serial number appears in the TBS."""
    magnitude = value if value >= 0 else ~value  # bits besides the sign
    return _der_tlv(0x02, value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True))


def _der_tlv(tag: int, body: bytes) -> bytes:
    """A DER value: tag, definite length (short or long form), body."""
    length = len(body)
    if length < 0x80:
        return bytes([tag, length]) + body
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def issuer_serial_of(certificate: x509.Certificate) -> str:
    """SHA-256 of the issuer name's DER, the serial number's DER and, when the certificate names its issuer's
    key (AuthorityKeyIdentifier keyIdentifier), that identifier as a DER OCTET STRING: self-delimiting values.

    Per RFC 5280 (4.1.2.2) the issuer and serial identify one certificate, whatever its encoding; but "the
    issuer" is one CA, and two CAs may share a name (two private CAs both called "Internal CA", a CA re-keyed
    under its old name), each numbering its own serials.  The key identifier tells them apart, and it is read
    from the certificate alone (the signed TBS: a re-encoding of the signature does not move it).  Without it
    the key falls back to name and serial (the same value as before the identifier was added), so two
    same-named CAs whose certificates carry no AuthorityKeyIdentifier are still taken for one issuer: such a
    collision refuses (a duplicate, a re-encoding, a revoked issuance), it never admits.  A trusted CA can write
    any key identifier, so one that copies another's name and identifier can still collide on purpose: again
    a refusal of its own or that CA's certificates, never an admission."""
    fields = certificate.issuer.public_bytes() + _der_integer(certificate.serial_number)
    key_identifier = _authority_key_identifier(certificate)
    if key_identifier is not None:
        fields += _der_tlv(0x04, key_identifier)  # OCTET STRING
    return hashlib.sha256(fields).hexdigest()


def _authority_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier or None


def tbs_of(certificate: x509.Certificate) -> str:
    """SHA-256 of the TBSCertificate: exactly what the issuer signed, the signature left out."""
    return hashlib.sha256(certificate.tbs_certificate_bytes).hexdigest()


def spki_of(certificate: x509.Certificate) -> str:
    """SHA-256 of the SubjectPublicKeyInfo as ``cryptography`` re-encodes it, so one key has one hash (an EC
    point written compressed or uncompressed gives the same value)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What certauth knows about a presented certificate.  Immutable and safe to cache."""

    thumbprint_sha256: str  # the exact DER: the operator's handle, what nginx logs
    subject: str
    issuer: str
    subject_cn: str
    serial_number: int
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    extended_key_usages: tuple[str, ...] | None = None  # dotted OIDs; None when the extension is absent
    organizational_units: tuple[str, ...] = ()
    common_names: tuple[str, ...] = ()  # every CN of the subject (``subject_cn`` is the first)
    is_self_issued: bool = False
    # structural facts the policy judges (see certauth.policy.check_certificate)
    version: int = 3
    is_ca: bool = False
    key_usage_allows_signing: bool | None = None  # None when there is no KeyUsage extension
    public_key_algorithm: str = ""  # rsa | ec | ed25519 | ed448 | dsa | other
    public_key_bits: int = 0
    signature_hash: str = ""  # e.g. sha256; "" for EdDSA; "unknown" when the library cannot name it
    unsupported_critical_extensions: tuple[str, ...] = ()
    # the same certificate whatever its encoding (see issuer_serial_of, tbs_of, spki_of); "" when unknown
    issuer_serial_sha256: str = ""
    tbs_sha256: str = ""
    spki_sha256: str = ""  # the public key: the same for every certificate issued for that key
    certificate: x509.Certificate | None = field(default=None, compare=False, repr=False)

    @property
    def serial_hex(self) -> str:
        return serial_to_hex(self.serial_number)

    @property
    def allows_client_auth(self) -> bool:
        """True when there is no EKU (any usage) or the EKU lists clientAuth or anyExtendedKeyUsage."""
        if self.extended_key_usages is None:
            return True
        return bool(
            {ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string}
            & set(self.extended_key_usages)
        )

    def subject_alternative_names(self) -> dict[str, list[str]]:
        return {
            "dns": list(self.dns_names),
            "uri": list(self.uris),
            "email": list(self.emails),
            "ip": list(self.ip_addresses),
        }

    def pem(self) -> str:
        if self.certificate is None:
            return ""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def serial_to_hex(serial: int) -> str:
    """Serial as colon-free uppercase hex, as openssl and most admin consoles print it."""
    if serial < 0:
        return "-" + format(-serial, "X")
    return format(serial, "X")


def _name_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    values = []
    for attribute in name.get_attributes_for_oid(oid):
        value = attribute.value
        values.append(printable(value if isinstance(value, str) else value.decode("utf-8", "replace")))
    return values


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """A certificate's text as it may be stored, logged and shown: control characters (NUL above all, which
    PostgreSQL text columns refuse; newlines, which forge log lines) escaped as ``\\xNN``."""
    return _CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


# Controls, C1 and the characters that reorder or hide text (bidi marks, overrides and isolates, line and
# paragraph separators, zero-width characters, the BOM).
# C0 and C1 controls (XML 1.0 refuses most C0 ones outright), zero-width and bidirectional formatting characters
# (they hide or reorder what follows), line and paragraph separators, lone surrogates and non-characters.
_INVISIBLE_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ud800-\udfff\ufeff\ufffe\uffff]"
)


def visible(text: str) -> str:
    """``text`` as a page shows it: every control, C1 and bidirectional formatting character spelled out
    (``\\u202e``), so a subject or a path cannot reorder or hide what is shown around it."""
    return _INVISIBLE_CHARACTERS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _rfc4514(name: x509.Name) -> str:
    try:
        return printable(name.rfc4514_string())
    except Exception:  # an odd attribute must not make the whole certificate unreadable
        return "<unprintable name>"


def describe(certificate: x509.Certificate) -> CertificateInfo:
    """Summarise a parsed certificate.  Raises ``CertificateRefused(MALFORMED_CERTIFICATE)`` when an
    extension cannot be decoded (``cryptography`` parses extensions lazily)."""
    try:
        subject, issuer = certificate.subject, certificate.issuer
        dns: list[str] = []
        uris: list[str] = []
        emails: list[str] = []
        ips: list[str] = []
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            pass
        else:
            dns = [printable(value) for value in san.get_values_for_type(x509.DNSName)]
            uris = [printable(value) for value in san.get_values_for_type(x509.UniformResourceIdentifier)]
            emails = [printable(value) for value in san.get_values_for_type(x509.RFC822Name)]
            ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        ekus: tuple[str, ...] | None
        try:
            eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            ekus = None
        else:
            ekus = tuple(oid.dotted_string for oid in eku)
        cns = _name_attr(subject, NameOID.COMMON_NAME)
        is_ca = False
        signing: bool | None = None
        unsupported: list[str] = []
        for extension in certificate.extensions:
            value = extension.value
            if isinstance(value, x509.BasicConstraints):
                is_ca = value.ca
            elif isinstance(value, x509.KeyUsage):
                signing = value.digital_signature
            elif isinstance(value, x509.UnrecognizedExtension) and extension.critical:
                unsupported.append(extension.oid.dotted_string)
        key_algorithm, key_bits = _public_key_facts(certificate)
        return CertificateInfo(
            thumbprint_sha256=thumbprint_of(certificate),
            subject=_rfc4514(subject),
            issuer=_rfc4514(issuer),
            subject_cn=cns[0] if cns else "",
            serial_number=certificate.serial_number,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            dns_names=tuple(dns),
            uris=tuple(uris),
            emails=tuple(emails),
            ip_addresses=tuple(ips),
            extended_key_usages=ekus,
            organizational_units=tuple(_name_attr(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)),
            common_names=tuple(cns),
            is_self_issued=subject == issuer,
            version=1 if certificate.version == x509.Version.v1 else 3,
            is_ca=is_ca,
            key_usage_allows_signing=signing,
            public_key_algorithm=key_algorithm,
            public_key_bits=key_bits,
            signature_hash=_signature_hash(certificate),
            unsupported_critical_extensions=tuple(unsupported),
            issuer_serial_sha256=issuer_serial_of(certificate),
            tbs_sha256=tbs_of(certificate),
            spki_sha256=spki_of(certificate),
            certificate=certificate,
        )
    except CertificateRefused:
        raise
    except Exception as exc:
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "The certificate has an unreadable field.") from exc


def _public_key_facts(certificate: x509.Certificate) -> tuple[str, int]:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448", 448
    if isinstance(key, dsa.DSAPublicKey):
        return "dsa", key.key_size
    return "other", 0


def _signature_hash(certificate: x509.Certificate) -> str:
    try:
        algorithm = certificate.signature_hash_algorithm
    except Exception:  # e.g. MD5/SHA-1 variants the library declines to name
        return "unknown"
    return algorithm.name if algorithm is not None else ""


_PRIVATE_KEY_MARK = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class PemError(ValueError):
    """A PEM text that is not exactly armour around strict base64 (the message is safe to show)."""


def pem_bodies(data: bytes, label: str, *, strict: bool) -> list[bytes]:
    """The decoded body of every ``-----BEGIN <label>-----`` ... ``-----END <label>-----`` block, in order.

    A linear scan (``bytes.find`` and ``bytes.split``; no regular expression, so nothing can backtrack
    however long a run of whitespace is).  Each body must be strict base64: whitespace between characters
    is ignored, anything else outside the alphabet, padding anywhere but at the end (two blocks glued
    together), or a length that is not a multiple of four is refused, as OpenSSL refuses them.
    ``strict`` also refuses anything but whitespace around and between the blocks.  Raises ``PemError``.
    """
    begin_line, end_line = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    bodies: list[bytes] = []
    position = 0
    while True:
        begin = data.find(begin_line, position)
        outside = data[position:] if begin == -1 else data[position:begin]
        if strict and outside.strip():
            raise PemError(f"Unexpected text around the PEM {label.lower()}.")
        if begin == -1:
            return bodies
        start = begin + len(begin_line)
        end = data.find(end_line, start)
        if end == -1:
            raise PemError(f"A PEM {label.lower()} block has no END line.")
        bodies.append(strict_base64(data[start:end]))
        position = end + len(end_line)


def strict_base64(text: bytes) -> bytes:
    """Decode base64 whose characters may be separated by whitespace; refuse anything else that is not
    canonical base64 (stray characters, inner or surplus padding, a truncated quantum).  Raises ``PemError``."""
    compact = b"".join(text.split())
    if compact.translate(None, _BASE64_ALPHABET):
        raise PemError("A PEM body holds characters that are not base64.")
    if len(compact) % 4 or compact.endswith(b"==="):
        raise PemError("A PEM body is not whole base64 (length or padding).")
    try:
        # strict_mode: padding only at the very end, so two base64 blocks glued together are refused.
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise PemError("A PEM body is not valid base64.") from exc


def load_certificates(data: bytes, *, strict: bool = False) -> list[x509.Certificate]:
    """Load one or more certificates from PEM (one or several blocks) or a single DER certificate.

    Refuses anything that carries private-key material, so a pasted key can never be stored.
    ``strict`` (forwarded headers) also refuses anything but whitespace around and between the PEM
    blocks; the lenient mode (operators pasting ``openssl`` output) ignores such text.  Either way each
    block's body is strict base64 (``pem_bodies``), read in time linear in the input.
    Raises ``CertificateRefused(MALFORMED_CERTIFICATE)`` with a safe detail on any failure.
    """
    if _PRIVATE_KEY_MARK.search(data):
        raise CertificateRefused(
            Reason.MALFORMED_CERTIFICATE, "That is a private key, not a certificate. Never share private keys."
        )
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN") or (not strict and b"-----BEGIN CERTIFICATE-----" in stripped):
        try:
            bodies = pem_bodies(stripped, "CERTIFICATE", strict=strict)
        except PemError as exc:
            raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, str(exc)) from exc
        if not bodies:
            raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "No PEM certificate block was found.")
        certificates = []
        for der in bodies:
            try:
                certificates.append(x509.load_der_x509_certificate(der))
            except ValueError as exc:
                raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "A PEM block is not a certificate.") from exc
        return certificates
    try:
        # DER is binary: never strip it (a final byte may look like whitespace).
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "The data is neither PEM nor DER.") from exc


def load_certificate(data: bytes, *, strict: bool = False) -> x509.Certificate:
    """Exactly one certificate (PEM or DER)."""
    certificates = load_certificates(data, strict=strict)
    if len(certificates) != 1:
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, f"Expected one certificate, found {len(certificates)}.")
    return certificates[0]


def load_pkcs12_certificate(data: bytes, password: str | None) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The public certificate (and any extra certificates) from a PKCS#12 bundle.  The private key is
    decrypted by the library and dropped at once: it is never returned, stored or logged."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        bundle = pkcs12.load_pkcs12(data, password.encode() if password else None)
    except ValueError as exc:
        raise CertificateRefused(
            Reason.MALFORMED_CERTIFICATE, "Could not open the PKCS#12 file: wrong password or not PKCS#12."
        ) from exc
    if bundle.cert is None:
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE, "The PKCS#12 file holds no certificate.")
    return bundle.cert.certificate, [extra.certificate for extra in bundle.additional_certs]
