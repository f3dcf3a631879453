"""Identity rules, the pure part: does a certificate's subject CN / DNS SAN / URI SAN / email SAN match a
pattern, and may the CAs that issued it vouch for that kind of name?  No Django imports; ``certauth.rules``
applies the rules stored on ``CertificateIdentity``.

The pattern language (docs/trust.md, "Identity rules", is the operator's copy):

* The only wildcard is ``*``: zero or more characters **within one part** of the name, never across a
  separator.  ``?``, ``[`` and ``]`` are refused in patterns (they were shell-glob wildcards before).
* ``dns_san``: ``*`` stays inside one label (never crosses ``.``); ``**`` as the whole leftmost label matches
  one or more labels (``**.clients.example``).  Compared ASCII case-insensitively.
* ``email_san``: ``local@domain``; in the local part ``*`` is any run of local-part characters (never ``@``),
  the domain is a DNS name as above.  The domain compares ASCII case-insensitively, the local part exactly
  (RFC 5321: it is case-sensitive, and so is the chain verifier's check of mailbox NameConstraints: folding it
  would let a sub-CA excluded from ``ceo@victim.example`` mint ``CEO@victim.example`` for a rule naming the
  former).
* ``uri_san``: ``scheme://host[:port][/path]``; ``*`` stays inside one host label or one path segment (never
  crosses ``.`` in the host or ``/`` in the path); ``/**`` as the whole last segment matches one or more
  segments.  Scheme and host compare ASCII case-insensitively, port and path exactly.  A URI without ``//``
  (``urn:…``) matches only a pattern equal to it, without wildcards.
* ``subject_cn``: ``*`` is any run of characters except ``.``, ``/`` and ``@``.  Compared exactly.

Names are ASCII.  A value that is not a well-formed name of its kind never matches any pattern: non-ASCII or
control characters (U+212A KELVIN SIGN is not ``K``), DNS labels outside letters/digits/``-``/``_``, URIs with
userinfo, a query or fragment, ``.``/``..`` or empty path segments, percent-encoded letters, digits or
separators (``%2f``, ``%2e``, ``%40``, ...), a backslash.  Matching does not backtrack: no regular expression is
built from a pattern, and each literal piece between stars is searched once, left to right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

from .certificates import CertificateInfo

FIELDS = ("subject_cn", "dns_san", "uri_san", "email_san")
WILDCARD = "*"
ANY_DEPTH = "**"


class PatternError(ValueError):
    """A pattern outside the language; the message tells an operator how to write it."""


# --- the certificate's values ---------------------------------------------------------------------------------
def field_values(info: CertificateInfo, field: str) -> tuple[str, ...]:
    """The certificate's values for a rule field (empty when it has none)."""
    if field == "subject_cn":
        if info.common_names:
            return info.common_names
        return (info.subject_cn,) if info.subject_cn else ()
    if field == "dns_san":
        return info.dns_names
    if field == "uri_san":
        return info.uris
    if field == "email_san":
        return info.emails
    raise ValueError(f"Unknown rule field {field!r}; one of {', '.join(FIELDS)}")


def is_ambiguous(field: str, info: CertificateInfo) -> bool:
    """A subject with several CNs names no one subject: a ``subject_cn`` rule must not pick one of them."""
    return field == "subject_cn" and len(info.common_names) > 1


# --- one part of a name: a glob whose only wildcard is ``*`` ----------------------------------------------------
def glob_matches(pattern: str, value: str) -> bool:
    """``*`` = any run of characters; the caller has already split both at the separators.  The literal
    pieces between stars are found leftmost-first, which is exact for star-only globs and linear."""
    pieces = pattern.split(WILDCARD)
    if len(pieces) == 1:
        return pattern == value
    first, *middle, last = pieces
    if len(value) < len(first) + len(last) or not (value.startswith(first) and value.endswith(last)):
        return False
    position, end = len(first), len(value) - len(last)
    for piece in middle:
        found = value.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def _parts_match(patterns: Sequence[str], values: Sequence[str]) -> bool:
    return len(patterns) == len(values) and all(map(glob_matches, patterns, values))


