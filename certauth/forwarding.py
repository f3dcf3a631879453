"""Reading the client certificate a TLS-terminating proxy forwarded in a header.

Each proxy has its own dialect; ``parse_forwarded(value, format)`` turns any of them into a
``ForwardedCertificate`` or raises ``CertificateRefused`` (``MALFORMED_CERTIFICATE``, or
``FORWARDED_HASH_MISMATCH`` when an Envoy XFCC element's ``Hash`` contradicts its ``Cert``).  Pure Python:
no Django imports, never raises anything else for any input string.

Formats (``CERTAUTH["FORWARDING_FORMAT"]``) and the header each proxy uses (``CERTIFICATE_HEADER``) are
listed in ``RECOMMENDED_HEADERS``.  Percent-escapes are always decoded with ``unquote`` semantics, never
form semantics: a literal ``+`` in base64 stays a ``+`` (AWS ALB leaves ``+``, ``=`` and ``/`` unescaped).
"""

from __future__ import annotations

import binascii
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, unquote_to_bytes

from cryptography import x509

from .certificates import load_certificate, load_certificates, thumbprint_of
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


_P = TypeVar("_P", bound=Parser)


def parser(*names: str) -> Callable[[_P], _P]:
    def register(function: _P) -> _P:
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
    # binascii's strict mode still accepts surplus padding ("QUJD==="): require canonical length too.
    if len(text) % 4 or text.endswith("==="):
        raise _malformed("The forwarded value is not valid base64 (length or padding).")
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
    return ForwardedCertificate(leaf=load_certificate(_ascii(text).encode("ascii"), strict=True))


@parser("nginx_legacy", "pem")
def parse_pem(value: str) -> ForwardedCertificate:
    """Raw PEM, and nginx's deprecated ``$ssl_client_cert`` (PEM whose continuation lines start with a
    tab). Whitespace inside the base64 body is ignored by the PEM reader, so both read the same."""
    text = _ascii(value).strip()
    return ForwardedCertificate(leaf=load_certificate(text.replace("\t", "").encode("ascii"), strict=True))


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


# --- Envoy x-forwarded-client-cert (XFCC) ------------------------------------------------------------
# One element per proxy hop, separated by ","; an element is ";"-separated key=value pairs.  Envoy quotes
# some values and not others (envoy/source/common/http/conn_manager_utility.cc, and the XFCC section of its
# header-manipulation docs): Cert, Chain and Subject are written as "..." (Subject RFC 2253-escaped, so a
# quote inside is \"); By, Hash, URI and DNS are written bare.  By is the proxy's own URI SAN and Hash is
# hex, but URI and DNS are the CLIENT's SANs, copied verbatim: a SAN "spiffe://x/a,Cert=..." ends the
# element and starts another one, and no reader can tell the client's commas from the proxy's.  So the
# tokeniser reads what Envoy writes, and the parser refuses every key but the five certauth can read
# unambiguously.  Keys are case-insensitive.
_XFCC_KEY_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_XFCC_KEY_REST = _XFCC_KEY_START | frozenset("0123456789_-")
_XFCC_BARE_STOP = frozenset('",;=\\')
_XFCC_BLANK = frozenset(" \t")
#: Keys that occur at most once per element (URI and DNS repeat, one pair per SAN).
XFCC_SINGLE_KEYS = frozenset({"by", "hash", "cert", "chain", "subject"})
#: The keys a header may hold at all, in any element: the quoted ones and the two bare ones no client
#: chooses.  URI and DNS (bare, client-chosen) and anything Envoy never writes are refused.
XFCC_READABLE_KEYS = XFCC_SINGLE_KEYS
_HEX_SHA256 = re.compile(r"\A[0-9a-fA-F]{64}\Z")

XfccElement = dict[str, list[str]]


def split_xfcc(value: str) -> list[XfccElement]:
    """Tokenise an XFCC header into its elements, first hop first: ``[{"hash": [...], "cert": [...]}]``
    with lower-cased keys and unquoted values.  The whole header must be well-formed: a single broken
    element makes the element boundaries (and so "the last element") unknowable.

    A single left-to-right pass over the characters (no regular expression: a run of blanks costs its
    length once, never its square or cube)."""
    text = _ascii(value)
    length = len(text)
    elements: list[XfccElement] = []
    element: XfccElement = {}
    position = 0

    def skip_blanks(index: int) -> int:
        while index < length and text[index] in _XFCC_BLANK:
            index += 1
        return index

    while True:
        position = skip_blanks(position)
        start = position
        if position < length and text[position] in _XFCC_KEY_START:
            position += 1
            while position < length and text[position] in _XFCC_KEY_REST:
                position += 1
        key = text[start:position]
        position = skip_blanks(position)
        if not key or position >= length or text[position] != "=":
            raise _malformed("The x-forwarded-client-cert header is not key=value pairs.")
        position = skip_blanks(position + 1)
        if position < length and text[position] == '"':
            item, position = _xfcc_quoted(text, position + 1)
            position = skip_blanks(position)
        else:
            start = position
            while position < length and text[position] not in _XFCC_BARE_STOP:
                position += 1
            item = text[start:position].strip()
        element.setdefault(key.lower(), []).append(item)
        if position >= length:
            elements.append(element)
            return elements
        separator = text[position]
        if separator not in ",;":
            raise _malformed("The x-forwarded-client-cert header is not key=value pairs.")
        position += 1
        if separator == ",":
            elements.append(element)
            element = {}
        if position == length:
            raise _malformed("The x-forwarded-client-cert header ends with a separator.")


