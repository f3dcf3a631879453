"""Identity rules, Django side: "any certificate issued by authority A whose field matches P".

Used only when a certificate's thumbprint is not pinned (or was pinned by a rule earlier):

* every identity whose rule pattern matches (``certauth.matching``) *and* whose authority issued the
  certificate (the verified chain reaches it, or the library verifies the leaf with that authority as the
  only anchor) is a candidate, provided every name-constrained CA between the certificate and that authority
  vouches for the rule's kind of name (``matching.constraints_cover``: never for the subject CN);
* none -> ``unknown_certificate``; more than one -> ``ambiguous_identity`` (never resolved by chance), and so
  is a ``subject_cn`` rule matching a subject that has several CNs;
* exactly one -> the certificate is recorded as a ``RegisteredCertificate`` with ``source = rule`` so
  last-used and revocation apply to it like any entry (a revoked one stays refused), and the operator
  sees it in the admin.  Such an entry keeps authenticating only while its rule still matches.

A pinned entry (registered certificate or typed thumbprint) always wins over rules, and a certificate that is
the same certificate as another entry in another encoding, or whose key was revoked as compromised, never
reaches them (``certauth.authenticator._related_refusal``): a rule never records a second entry for one
certificate, nor re-admits a revoked one under new bytes.  Rules (each pattern
compiled once, when they load) and per-certificate results are cached per worker and dropped with the registry
cache (same generation counter); a request parses the certificate's values once per field, however many rules
it evaluates.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from cryptography import x509
from django.db import DatabaseError, IntegrityError, transaction

from .certificates import CertificateInfo, thumbprint_of
from .conf import settings
from .lru import MISSING, BoundedCache
from .matching import Pattern, PatternError, constraints_cover, is_ambiguous, matches_any, parse_pattern, parse_values
from .reasons import CertificateRefused, Reason
from .registry import EntrySnapshot, RegistryUnavailable, registry
from .trust import TrustResult, TrustStore

logger = logging.getLogger("certauth")


@dataclass(frozen=True, slots=True)
class IdentityRule:
    identity_id: int
    identity_name: str
    authority_thumbprint: str
    field: str
    pattern: str
    #: ``pattern`` compiled once when the rules are loaded: a request never parses a pattern.
    compiled: Pattern = dataclass_field(compare=False, repr=False)


#: Stored rules already reported as invalid (identity id, field, pattern): logged once per worker, not per load.
_reported_invalid: set[tuple[int, str, str]] = set()


def _compiled(row: tuple[int, str, str, str, str]) -> IdentityRule | None:
    """The stored rule with its pattern compiled, or None when its field or pattern is outside the language.  A
    row written without ``clean()`` (an older version, a fixture, SQL) admits no one (check W013 says so), and
    must not fail every request that reaches the rules."""
    identity_id, name, _, rule_field, pattern = row
    try:
        compiled = parse_pattern(rule_field, pattern)
    except PatternError as exc:
        if (identity_id, rule_field, pattern) not in _reported_invalid:
            _reported_invalid.add((identity_id, rule_field, pattern))
            logger.warning("certauth identity %s: its rule %s %r admits no one: %s", name, rule_field, pattern, exc)
        return None
    return IdentityRule(*row, compiled=compiled)


class _RuleCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = 0
        self.rules: tuple[IdentityRule, ...] | None = None
        self.matches: BoundedCache[tuple[str, ...], RuleMatches] = BoundedCache(settings.CACHE_SIZE)

    def drop(self) -> None:
        with self.lock:
            self.epoch += 1
            self.rules = None
            self.matches.clear()


_cache = _RuleCache()
registry.on_invalidate(_cache.drop)


def load_rules() -> tuple[IdentityRule, ...]:
    """Every identity rule (active or not, so disabling an identity never hands its certificates to
    another).  Cached until the registry generation moves.  Raises ``RegistryUnavailable``."""
    rules = _cache.rules
    if rules is not None:
        return rules
    from .models import CertificateIdentity

    epoch = _cache.epoch
    try:
        rows = (
            CertificateIdentity.objects.filter(match_authority__isnull=False)
            .exclude(match_field="")
            .exclude(match_pattern="")
            .order_by("pk")
            .values_list("pk", "name", "match_authority__thumbprint_sha256", "match_field", "match_pattern")
        )
        rules = tuple(rule for rule in map(_compiled, rows) if rule is not None)
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    with _cache.lock:
        if _cache.epoch == epoch:
            _cache.rules = rules
    return rules


@dataclass(frozen=True, slots=True)
class RuleMatches:
    """The rules whose pattern and authority admit a certificate, and those whose pattern and authority matched
    but which a name-constrained CA in between could not vouch for (they admit nothing; they explain why)."""

    admitted: tuple[IdentityRule, ...] = ()
    outside_constraints: tuple[IdentityRule, ...] = ()


def matching_rules(
    leaf: x509.Certificate,
    info: CertificateInfo,
    forwarded: Sequence[x509.Certificate],
    trust: TrustResult,
    store: TrustStore,
    now: dt.datetime,
) -> RuleMatches:
    """The rules that admit this certificate (pattern, issuing authority, name constraints), cached per
    certificate."""
    if trust.kind != "chained":
        return RuleMatches()  # a self-signed certificate has no authority: only pinning can admit it
    forwarded_thumbprints = tuple(thumbprint_of(c) for c in forwarded)
    key = (info.thumbprint_sha256, *forwarded_thumbprints)
    cached = _cache.matches.get(key)
    if cached is not MISSING:
        return cached  # type: ignore[return-value]
    epoch = _cache.epoch
    admitted: list[IdentityRule] = []
    outside: list[IdentityRule] = []
    values: dict[str, tuple[object, ...]] = {}  # the certificate's values per field, parsed once for every rule
    for rule in load_rules():
        # A disabled authority binds no rule, even when a forwarded chain still passes through it.
        if rule.authority_thumbprint not in store.by_thumbprint:
            continue
        if rule.field not in values:
            values[rule.field] = parse_values(rule.field, info)
        if not matches_any(rule.compiled, values[rule.field]):
            continue
        between = _cas_between(leaf, forwarded, forwarded_thumbprints, rule.authority_thumbprint, trust, store, now)
        if between is None:
            continue  # the rule's authority did not issue it
        (admitted if constraints_cover(rule.field, between) else outside).append(rule)
    matched = RuleMatches(tuple(admitted), tuple(outside))
    with _cache.lock:
        if _cache.epoch == epoch:
            _cache.matches.set(key, matched)
    return matched


def _cas_between(
    leaf: x509.Certificate,
    forwarded: Sequence[x509.Certificate],
    forwarded_thumbprints: tuple[str, ...],
    authority_thumbprint: str,
    trust: TrustResult,
    store: TrustStore,
    now: dt.datetime,
) -> tuple[x509.Certificate, ...] | None:
    """The CAs strictly between ``leaf`` and the rule's authority on a verified chain, or None when that
    authority did not issue the leaf (neither the verified chain reaches it nor does the leaf verify with it as
    the only anchor)."""
    if trust.reaches(authority_thumbprint):
        # The chain holds the leaf, forwarded certificates and enabled authorities, nothing else.
        known = {thumbprint: authority.certificate for thumbprint, authority in store.by_thumbprint.items()}
        known.update(zip(forwarded_thumbprints, forwarded, strict=True))
        position = trust.chain.index(authority_thumbprint)
        between = [known.get(thumbprint) for thumbprint in trust.chain[1:position]]
        if all(certificate is not None for certificate in between):
            return tuple(certificate for certificate in between if certificate is not None)
    chain = store.chain_to(leaf, forwarded, authority_thumbprint, now)
    return None if chain is None else chain[1:-1]


def resolve(
    info: CertificateInfo,
    forwarded: Sequence[x509.Certificate],
    trust: TrustResult,
    store: TrustStore,
    entry: EntrySnapshot | None,
    now: dt.datetime,
) -> EntrySnapshot:
    """The entry that authenticates a certificate through an identity rule.  ``entry`` is the certificate's
    existing ``source = rule`` entry, if any.  Raises ``CertificateRefused`` / ``RegistryUnavailable``."""
    if info.certificate is None:
        raise CertificateRefused(Reason.UNKNOWN_CERTIFICATE)
    matches = matching_rules(info.certificate, info, forwarded, trust, store, now)
    rules = matches.admitted
    identity_ids = sorted({rule.identity_id for rule in rules})
    ambiguous = next((rule for rule in rules if is_ambiguous(rule.field, info)), None)
    if ambiguous is not None:
        raise CertificateRefused(
            Reason.AMBIGUOUS_IDENTITY,
            f"The certificate's subject has {len(info.common_names)} common names and an identity rule matches on "
            "the subject CN, which then names no one subject; issue the certificate with a single CN, or register "
            "(pin) it.",
        )
    if len(identity_ids) > 1:
        logger.warning(
            "certauth certificate %s matches the rules of several identities: %s",
            info.thumbprint_sha256,
            ", ".join(sorted({rule.identity_name for rule in rules})),
        )
        raise CertificateRefused(
            Reason.AMBIGUOUS_IDENTITY,
            f"The certificate matches the rules of {len(identity_ids)} identities; "
            "an operator must make the rules exclusive.",
        )
    if not identity_ids and matches.outside_constraints:
        field = matches.outside_constraints[0].field
        raise CertificateRefused(
            Reason.UNKNOWN_CERTIFICATE,
            f"An identity rule on {field} matches this certificate, but it was issued below a name-constrained CA "
            "whose constraints do not restrict that kind of name (they never cover the subject CN), so the rule's "
            "authority does not vouch for it.  Bind the rule to that CA, or match a SAN type its name constraints "
            "restrict.",
        )
    if entry is not None:
        if not identity_ids:
            raise CertificateRefused(
                Reason.UNKNOWN_CERTIFICATE, "The identity rule that admitted this certificate no longer matches it."
            )
        if identity_ids[0] != entry.identity.id:
            raise CertificateRefused(
                Reason.AMBIGUOUS_IDENTITY, "The certificate was recorded for another identity than its rule now names."
            )
        return entry
    if not identity_ids:
        raise CertificateRefused(Reason.UNKNOWN_CERTIFICATE)
    rule = rules[0]
    record_seen(rule, info)
    recorded = registry.lookup(info.thumbprint_sha256)
    if recorded is None:
        raise RegistryUnavailable("the certificate seen via an identity rule could not be recorded")
    if recorded.identity.id != rule.identity_id:  # another worker recorded it for someone else meanwhile
        raise CertificateRefused(Reason.AMBIGUOUS_IDENTITY)
    return recorded


def record_seen(rule: IdentityRule, info: CertificateInfo) -> None:
    """Store the certificate as a ``source = rule`` entry of the rule's identity (idempotent)."""
    from .models import RegisteredCertificate

    entry = RegisteredCertificate(identity_id=rule.identity_id)
    entry.fill_from(info)
    entry.source = RegisteredCertificate.Source.RULE
    entry.label = f"seen via rule {rule.field} {rule.pattern}"[:200]
    try:
        with transaction.atomic():
            entry.save()
    except IntegrityError:
        pass  # recorded concurrently by another worker: the lookup that follows reads it
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    else:
        logger.info("certauth recorded %s for identity %s via its rule", info.thumbprint_sha256, rule.identity_name)