# --- DNS names (also an email's domain and a URI's host) ------------------------------------------------------
_DNS_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
_DNS_LABEL_GLOB = re.compile(r"[a-z0-9_*-]{1,63}\Z")


@dataclass(frozen=True, slots=True)
class _DnsPattern:
    labels: tuple[str, ...]  # label globs, lower case, without the leading ``**``
    any_depth: bool  # a leading ``**`` label: one or more labels before ``labels``

    def matches(self, value: tuple[str, ...]) -> bool:
        if not self.any_depth:
            return _parts_match(self.labels, value)
        extra = len(value) - len(self.labels)
        return extra >= 1 and _parts_match(self.labels, value[extra:])


_ASCII_UPPERCASE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    # A-Z to a-z and nothing else: str.lower() and casefold() also turn KELVIN SIGN into "k", long s into "s".
    return text.translate(_ASCII_UPPERCASE)


def _dns_value(text: str) -> tuple[str, ...] | None:
    if not text.isascii() or len(text) > 253:
        return None
    labels = tuple(_ascii_lower(text).split("."))
    return labels if all(_DNS_LABEL.match(label) for label in labels) else None


def _dns_pattern(text: str, what: str = "A DNS name") -> _DnsPattern:
    _check_ascii(text)
    labels = _ascii_lower(text).split(".")
    any_depth = labels[0] == ANY_DEPTH
    if any_depth:
        labels = labels[1:]
        if not labels:
            raise PatternError(f"{what} pattern needs at least one label after '**.' (e.g. **.clients.example).")
    for label in labels:
        if ANY_DEPTH in label:
            raise PatternError(
                "'**' (any number of labels) is allowed only as the whole leftmost label of a DNS name, "
                "as in **.clients.example; '*' alone stays within one label."
            )
        if not _DNS_LABEL_GLOB.match(label):
            raise PatternError(
                f"{what} pattern is labels of letters, digits, '-', '_' (and '*') separated by single dots: "
                f"{label!r} is not one (empty labels and a trailing dot are refused)."
            )
    return _DnsPattern(tuple(labels), any_depth)


# --- email addresses ----------------------------------------------------------------------------------------
_LOCAL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'+-/=?^_`{|}~.")


def _local_part_ok(local: str, extra: str = "") -> bool:
    return (
        0 < len(local) <= 64
        and all(c in _LOCAL_CHARACTERS or c in extra for c in local)
        and not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
    )


@dataclass(frozen=True, slots=True)
class _EmailPattern:
    local: str
    domain: _DnsPattern

    def matches(self, value: tuple[str, tuple[str, ...]]) -> bool:
        return glob_matches(self.local, value[0]) and self.domain.matches(value[1])


def _email_value(text: str) -> tuple[str, tuple[str, ...]] | None:
    if not text.isascii() or text.count("@") != 1:
        return None
    local, _, domain = text.partition("@")
    labels = _dns_value(domain)
    if labels is None or not _local_part_ok(local):
        return None
    return local, labels  # the local part as written: see the module docstring


def _email_pattern(text: str) -> _EmailPattern:
    _check_ascii(text)
    if text.count("@") != 1:
        raise PatternError("An email pattern is local-part@domain, with exactly one '@' (e.g. *@ops.example).")
    local, _, domain = text.partition("@")
    if ANY_DEPTH in local:
        raise PatternError("'**' has no meaning in the local part of an email pattern; use '*'.")
    if not _local_part_ok(local, extra=WILDCARD):
        raise PatternError(
            f"The local part {local!r} is not a plain address local part (letters, digits, . and !#$%&'+-/=^_`{{|}}~ "
            "plus '*'; no quotes, no leading, trailing or double dot)."
        )
    return _EmailPattern(local, _dns_pattern(domain, "An email domain"))