def _xfcc_quoted(text: str, position: int) -> tuple[str, int]:
    """The value of a quoted string whose opening quote ends before ``position`` (``\\x`` stands for
    ``x``), and the index after its closing quote."""
    parts: list[str] = []
    quote = text.find('"', position)
    while True:
        if quote != -1 and quote < position:  # that quote was escaped: look for the next one (once)
            quote = text.find('"', position)
        backslash = text.find("\\", position, quote if quote != -1 else len(text))
        if backslash != -1:
            if backslash + 1 >= len(text):
                break
            parts.append(text[position:backslash])
            parts.append(text[backslash + 1])
            position = backslash + 2
            continue
        if quote == -1:
            break
        parts.append(text[position:quote])
        return "".join(parts), quote + 1
    raise _malformed("The x-forwarded-client-cert header has an unterminated quoted value.")


def _xfcc_single(element: XfccElement, key: str) -> str | None:
    values = element.get(key)
    if values is None:
        return None
    if len(values) != 1:
        raise _malformed(f"An x-forwarded-client-cert element repeats the key {key!r}.")
    return values[0]


def _xfcc_readable(elements: list[XfccElement]) -> None:
    for element in elements:
        unreadable = sorted(set(element) - XFCC_READABLE_KEYS)
        if unreadable:
            keys = ", ".join(key.upper() if key in {"uri", "dns"} else key for key in unreadable)
            raise _malformed(
                f"The x-forwarded-client-cert header carries {keys}: Envoy writes URI and DNS values unquoted, "
                "so a certificate's own names could forge element boundaries. Configure Envoy's "
                "set_current_client_cert_details with cert (and chain) only, not uri or dns."
            )


@parser("envoy_xfcc", "envoy", "xfcc")
def parse_envoy_xfcc(value: str, *, require_hash: bool = True) -> ForwardedCertificate:
    """Envoy ``x-forwarded-client-cert``: the LAST element's ``Cert`` (URL-escaped PEM) and ``Chain``
    (URL-escaped PEM, leaf first).

    Why the last element: each proxy appends its element at the end (``APPEND_FORWARD``) or replaces the
    header with a single one (``SANITIZE_SET``), so the last element is the one written by the proxy that
    talks to us, the address in ``TRUSTED_PROXIES``: it describes the certificate that proxy saw in its
    own TLS handshake.  Earlier elements were written by hops certauth does not know (or by the client
    itself, when an edge proxy appends instead of sanitising) and are never believed.

    Refused as malformed: any element with a key other than By, Hash, Cert, Chain, Subject (above all the
    unquoted, client-chosen URI and DNS: see the comment on the tokeniser), and, with ``require_hash``
    (``XFCC_REQUIRE_HASH``, the default; Envoy always writes Hash), a last element without ``Hash``.
    The element's ``Hash`` (hex SHA-256 of the DER leaf) and certificate must agree, else
    ``CertificateRefused(FORWARDED_HASH_MISMATCH)``.  An element without ``Cert`` or ``Chain`` cannot
    authenticate (configure Envoy's ``set_current_client_cert_details: {cert: true, chain: true}``).
    """
    elements = split_xfcc(value)
    _xfcc_readable(elements)
    element = elements[-1]
    for key in XFCC_SINGLE_KEYS:
        _xfcc_single(element, key)
    cert_text = _xfcc_single(element, "cert")
    chain_text = _xfcc_single(element, "chain")
    hash_text = _xfcc_single(element, "hash")
    leaf = load_certificate(url_unescape_bytes(cert_text), strict=True) if cert_text else None
    chain = load_certificates(url_unescape_bytes(chain_text), strict=True) if chain_text else []
    if leaf is None:
        if not chain:
            raise _malformed("The last x-forwarded-client-cert element has no Cert or Chain.")
        leaf = chain[0]
    if chain:
        # Envoy's Chain starts with the leaf; a chain about some other certificate is a mangled header.
        if chain[0] != leaf:
            raise _malformed("The x-forwarded-client-cert Chain does not start with its Cert.")
        chain = chain[1:]
    if hash_text is None and require_hash:
        raise _malformed(
            "The last x-forwarded-client-cert element has no Hash (Envoy always writes one); "
            "set XFCC_REQUIRE_HASH to False only for a proxy that cannot."
        )
    if hash_text is not None:
        if not _HEX_SHA256.match(hash_text):
            raise _malformed("The x-forwarded-client-cert Hash is not a hex SHA-256 digest.")
        if not hmac.compare_digest(hash_text.lower(), thumbprint_of(leaf)):
            raise CertificateRefused(
                Reason.FORWARDED_HASH_MISMATCH, "The x-forwarded-client-cert Hash does not match its Cert."
            )
    return ForwardedCertificate(leaf=leaf, chain=tuple(chain))


