"""Reading the client certificate a TLS-terminating proxy forwarded in a header.

Each proxy has its own dialect; ``parse_forwarded(value, format)`` turns any of them into a
``ForwardedCertificate`` or raises ``CertificateRefused(MALFORMED_CERTIFICATE)``.  Pure Python: no
Django imports, never raises anything else for any input string.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from cryptography import x509

from .certificates import load_certificate, load_certificates
from .reasons import CertificateRefused, Reason

#: Longer values are refused before any parsing: a certificate chain is a few KiB, nginx's default
#: header buffers stop at 8 KiB per line, and a megabyte of header must not cost a megabyte of work.
MAX_FORWARDED_LENGTH = 64 * 1024


@dataclass(frozen=True, slots=True)
class ForwardedCertificate:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


Parser = Callable[[str], ForwardedCertificate]
PARSERS: dict[str, Parser] = {}


def parser(*names: str) -> Callable[[Parser], Parser]:
    def register(function: Parser) -> Parser:
        for name in names:
            PARSERS[name] = function
        return function

    return register


def _malformed(detail: str) -> CertificateRefused:
    return CertificateRefused(Reason.MALFORMED_CERTIFICATE, detail)


def _ascii(value: str) -> str:
    if not value.isascii():
        raise _malformed("The forwarded value contains non-ASCII characters.")
    if "\x00" in value:
        raise _malformed("The forwarded value contains NUL bytes.")
    return value


def _b64decode(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed("The forwarded value is not valid base64.") from exc


def _split_leaf(certificates: list[x509.Certificate]) -> ForwardedCertificate:
    if not certificates:
        raise _malformed("No certificate was found in the forwarded value.")
    return ForwardedCertificate(leaf=certificates[0], chain=tuple(certificates[1:]))


@parser("nginx", "nginx_escaped")
def parse_nginx_escaped(value: str) -> ForwardedCertificate:
    """nginx ``$ssl_client_escaped_cert``: the leaf PEM, URL-escaped."""
    text = _ascii(value).strip()
    if "%" in text:
        text = unquote(text, errors="strict") if _valid_escapes(text) else _raise_escape()
    return ForwardedCertificate(leaf=load_certificate(_ascii(text).encode("ascii")))


@parser("nginx_legacy", "pem")
def parse_pem(value: str) -> ForwardedCertificate:
    """Raw PEM, and nginx's deprecated ``$ssl_client_cert`` (PEM whose continuation lines start with a
    tab). Whitespace inside the base64 body is ignored by the PEM reader, so both read the same."""
    text = _ascii(value).strip()
    return ForwardedCertificate(leaf=load_certificate(text.replace("\t", "").encode("ascii")))


@parser("base64_der", "iis", "arr", "haproxy")
def parse_base64_der(value: str) -> ForwardedCertificate:
    """Base64 DER without PEM armour: IIS/Azure ``X-ARR-ClientCert``, HAProxy ``%[ssl_c_der,base64]``."""
    text = "".join(_ascii(value).split())
    return ForwardedCertificate(leaf=load_certificate(_b64decode(text)))


def _sf_binary(item: str) -> bytes:
    """An RFC 8941 structured-field byte sequence: ``:base64:``."""
    item = item.strip()
    if len(item) < 2 or not (item.startswith(":") and item.endswith(":")):
        raise _malformed("An RFC 9440 value must be a byte sequence (:base64:).")
    return _b64decode(item[1:-1])


@parser("rfc9440")
def parse_rfc9440(value: str) -> ForwardedCertificate:
    """RFC 9440 ``Client-Cert: :<base64 DER>:``.  The chain travels in a separate header
    (``Client-Cert-Chain``); see ``parse_rfc9440_chain``."""
    return ForwardedCertificate(leaf=load_certificate(_sf_binary(_ascii(value))))


def parse_rfc9440_chain(value: str) -> tuple[x509.Certificate, ...]:
    """RFC 9440 ``Client-Cert-Chain``: a list of byte sequences, issuer-wards from the leaf's issuer."""
    items = [item for item in _ascii(value).split(",") if item.strip()]
    return tuple(load_certificate(_sf_binary(item)) for item in items)


def _valid_escapes(text: str) -> bool:
    index = text.find("%")
    while index != -1:
        pair = text[index + 1 : index + 3]
        if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            return False
        index = text.find("%", index + 3)
    return True


def _raise_escape() -> str:
    raise _malformed("The forwarded value has a broken URL escape.")


def url_unescape_bytes(text: str) -> bytes:
    if not _valid_escapes(text):
        _raise_escape()
    return unquote_to_bytes(text)


def parse_chain_header(value: str, format: str = "pem") -> tuple[x509.Certificate, ...]:
    """A separate chain header: RFC 9440 ``Client-Cert-Chain`` for ``rfc9440``, else PEM blocks
    (URL-escaped or not).  Raises ``CertificateRefused(MALFORMED_CERTIFICATE)``."""
    if len(value) > MAX_FORWARDED_LENGTH:
        raise _malformed(f"The forwarded chain is longer than {MAX_FORWARDED_LENGTH} characters.")
    try:
        if format == "rfc9440":
            return parse_rfc9440_chain(value)
        text = _ascii(value).strip()
        data = url_unescape_bytes(text) if "%" in text else text.encode("ascii")
        return tuple(load_certificates(data)) if data.strip() else ()
    except CertificateRefused:
        raise
    except Exception as exc:
        raise _malformed("The forwarded chain could not be read.") from exc


def parse_forwarded(value: str, format: str = "nginx_escaped") -> ForwardedCertificate:
    """Parse a forwarded certificate header in the given dialect.

    Raises ``CertificateRefused(MALFORMED_CERTIFICATE)`` for any value that is not exactly what the
    dialect promises; raises ``KeyError`` only for an unknown ``format`` (a configuration error that
    system checks report at start-up).
    """
    function = PARSERS[format]
    if len(value) > MAX_FORWARDED_LENGTH:
        raise _malformed(f"The forwarded value is longer than {MAX_FORWARDED_LENGTH} characters.")
    if not value.strip():
        raise _malformed("The forwarded value is empty.")
    try:
        return function(value)
    except CertificateRefused:
        raise
    except Exception as exc:
        raise _malformed("The forwarded value could not be read.") from exc


__all__ = [
    "MAX_FORWARDED_LENGTH",
    "PARSERS",
    "ForwardedCertificate",
    "load_certificates",
    "parse_chain_header",
    "parse_forwarded",
    "parse_rfc9440_chain",
    "url_unescape_bytes",
]