# --- URIs -------------------------------------------------------------------------------------------------------
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_HEX = frozenset("0123456789abcdefABCDEF")
#: RFC 3986 pchar, without the percent sign (percent-encodings are checked separately).
_PATH_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@")
#: The only characters a percent-encoding may stand for: never a letter, digit or unreserved character (two
#: spellings of one name), never a delimiter (``%2f`` is a slash to some readers and not to others), never a
#: control, non-ASCII, percent or backslash byte.
_ENCODABLE = frozenset(" !\"$&'()*+,;<=>^`{|}")


def _segment_ok(segment: str) -> bool:
    if segment in ("", ".", ".."):
        return False
    index = 0
    while index < len(segment):
        character = segment[index]
        if character == "%":
            code = segment[index + 1 : index + 3]
            if len(code) != 2 or not set(code) <= _HEX or chr(int(code, 16)) not in _ENCODABLE:
                return False
            index += 3
            continue
        if character not in _PATH_CHARACTERS:
            return False
        index += 1
    return True


@dataclass(frozen=True, slots=True)
class _Uri:
    scheme: str  # lower case
    host: tuple[str, ...] = ()  # DNS labels, lower case (hierarchical URIs)
    port: str = ""
    path: tuple[str, ...] = ()  # segments; ("",) for a path of just "/"
    opaque: str | None = None  # everything after "scheme:" of a URI without "//"


@dataclass(frozen=True, slots=True)
class _UriPattern:
    scheme: str
    host: _DnsPattern | None
    port: str
    path: tuple[str, ...]  # segment globs, without a final ``**``
    any_depth: bool  # a final ``/**``: one or more segments after ``path``
    opaque: str | None

    def matches(self, value: _Uri) -> bool:
        if value.scheme != self.scheme or value.opaque != self.opaque:
            return False
        if self.opaque is not None:
            return True
        if self.host is None or value.port != self.port or not self.host.matches(value.host):
            return False
        if ("",) in (self.path, value.path):
            return self.path == value.path and not self.any_depth  # a path of just "/" is no segment for '*'
        if not self.any_depth:
            return _parts_match(self.path, value.path)
        fixed = len(self.path)
        rest = value.path[fixed:]
        return bool(rest) and "" not in rest and _parts_match(self.path, value.path[:fixed])


def _split_uri(text: str, *, pattern: bool) -> tuple[str, str, str, tuple[str, ...], str | None]:
    """(scheme, host, port, path segments, opaque part) of a URI, or ``PatternError`` naming the rule it breaks
    (for a certificate's value the error is caught: it never matches)."""
    _check_ascii(text)
    if any(c <= " " or c in '\\"<>{}|^`' for c in text):
        raise PatternError("A URI has no spaces, control characters, backslashes or quotes.")
    if "?" in text or "#" in text:
        raise PatternError("A URI in an identity rule has no query ('?') or fragment ('#').")
    scheme, colon, rest = text.partition(":")
    scheme = _ascii_lower(scheme)
    if not colon or not _SCHEME.match(scheme):
        raise PatternError("A URI starts with a scheme and a colon, e.g. spiffe:// or https://.")
    if not rest.startswith("//"):
        # urn:..., mailto:...: no host and no segments to scope a wildcard by, so exact only.
        if pattern and WILDCARD in rest:
            raise PatternError(
                "A '*' needs a URI of the form scheme://host/path; a URI without '//' is matched exactly."
            )
        if not all(_segment_ok(part) for part in re.split(r"[:/]", rest)):
            raise PatternError("The URI has an empty part, a '.'/'..' part or a forbidden percent-encoding.")
        return scheme, "", "", (), rest
    authority, slash, path = rest[2:].partition("/")
    if "@" in authority:
        raise PatternError("A URI in an identity rule has no user information ('user@' before the host).")
    host, colon, port = authority.partition(":")
    if colon and not _PORT.match(port):
        raise PatternError("A URI's port is digits only (no '*'; IPv6 literals in brackets are not supported).")
    segments = tuple(path.split("/")) if slash else ()
    if segments != ("",):  # "scheme://host/" is a path of just "/"
        for segment in segments:
            if pattern and segment == ANY_DEPTH:
                continue
            if not _segment_ok(segment):
                raise PatternError(
                    f"The URI path segment {segment!r} is refused: no empty, '.' or '..' segments, no trailing "
                    "'/', no percent-encoded letters, digits or separators (%2f, %2e, %40, %5c, ...)."
                )
    return scheme, host, port, segments, None