# --- Traefik ---------------------------------------------------------------------------------------
@parser("traefik")
def parse_traefik(value: str) -> ForwardedCertificate:
    """Traefik ``passTLSClientCert`` (``pem: true``) ``X-Forwarded-Tls-Client-Cert``: each certificate's
    base64 DER body without armour or newlines, leaf first, entries separated by ``,``; URL-escaped by
    some Traefik versions (``%2B``, ``%2F``, ``%3D``), raw by others.  A raw ``+`` stays a ``+``."""
    text = _ascii(value).strip()
    if "%" in text:
        text = _ascii(url_unescape_bytes(text).decode("ascii", errors="replace"))
    entries = text.split(",")
    if any(not entry.strip() for entry in entries):
        raise _malformed("The Traefik certificate list has an empty entry.")
    return _split_leaf([load_certificate(_b64decode("".join(entry.split()))) for entry in entries])


# --- AWS Application Load Balancer -------------------------------------------------------------------
@parser("aws_alb", "alb")
def parse_aws_alb(value: str) -> ForwardedCertificate:
    """AWS ALB ``X-Amzn-Mtls-Clientcert`` (mutual TLS passthrough: the client's chain, leaf first) and
    ``X-Amzn-Mtls-Clientcert-Leaf`` (verify mode: the leaf): URL-escaped PEM with ``+``, ``=`` and ``/``
    left unescaped.  Decoded with ``unquote`` semantics, so a ``+`` is never turned into a space."""
    text = _ascii(value).strip()
    data = url_unescape_bytes(text) if "%" in text else text.encode("ascii")
    if not data.lstrip().startswith(b"-----BEGIN CERTIFICATE-----"):
        raise _malformed("The ALB value is not URL-escaped PEM.")
    return _split_leaf(load_certificates(data, strict=True))


# --- "no certificate" ---------------------------------------------------------------------------------
#: What proxies put in a certificate (or chain) header when the client sent none, besides nothing at all:
#: Apache mod_headers writes ``(null)`` for an unset ``%{SSL_CLIENT_CERT}s`` (and ``SSL_CLIENT_CERT_CHAIN_0``
#: of a certificate without a chain), log-style templates write ``-``, and a quoted empty value arrives as
#: ``""`` when a configuration quotes twice.  None of them is base64, PEM, a structured field or XFCC.
ABSENT_VALUES = frozenset({"(null)", "-", '""', "''"})
#: A verdict header's "no certificate": nginx's and Apache's ``NONE``, besides the values above.
ABSENT_VERDICTS = ABSENT_VALUES | {"NONE"}
#: An unreplaced placeholder of a proxy certauth documents: the template reached certauth literally because
#: the proxy has no value for it (Caddy leaves ``{http.request.tls.client.certificate_der_base64}`` as is
#: without a client certificate) or does not know the name.  Caddy ``{a.b_c}``; Apache ``%{SSL_CLIENT_CERT}s``
#: (mod_headers) and ``%{SSL_CLIENT_CERT}`` (ap_expr); HAProxy ``%[ssl_c_der,base64]``; nginx
#: ``$ssl_client_escaped_cert`` / ``${ssl_client_escaped_cert}``; Envoy ``%DOWNSTREAM_PEER_CERT%``.  Each
#: starts with ``{``, ``%{``, ``%[``, ``$`` or ``%`` + a name that is no URL escape (no hex digit pair), which no
#: certificate encoding certauth reads can start with (tests/test_absent_values.py proves it by parsing).
_PLACEHOLDER = re.compile(
    r"""\A(?:
        \{[A-Za-z_][A-Za-z0-9_.:\-]*\}
      | %\{[A-Za-z_][A-Za-z0-9_.:\-]*\}[A-Za-z]?
      | %\[[A-Za-z_][A-Za-z0-9_.,():\- ]*\]
      | \$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})
      | %(?![0-9A-Fa-f]{2})[A-Z_][A-Z0-9_]*(?:\([A-Za-z0-9_.:\-]*\))?%
    )\Z""",
    re.VERBOSE,
)
#: Longer values are never "absent" (the longest placeholder above is under 60 characters; a certificate is
#: several hundred): the check costs a length comparison for every real certificate.
ABSENT_MAX_LENGTH = 128


