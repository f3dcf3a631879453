"""Who may widen a grant.  A change that lets more certificates in, or lets them do more, needs the
permission to create that trust in the first place; a change that only narrows it needs less.

* An identity's rule admits every certificate from an authority whose name matches: it is a registration
  in bulk.  Its name is what the application sees as ``request.user.username``, its scopes what it may do,
  ``is_active`` whether it is admitted at all.  Changing its rule, scopes or name, or re-enabling it,
  needs ``certauth.grant_certificateidentity`` **and** ``certauth.add_registeredcertificate``: only who
  may register may grant.  Disabling (it only narrows) needs ``certauth.disable_certificateidentity``.
* A trusted authority's certificate is what every rule bound to it and every chain through it trusts.
  Re-enabling a disabled authority, replacing an authority's certificate (plus the grant permission when
  identity rules are bound to it), loading a CRL that drops serials the held CRL revokes, or changing where
  its revocations are read from (``crl_url``, ``ocsp_url``) is trusting anew and needs
  ``certauth.add_trustedauthority``.  Whoever chooses the revocation source decides which revocations are
  seen: a responder that answers "good" for everything, or (with ``REVOCATION_FAIL_OPEN``) one that does
  not answer at all, switches revocation off for every certificate the CA issued; and the server fetches
  that URL, so it must be one a trusted administrator chose.  Disabling, and a CRL that revokes as much or
  more, need only the change permission.

These checks take the acting user, so the admin and any other caller share one rule; a model's
``clean()`` has no user and validates only the values themselves.  The command line (``manage.py
certauth``) runs with the database credentials and is superuser-equivalent: it is not checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError

from .models import CertificateIdentity, TrustedAuthority, parse_scopes
from .reasons import CertificateRefused
from .trust import load_authority_certificate, parse_crl

GRANT_PERMISSION = "certauth.grant_certificateidentity"
REGISTER_PERMISSION = "certauth.add_registeredcertificate"
DISABLE_PERMISSION = "certauth.disable_certificateidentity"
TRUST_PERMISSION = "certauth.add_trustedauthority"
#: Where an authority's revocations are read from: changing one is trusting anew.
REVOCATION_SOURCE_FIELDS = ("crl_url", "ocsp_url")


def can_grant(user: Any) -> bool:
    """May ``user`` widen what an identity is granted (rule, scopes, name, re-enabling)?"""
    return bool(user.has_perm(GRANT_PERMISSION) and user.has_perm(REGISTER_PERMISSION))


def can_trust(user: Any) -> bool:
    """May ``user`` trust a CA anew (re-enable an authority, replace its certificate, change where its
    revocations are read from)?"""
    return bool(user.has_perm(TRUST_PERMISSION))


@dataclass(frozen=True)
class IdentityGrant:
    """The parts of a ``CertificateIdentity`` that decide who is admitted as it and what it may do."""

    name: str
    is_active: bool
    scopes: tuple[str, ...]
    authority_id: int | None
    authority_name: str
    match_field: str
    match_pattern: str

    @classmethod
    def of(cls, identity: CertificateIdentity) -> IdentityGrant:
        authority = identity.match_authority if identity.match_authority_id else None
        try:
            scopes = tuple(parse_scopes(identity.scopes))
        except ValidationError:  # invalid scopes are the form's error; compare them as written
            scopes = (identity.scopes,)
        return cls(
            name=identity.name,
            is_active=identity.is_active,
            scopes=scopes,
            authority_id=identity.match_authority_id,
            authority_name=authority.name if authority is not None else "",
            match_field=identity.match_field,
            match_pattern=identity.match_pattern,
        )

    @property
    def rule(self) -> tuple[int, str, str] | None:
        """(authority, field, pattern), or None when the identity admits no certificate by rule."""
        if self.authority_id is None:
            return None
        return (self.authority_id, self.match_field, self.match_pattern)

    def describe_rule(self) -> str:
        if self.rule is None:
            return "none"
        return f"{self.match_field} matches {self.match_pattern!r} under authority {self.authority_name!r}"


def grant_changes(before: IdentityGrant | None, after: IdentityGrant) -> list[str]:
    """The grant parts a change touches: a subset of ``rule``, ``scopes``, ``name``, ``enabled``.  ``before``
    is None for a new identity (whose name claims nothing yet).  Disabling is not listed: it only narrows."""
    if before is None:
        parts = ["rule"] if after.rule is not None else []
        return [*parts, "scopes"] if after.scopes else parts
    parts = []
    # Any edit counts, narrowing ones too: whether a new glob admits less than the old one is not decidable
    # here, and one permission per field is what an administrator can reason about.
    if after.rule != before.rule:
        parts.append("rule")
    if set(after.scopes) != set(before.scopes):
        parts.append("scopes")
    if after.name != before.name:
        parts.append("name")  # the application sees the name as request.user.username
    if after.is_active and not before.is_active:
        parts.append("enabled")
    return parts


def check_identity_change(before: IdentityGrant | None, identity: CertificateIdentity, *, by: Any) -> None:
    """Raise ``PermissionDenied`` (saying which permission is missing) when ``by`` may not make this change
    to ``identity`` (``before`` as read from the database, None when adding)."""
    after = IdentityGrant.of(identity)
    parts = grant_changes(before, after)
    if parts and not can_grant(by):
        raise PermissionDenied(
            f"Changing the {', '.join(parts)} of an identity changes what it is granted: that needs the "
            f"permissions {GRANT_PERMISSION} and {REGISTER_PERMISSION}."
        )
    if before is not None and before.is_active and not after.is_active and not by.has_perm(DISABLE_PERMISSION):
        raise PermissionDenied(f"Disabling an identity needs the permission {DISABLE_PERMISSION}.")
    if identity.user_id is not None and not by.is_superuser:
        loaded = CertificateIdentity.objects.filter(pk=identity.pk).values_list("user_id", flat=True).first()
        if loaded != identity.user_id:
            raise PermissionDenied("Only a superuser chooses the Django user an identity acts as.")


def describe_identity_change(before: IdentityGrant | None, after: IdentityGrant) -> str:
    """Old and new value of each grant-relevant part that changed, for the admin history; "" when none."""
    empty = IdentityGrant("", True, (), None, "", "", "")
    old = before or empty
    changes = []
    if before is not None and after.name != old.name:
        changes.append(f"name: {old.name!r} → {after.name!r}")
    if after.rule != old.rule:
        changes.append(f"rule: {old.describe_rule()} → {after.describe_rule()}")
    if after.scopes != old.scopes:
        changes.append(f"scopes: {' '.join(old.scopes) or '(none)'!r} → {' '.join(after.scopes) or '(none)'!r}")
    if before is not None and after.is_active != old.is_active:
        changes.append(f"active: {old.is_active} → {after.is_active}")
    return "; ".join(changes)


def check_authority_change(authority: TrustedAuthority, *, replaces_certificate: bool, by: Any) -> None:
    """Raise ``PermissionDenied`` when ``by`` may not save ``authority`` as it now is: re-enabling it,
    replacing its certificate, loading a CRL that un-revokes serials the held CRL lists or changing its CRL
    or OCSP URL is trusting anew."""
    if authority.pk is None:
        return  # adding an authority is Django's own add permission, checked by the admin
    stored = (
        TrustedAuthority.objects.filter(pk=authority.pk)
        .values("is_enabled", "certificate_pem", "crl_der", *REVOCATION_SOURCE_FIELDS)
        .first()
    )
    if stored is None:
        return
    if authority.is_enabled and not stored["is_enabled"] and not can_trust(by):
        raise PermissionDenied(f"Re-enabling a trusted authority needs the permission {TRUST_PERMISSION}.")
    moved = [name for name in REVOCATION_SOURCE_FIELDS if getattr(authority, name) != stored[name]]
    if moved and not can_trust(by):
        raise PermissionDenied(
            f"Changing the {' and '.join(moved)} of an authority decides which of its revocations are seen "
            f"(and which URL the server fetches): that needs the permission {TRUST_PERMISSION}."
        )
    if replaces_certificate:
        if not can_trust(by):
            raise PermissionDenied(f"Replacing an authority's certificate needs the permission {TRUST_PERMISSION}.")
        if CertificateIdentity.objects.filter(match_authority=authority).exists() and not can_grant(by):
            raise PermissionDenied(
                "Identity rules are bound to this authority: replacing its certificate changes what they admit, "
                f"which needs the permissions {GRANT_PERMISSION} and {REGISTER_PERMISSION}."
            )
    dropped = unrevoked_serials(stored["crl_der"], stored["certificate_pem"], authority)
    if dropped and not can_trust(by):
        raise PermissionDenied(
            f"This CRL no longer lists {len(dropped)} serial(s) the current CRL revokes (e.g. "
            f"{min(dropped):X}): un-revoking needs the permission {TRUST_PERMISSION}."
        )


def describe_revocation_source_change(authority: TrustedAuthority) -> str:
    """Old and new value of each revocation source (``crl_url``, ``ocsp_url``) that ``authority`` changes from
    the stored row, for the admin history; "" when none (or when the authority is new)."""
    if authority.pk is None:
        return ""
    stored = TrustedAuthority.objects.filter(pk=authority.pk).values(*REVOCATION_SOURCE_FIELDS).first()
    if stored is None:
        return ""
    changes = []
    for name in REVOCATION_SOURCE_FIELDS:
        old, new = stored[name], getattr(authority, name)
        if old != new:
            changes.append(f"{name}: {old or '(none)'!r} → {new or '(none)'!r}")
    return "; ".join(changes)


def unrevoked_serials(held_der: Any, held_certificate_pem: str, authority: TrustedAuthority) -> frozenset[int]:
    """Serials the held CRL revokes and the CRL now on ``authority`` does not (empty when either is absent)."""
    if not held_der or not authority.crl_der or bytes(held_der) == bytes(authority.crl_der):
        return frozenset()
    try:
        held = parse_crl(bytes(held_der), load_authority_certificate(held_certificate_pem.encode("ascii", "replace")))
        new = parse_crl(
            bytes(authority.crl_der), load_authority_certificate(authority.certificate_pem.encode("ascii", "replace"))
        )
    except CertificateRefused:
        return frozenset()  # an unusable held CRL revokes nothing; a bad new one is refused by apply_crl
    return frozenset(held.revoked_serials - new.revoked_serials)