def _uri_value(text: str) -> _Uri | None:
    try:
        scheme, host, port, path, opaque = _split_uri(text, pattern=False)
    except PatternError:
        return None
    if opaque is not None:
        return _Uri(scheme, opaque=opaque)
    labels = _dns_value(host)
    return None if labels is None else _Uri(scheme, labels, port, path)


def _uri_pattern(text: str) -> _UriPattern:
    scheme, host, port, segments, opaque = _split_uri(text, pattern=True)
    if opaque is not None:
        return _UriPattern(scheme, None, "", (), False, opaque)
    any_depth = bool(segments) and segments[-1] == ANY_DEPTH
    if any_depth:
        segments = segments[:-1]
    if any(ANY_DEPTH in segment for segment in segments):
        raise PatternError(
            "'**' (any number of path segments) is allowed only as the whole last segment, as in "
            "spiffe://prod.example/ns/billing/**; '*' alone stays within one segment."
        )
    return _UriPattern(scheme, _dns_pattern(host, "A URI host"), port, segments, any_depth, None)


# --- subject common names -----------------------------------------------------------------------------------
_CN_SEPARATORS = re.compile(r"([./@])")


def _cn_value(text: str) -> tuple[str, ...] | None:
    if not text or not all(" " <= c <= "~" and c != "\\" for c in text):
        return None  # (control characters reach us escaped as "\xNN": the backslash refuses them)
    return tuple(_CN_SEPARATORS.split(text))


@dataclass(frozen=True, slots=True)
class _CnPattern:
    parts: tuple[str, ...]  # globs and separators, alternating (re.split with a capturing group)

    def matches(self, value: tuple[str, ...]) -> bool:
        if len(value) != len(self.parts):
            return False
        # Even positions are the text between separators (globs), odd positions the separators themselves.
        return all(
            glob_matches(pattern, part) if index % 2 == 0 else pattern == part
            for index, (pattern, part) in enumerate(zip(self.parts, value, strict=True))
        )


def _cn_pattern(text: str) -> _CnPattern:
    _check_ascii(text)
    if "\\" in text or not all(" " <= c <= "~" for c in text):
        raise PatternError("A CN pattern is printable ASCII without backslashes.")
    if ANY_DEPTH in text:
        raise PatternError("'**' has no meaning in a CN pattern: '*' matches any characters except '.', '/', '@'.")
    return _CnPattern(tuple(_CN_SEPARATORS.split(text)))


# --- the public entry points ----------------------------------------------------------------------------------
_PatternObject = _DnsPattern | _EmailPattern | _UriPattern | _CnPattern
_PARSERS = {"subject_cn": _cn_value, "dns_san": _dns_value, "uri_san": _uri_value, "email_san": _email_value}


def _check_ascii(text: str) -> None:
    if not text.isascii():
        raise PatternError(
            "Names in certificates are ASCII: write internationalised domain names as A-labels (xn--...)."
        )


#: A compiled pattern (``parse_pattern``); ``matches_any`` applies it to a certificate's parsed values.
Pattern = _PatternObject


def parse_pattern(field: str, pattern: str) -> Pattern:
    """Parse a pattern for ``field``.  Raises ``PatternError`` with a message for the operator.  Not cached:
    ``certauth.rules`` compiles each stored rule once when it loads them and keeps the result on the rule."""
    if field not in FIELDS:
        raise PatternError(f"Unknown rule field {field!r}; one of {', '.join(FIELDS)}.")
    if not pattern:
        raise PatternError("A rule needs a pattern.")
    if pattern != pattern.strip():
        raise PatternError("A pattern has no leading or trailing spaces.")
    for character in "?[]":
        if character in pattern:
            raise PatternError(
                f"{character!r} is not allowed in a pattern: the only wildcard is '*' (it used to be a shell glob, "
                "where '?' was one character and '[...]' a set)."
            )
    if field == "dns_san":
        return _dns_pattern(pattern)
    if field == "email_san":
        return _email_pattern(pattern)
    if field == "uri_san":
        return _uri_pattern(pattern)
    return _cn_pattern(pattern)