def is_absent(value: str) -> bool:
    """Does a forwarded certificate or chain header say "no certificate"?  Empty or blank, one of
    ``ABSENT_VALUES``, or an unreplaced placeholder (``_PLACEHOLDER``).  Strict: a value that could be a
    certificate in any dialect is never absent, and anything else that is not a certificate stays
    ``malformed_certificate`` (``parse_forwarded``).  Pure, a few string operations: a real certificate costs a
    strip and a length comparison; only values of at most ``ABSENT_MAX_LENGTH`` characters meet the set and the
    regular expression (linear: no nested repetition)."""
    text = value.strip()
    if not text:
        return True
    if len(text) > ABSENT_MAX_LENGTH:
        return False
    return text in ABSENT_VALUES or _PLACEHOLDER.match(text) is not None


def is_absent_verdict(value: str) -> bool:
    """Does a verdict header say "no certificate"?  ``NONE`` (nginx, Apache) and everything ``is_absent``
    recognises; ``SUCCESS`` and ``FAILED:...`` are verdicts."""
    text = value.strip()
    return text in ABSENT_VERDICTS or is_absent(text)


#: The header each proxy forwards the certificate in, by ``FORWARDING_FORMAT`` (see docs/proxies.md).
RECOMMENDED_HEADERS: dict[str, str] = {
    "nginx": "X-SSL-Client-Cert",
    "nginx_escaped": "X-SSL-Client-Cert",
    "nginx_legacy": "X-SSL-Client-Cert",
    "pem": "X-SSL-Client-Cert",
    "base64_der": "X-SSL-Client-Cert",
    "haproxy": "X-SSL-Client-Cert",
    "iis": "X-ARR-ClientCert",
    "arr": "X-ARR-ClientCert",
    "rfc9440": "Client-Cert",
    "envoy_xfcc": "X-Forwarded-Client-Cert",
    "envoy": "X-Forwarded-Client-Cert",
    "xfcc": "X-Forwarded-Client-Cert",
    "traefik": "X-Forwarded-Tls-Client-Cert",
    "aws_alb": "X-Amzn-Mtls-Clientcert",
    "alb": "X-Amzn-Mtls-Clientcert",
}


def parse_chain_header(value: str, format: str = "pem") -> tuple[x509.Certificate, ...]:
    """A separate chain header: RFC 9440 ``Client-Cert-Chain`` for ``rfc9440``, else PEM blocks
    (URL-escaped or not); ``()`` for a value that says "no chain" (``is_absent``).  Raises
    ``CertificateRefused(MALFORMED_CERTIFICATE)``."""
    if len(value) > MAX_FORWARDED_LENGTH:
        raise _malformed(f"The forwarded chain is longer than {MAX_FORWARDED_LENGTH} characters.")
    if is_absent(value):
        return ()  # Apache's "(null)" for a certificate without a chain, an unreplaced placeholder: no chain
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


def parse_forwarded(
    value: str, format: str = "nginx_escaped", *, xfcc_require_hash: bool = True
) -> ForwardedCertificate:
    """Parse a forwarded certificate header in the given dialect (``xfcc_require_hash``: see
    ``parse_envoy_xfcc``).

    Raises ``CertificateRefused(MALFORMED_CERTIFICATE)`` for any value that is not exactly what the
    dialect promises, ``CertificateRefused(FORWARDED_HASH_MISMATCH)`` when an Envoy XFCC ``Hash``
    contradicts its certificate; raises ``KeyError`` only for an unknown ``format`` (a configuration error
    that system checks report at start-up).
    """
    function = PARSERS[format]
    if len(value) > MAX_FORWARDED_LENGTH:
        raise _malformed(f"The forwarded value is longer than {MAX_FORWARDED_LENGTH} characters.")
    if not value.strip():
        raise _malformed("The forwarded value is empty.")
    try:
        if function is parse_envoy_xfcc:
            return parse_envoy_xfcc(value, require_hash=xfcc_require_hash)
        return function(value)
    except CertificateRefused:
        raise
    except Exception as exc:
        raise _malformed("The forwarded value could not be read.") from exc


__all__ = [
    "ABSENT_VALUES",
    "ABSENT_VERDICTS",
    "MAX_FORWARDED_LENGTH",
    "PARSERS",
    "RECOMMENDED_HEADERS",
    "ForwardedCertificate",
    "is_absent",
    "is_absent_verdict",
    "load_certificates",
    "parse_aws_alb",
    "parse_chain_header",
    "parse_envoy_xfcc",
    "parse_forwarded",
    "parse_rfc9440_chain",
    "parse_traefik",
    "split_xfcc",
    "url_unescape_bytes",
]
