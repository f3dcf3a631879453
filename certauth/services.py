"""Registry operations shared by the admin, the CLI and tests: register, rotate, revoke."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from cryptography import x509
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .certificates import CertificateInfo, describe, format_thumbprint, normalize_thumbprint
from .conf import settings
from .models import CertificateIdentity, RegisteredCertificate, RevocationReason, parse_scopes
from .reasons import Reason
from .registry import registry_changed

logger = logging.getLogger("certauth")


def get_or_create_identity(name: str, *, scopes: list[str] | None = None) -> tuple[CertificateIdentity, bool]:
    """The identity called ``name`` (created when missing) with ``scopes`` added.  Adding scopes is a grant
    that no permission check guards here (the command line is superuser-equivalent, see certauth.grants):
    it is logged with the old and new value."""
    identity, created = CertificateIdentity.objects.get_or_create(name=name)
    if scopes:
        before = identity.scope_list
        merged = sorted(set(before) | set(parse_scopes(" ".join(scopes))))
        if merged != before:
            identity.scopes = " ".join(merged)
            identity.save()
            logger.info(
                "certauth scopes of identity %r changed: %r → %r", name, " ".join(before) or "(none)", identity.scopes
            )
    return identity, created


def _check_not_registered(thumbprint: str) -> None:
    existing = RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint).select_related("identity").first()
    if existing is not None:
        raise ValidationError(
            f"This certificate is already registered for identity {existing.identity.name!r}.", code="duplicate"
        )


def check_same_certificate(info: CertificateInfo) -> None:
    """Refuse a certificate the registry already knows under another thumbprint (``docs/registry.md``, "the same
    certificate"): the same issuance (issuer and serial number, or signed content) as another entry, or a key
    revoked as compromised.  Raises ``ValidationError`` (code ``certificate_revoked`` or ``duplicate``) whose
    message names the entry and says why."""
    if not info.tbs_sha256:
        return
    same_issuance = Q(issuer_serial_sha256=info.issuer_serial_sha256) | Q(tbs_sha256=info.tbs_sha256)
    compromised_key = Q(
        spki_sha256=info.spki_sha256, revoked_at__isnull=False, revocation_reason=RevocationReason.KEY_COMPROMISE
    )
    entry = (
        RegisteredCertificate.objects.filter(same_issuance | compromised_key)
        .exclude(thumbprint_sha256=info.thumbprint_sha256)
        .select_related("identity")
        .order_by(F("revoked_at").asc(nulls_last=True), "pk")  # a revoked one first
        .first()
    )
    if entry is not None:
        is_twin = entry.issuer_serial_sha256 == info.issuer_serial_sha256 or entry.tbs_sha256 == info.tbs_sha256
        handle = f"{format_thumbprint(entry.thumbprint_sha256)} (identity {entry.identity.name!r})"
        if entry.revoked_at is not None and is_twin:
            raise ValidationError(
                f"Refused ({Reason.CERTIFICATE_REVOKED}): same issuance as revoked entry {handle}, the same issuer and "
                "serial number (or signed content) in another encoding. It is the same certificate and stays "
                "revoked; have a new certificate issued.",
                code=str(Reason.CERTIFICATE_REVOKED),
            )
        if entry.revoked_at is not None:
            raise ValidationError(
                f"Refused ({Reason.CERTIFICATE_REVOKED}): its key was revoked as compromised with entry {handle}. "
                "Every certificate for that key is refused; generate a new key and have a certificate issued for it.",
                code=str(Reason.CERTIFICATE_REVOKED),
            )
        raise ValidationError(
            f"This certificate is already registered as entry {handle}: the same issuer and serial number (or "
            "signed content) in another encoding. Use that entry.",
            code="duplicate",
        )


@transaction.atomic
def register_certificate(
    identity: CertificateIdentity,
    certificate: x509.Certificate | CertificateInfo,
    *,
    label: str = "",
    predecessor: RegisteredCertificate | None = None,
    by: Any = None,
) -> RegisteredCertificate:
    """Register a certificate for an identity.  Raises ``ValidationError`` for a duplicate thumbprint, and for
    the same certificate in another encoding or a compromised key (``check_same_certificate``)."""
    info = certificate if isinstance(certificate, CertificateInfo) else describe(certificate)
    _check_not_registered(info.thumbprint_sha256)
    check_same_certificate(info)
    entry = RegisteredCertificate(identity=identity, label=label, predecessor=predecessor)
    entry.fill_from(info)
    entry.created_by = by if getattr(by, "pk", None) else None
    entry.save()
    return entry


@transaction.atomic
def register_thumbprint(
    identity: CertificateIdentity,
    thumbprint: str,
    *,
    not_after: dt.datetime,
    not_before: dt.datetime | None = None,
    label: str = "",
    predecessor: RegisteredCertificate | None = None,
    by: Any = None,
) -> RegisteredCertificate:
    """Register a typed thumbprint (any spelling) when the certificate itself is not at hand."""
    try:
        canonical = normalize_thumbprint(thumbprint)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_thumbprint") from exc
    _check_not_registered(canonical)
    entry = RegisteredCertificate(
        identity=identity,
        thumbprint_sha256=canonical,
        not_after=not_after,
        not_before=not_before,
        label=label,
        predecessor=predecessor,
        source=RegisteredCertificate.Source.THUMBPRINT,
        created_by=by if getattr(by, "pk", None) else None,
    )
    entry.save()
    return entry


def revoke(entry: RegisteredCertificate, reason: str = RevocationReason.UNSPECIFIED, *, by: Any = None) -> bool:
    if reason not in RevocationReason.values:
        raise ValidationError(f"Unknown revocation reason {reason!r}; one of {', '.join(RevocationReason.values)}.")
    return entry.revoke(reason, by=by)


# --- rotation and bulk operations --------------------------------------------------------------------
def add_successor(
    entry: RegisteredCertificate,
    certificate: x509.Certificate | CertificateInfo | str,
    *,
    not_after: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    label: str = "",
    by: Any = None,
) -> RegisteredCertificate:
    """Register the next certificate of ``entry``'s identity with ``entry`` as its predecessor.  Both
    authenticate during the overlap; retire the old one (``retire``) once its ``last_used_at`` stops
    moving.  ``certificate`` may be a typed thumbprint, which then needs ``not_after``."""
    if isinstance(certificate, str):
        if not_after is None:
            raise ValidationError("A typed thumbprint needs its expiry date (not_after).", code="required")
        return register_thumbprint(
            entry.identity,
            certificate,
            not_after=not_after,
            not_before=not_before,
            label=label,
            predecessor=entry,
            by=by,
        )
    return register_certificate(entry.identity, certificate, label=label, predecessor=entry, by=by)


def retire(entry: RegisteredCertificate, *, by: Any = None) -> bool:
    """Revoke a rotated-out entry with reason ``superseded``.  Returns False when already revoked."""
    return revoke(entry, RevocationReason.SUPERSEDED, by=by)


@transaction.atomic
def revoke_many(entries: QuerySet[RegisteredCertificate], reason: str, *, by: Any = None) -> int:
    """Revoke every not-yet-revoked entry of the queryset in one UPDATE; returns how many changed.
    Already revoked entries keep their original date, reason and revoker (revocation is one-way), except that
    ``key_compromise`` raises the reason of those revoked for another reason (``RegisteredCertificate.revoke``)."""
    if reason not in RevocationReason.values:
        raise ValidationError(f"Unknown revocation reason {reason!r}; one of {', '.join(RevocationReason.values)}.")
    selected = RegisteredCertificate.objects.filter(pk__in=entries.values("pk"))
    revoker = by if getattr(by, "pk", None) else None
    changed = selected.filter(revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revocation_reason=reason, revoked_by=revoker
    )
    if reason == RevocationReason.KEY_COMPROMISE:
        raised = selected.filter(revoked_at__isnull=False).exclude(revocation_reason=reason)
        changed += raised.update(revocation_reason=reason, **({"revoked_by": revoker} if revoker else {}))
    if changed:
        registry_changed()  # update() sends no post_save: bump the generation ourselves
    return changed


@transaction.atomic
def disable_identities(identities: QuerySet[CertificateIdentity], *, by: Any = None) -> int:
    """Disable every active identity of the queryset (refused with ``identity_disabled`` from the next
    request on); returns how many changed."""
    now = timezone.now()
    changed = CertificateIdentity.objects.filter(pk__in=identities.values("pk"), is_active=True).update(
        is_active=False, disabled_at=now, disabled_by=by if getattr(by, "pk", None) else None, updated_at=now
    )
    if changed:
        registry_changed()
    return changed


# --- before retiring ---------------------------------------------------------------------------------
#: A last use this recent makes retiring a certificate worth a warning: a client may still present it.
RECENT_USE_WINDOW = dt.timedelta(days=1)


def recent_use(entry: RegisteredCertificate, now: dt.datetime | None = None) -> dt.timedelta | None:
    """How long ago ``entry`` was last used, when that is recent: within ``RECENT_USE_WINDOW``, or within two
    ``LAST_USED_RESOLUTION_SECONDS`` when that is longer (``last_used_at`` is written at most once per
    resolution, so it lags the real last use by up to one).  None when never used or not recently."""
    if entry.last_used_at is None:
        return None
    resolution = dt.timedelta(seconds=settings.LAST_USED_RESOLUTION_SECONDS)
    age = max((now or timezone.now()) - entry.last_used_at, dt.timedelta(0))
    return age if age <= max(RECENT_USE_WINDOW, 2 * resolution) else None