@lru_cache(maxsize=1024)
def compile_pattern(field: str, pattern: str) -> Pattern:
    """``parse_pattern``, cached: for validation and one-off matching (``pattern_matches``), not for requests."""
    return parse_pattern(field, pattern)


def validate_pattern(field: str, pattern: str) -> None:
    """Raise ``PatternError`` when ``pattern`` is not a valid pattern for ``field`` (saving a rule calls it)."""
    compile_pattern(field, pattern)


def parse_values(field: str, info: CertificateInfo) -> tuple[object, ...]:
    """The certificate's values for ``field``, each parsed once (a request parses them once per field, however
    many rules it evaluates); values that are not well-formed ASCII names of their kind are left out, they never
    match.  An unknown field has no values."""
    if field not in FIELDS:
        return ()
    parser = _PARSERS[field]
    return tuple(parsed for parsed in map(parser, field_values(info, field)) if parsed is not None)


def matches_any(compiled: Pattern, parsed_values: Sequence[object]) -> bool:
    """Does any of a certificate's parsed values (``parse_values`` of the pattern's field) match?"""
    return any(compiled.matches(value) for value in parsed_values)  # type: ignore[arg-type]


def pattern_matches(field: str, pattern: str, value: str) -> bool:
    """Does one certificate value of ``field`` match ``pattern``?  An invalid pattern or a value that is not a
    well-formed ASCII name of its kind never matches."""
    try:
        compiled = compile_pattern(field, pattern)
    except PatternError:
        return False  # a stored pattern saved before the language was strict: it admits no one
    parsed = _PARSERS[field](value)
    return parsed is not None and compiled.matches(parsed)  # type: ignore[arg-type]


def rule_matches(field: str, pattern: str, info: CertificateInfo) -> bool:
    """True when any of the certificate's values for ``field`` matches ``pattern``.  A rule whose field or
    pattern is outside the language (a row stored without validation) matches nothing; it never raises."""
    try:
        compiled = compile_pattern(field, pattern)
    except PatternError:
        return False
    return matches_any(compiled, parse_values(field, info))


# --- who may vouch for a name: NameConstraints ------------------------------------------------------------------
#: The GeneralName type NameConstraints subtrees use for each field's values; name constraints never cover a CN.
_CONSTRAINED_TYPE: dict[str, type[x509.GeneralName] | None] = {
    "subject_cn": None,
    "dns_san": x509.DNSName,
    "uri_san": x509.UniformResourceIdentifier,
    "email_san": x509.RFC822Name,
}


def constraints_cover(field: str, issuers: Sequence[x509.Certificate]) -> bool:
    """May these CAs (those strictly between a certificate and the authority a rule is bound to) vouch for the
    rule's field?

    A CA without NameConstraints vouches for any name.  A CA with NameConstraints was delegated only the names
    its subtrees describe, and the chain verifier checked the certificate's SANs *of the types those subtrees
    name* against them: it vouches for a field only when its constraints have subtrees (permitted or excluded)
    of that field's name type.  Never for the subject CN, which name constraints do not cover: otherwise a sub-CA
    constrained to one DNS subtree could mint any CN (or a URI, when it is only constrained in DNS) that a rule
    bound to its root accepts."""
    name_type = _CONSTRAINED_TYPE[field]
    for issuer in issuers:
        try:
            constraints = issuer.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        except Exception:
            return False  # unreadable constraints: vouch for nothing
        if name_type is None:
            return False
        subtrees = [*(constraints.permitted_subtrees or ()), *(constraints.excluded_subtrees or ())]
        if not any(isinstance(subtree, name_type) for subtree in subtrees):
            return False
    return True
