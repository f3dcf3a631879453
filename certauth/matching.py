"""Identity rules, the pure part: does a certificate's subject CN / DNS SAN / URI SAN / email SAN match a
pattern?  No Django imports; ``certauth.rules`` applies the rules stored on ``CertificateIdentity``.

A pattern is exact or a shell-style glob (``fnmatch``): ``*`` matches any run of characters *including*
dots and slashes (``*.clients.example.com`` also matches ``a.b.clients.example.com``; ``spiffe://prod/*``
matches every path below it), ``?`` one character, ``[abc]`` a set.  DNS names and email addresses are
compared case-insensitively (DNS is case-insensitive; mail domains too), the CN and URIs exactly.  A rule
matches when *any* value of its field matches.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from .certificates import CertificateInfo

FIELDS = ("subject_cn", "dns_san", "uri_san", "email_san")
_CASE_INSENSITIVE = frozenset({"dns_san", "email_san"})


def field_values(info: CertificateInfo, field: str) -> tuple[str, ...]:
    """The certificate's values for a rule field (empty when it has none)."""
    if field == "subject_cn":
        return (info.subject_cn,) if info.subject_cn else ()
    if field == "dns_san":
        return info.dns_names
    if field == "uri_san":
        return info.uris
    if field == "email_san":
        return info.emails
    raise ValueError(f"Unknown rule field {field!r}; one of {', '.join(FIELDS)}")


def pattern_matches(pattern: str, value: str, *, case_insensitive: bool = False) -> bool:
    if not pattern or not value:
        return False
    if case_insensitive:
        pattern, value = pattern.casefold(), value.casefold()
    return fnmatchcase(value, pattern)


def rule_matches(field: str, pattern: str, info: CertificateInfo) -> bool:
    """True when any of the certificate's values for ``field`` matches ``pattern``."""
    insensitive = field in _CASE_INSENSITIVE
    return any(pattern_matches(pattern, value, case_insensitive=insensitive) for value in field_values(info, field))
