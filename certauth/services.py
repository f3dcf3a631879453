"""Registry operations shared by the admin, the CLI and tests: register, rotate, revoke."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .certificates import CertificateInfo, describe, format_thumbprint, normalize_thumbprint
from .conf import settings
from .models import CertificateIdentity, RegisteredCertificate, RevocationReason, parse_scopes
from .policy import PolicyOptions
from .reasons import Reason
from .registry import registry_changed
from .trust import TrustStore, registration_problems

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


# --- registration: one path for the admin form, the CLI, the audit's "register this" and code -------------
#: Where a refusal belongs: ``certificate`` (what it is: could never authenticate, already registered, the
#: same as another entry), ``thumbprint`` (its spelling), ``not_after``/``not_before`` (a typed thumbprint's
#: dates), ``predecessor``, ``identity`` (its name), ``scopes``.  The admin form puts each on its field, the CLI
#: names its option.
FIELDS = ("identity", "scopes", "certificate", "thumbprint", "not_after", "not_before", "predecessor")


def policy_options() -> PolicyOptions:
    return PolicyOptions(
        validate_validity_period=settings.VALIDATE_VALIDITY_PERIOD,
        validate_certificate_use=settings.VALIDATE_CERTIFICATE_USE,
    )


def registration_trust_store() -> TrustStore | None:
    """The current trust store for ``registration_problems``, or None when the registry cannot be read (the
    trust warnings are then skipped; registering still works)."""
    from .authorities import current_trust_store

    try:
        return current_trust_store()
    except Exception:
        return None


def duplicate_message(existing: RegisteredCertificate) -> str:
    """Why a thumbprint cannot be registered again, and what to do instead."""
    thumbprint = format_thumbprint(existing.thumbprint_sha256)
    if existing.revoked_at is not None:
        return (
            f"This certificate ({thumbprint}) is already registered for identity {existing.identity.name!r} and was "
            f"revoked on {existing.revoked_at:%Y-%m-%d}. Revocation is one-way: to reinstate it, delete the revoked "
            "entry first (in the admin, as a superuser), then register it again."
        )
    return f"This certificate ({thumbprint}) is already registered for identity {existing.identity.name!r}."


def thumbprint_problem(thumbprint: str) -> str | None:
    """Why a typed thumbprint is not one (the words ``register`` uses), or None."""
    try:
        normalize_thumbprint(thumbprint)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class RegistrationCheck:
    """What ``check_registration`` found: refusals by field (see ``FIELDS``), in the order found, and
    warnings (it will be registered, but still refused for now, and why)."""

    errors: dict[str, list[ValidationError]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    thumbprint: str | None = None  # canonical, when one could be read

    def refuse(self, where: str, message: str, code: str) -> None:
        self.errors.setdefault(where, []).append(ValidationError(message, code=code))

    def error(self) -> ValidationError:
        return ValidationError({where: self.errors[where] for where in FIELDS if where in self.errors})


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    return moment.replace(tzinfo=dt.UTC) if moment is not None and timezone.is_naive(moment) else moment


def _beyond_the_calendar(moment: dt.datetime | None) -> bool:
    """Is this aware moment outside 0001-01-01..9999-12-31 once in UTC (e.g. 9999-12-31T23:59-01:00)?  Such a
    date cannot be stored: SQLite's adapter overflows, PostgreSQL stores year 10000 and every read of the row
    fails afterwards."""
    if moment is None:
        return False
    try:
        moment.astimezone(dt.UTC)
    except OverflowError:
        return True
    return False


def check_registration(
    identity: CertificateIdentity | str | None,
    certificate: x509.Certificate | CertificateInfo | None = None,
    *,
    thumbprint: str | None = None,
    not_after: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    predecessor: RegisteredCertificate | None = None,
    scopes: list[str] | None = None,
    now: dt.datetime | None = None,
) -> RegistrationCheck:
    """Every check of a registration, without writing: what ``register`` refuses and warns about.  Give
    ``certificate`` or ``thumbprint`` (with ``not_after``).  ``identity`` may be a name not created yet, or None
    when the caller could not read one (its checks are then skipped)."""
    now = now or timezone.now()
    check = RegistrationCheck()
    name = identity.name if isinstance(identity, CertificateIdentity) else identity
    if isinstance(identity, str) and not 0 < len(identity.strip()) <= 150:
        check.refuse("identity", "An identity name has 1 to 150 characters, e.g. billing-service.", "invalid")
    try:
        parse_scopes(" ".join(scopes or []))
    except ValidationError as exc:
        check.errors.setdefault("scopes", []).extend(exc.error_list)
    if (certificate is None) == (not thumbprint):
        message = "Give the certificate one way: the certificate itself or its thumbprint, not both."
        check.refuse("certificate", message if certificate else "Give the certificate or its thumbprint.", "required")
        return check
    options = policy_options()
    info = certificate if isinstance(certificate, CertificateInfo) or certificate is None else describe(certificate)
    if info is not None:
        check.thumbprint = info.thumbprint_sha256
        for problem in registration_problems(info, registration_trust_store(), now, options):
            if problem.severity == "refuse":
                check.refuse("certificate", problem.text, str(problem.reason or "invalid"))
            else:
                check.warnings.append(problem.text)
    else:
        spelling = thumbprint_problem(thumbprint or "")
        if spelling is not None:
            check.refuse("thumbprint", spelling, "invalid_thumbprint")
        else:
            check.thumbprint = normalize_thumbprint(thumbprint or "")
        not_after, not_before = _aware(not_after), _aware(not_before)
        dates = {"not_after": not_after, "not_before": not_before}
        beyond = [where for where, moment in dates.items() if _beyond_the_calendar(moment)]
        if beyond:
            for where in beyond:
                check.refuse(
                    where,
                    "A certificate's dates lie between 0001-01-01 and 9999-12-31 in UTC; this one does not once "
                    "converted to UTC. Give the date in UTC, as the certificate states it (`openssl x509 -noout "
                    "-dates`).",
                    "invalid",
                )
        elif not_after is None:
            check.refuse("not_after", "A typed thumbprint needs the certificate's expiry date.", "required")
        elif options.validate_validity_period and not_after <= now:
            check.refuse(
                "not_after",
                f"This certificate could never authenticate ({Reason.CERTIFICATE_EXPIRED}): the expiry date "
                f"{not_after.isoformat(timespec='seconds')} is in the past. Give the certificate's notAfter (`openssl "
                "x509 -noout -enddate -in client.crt`), or register its renewal.",
                str(Reason.CERTIFICATE_EXPIRED),
            )
        elif not_before is not None and not_before >= not_after:
            check.refuse("not_after", "The expiry date must be after the start date.", "invalid")
    if check.thumbprint:
        existing = (
            RegisteredCertificate.objects.filter(thumbprint_sha256=check.thumbprint).select_related("identity").first()
        )
        if existing is not None:
            check.refuse("certificate", duplicate_message(existing), "duplicate")
        elif info is not None:
            try:  # the same certificate in another encoding, or a key revoked as compromised
                check_same_certificate(info)
            except ValidationError as exc:
                check.errors.setdefault("certificate", []).extend(exc.error_list)
    if predecessor is not None and name is not None and predecessor.identity.name != name:
        check.refuse("predecessor", "A successor belongs to the same identity as the entry it replaces.", "invalid")
    if isinstance(identity, CertificateIdentity) and not identity.is_active:
        check.warnings.append(
            f"The identity {identity.name!r} is disabled: requests with this certificate will still be refused "
            f"({Reason.IDENTITY_DISABLED}) until the identity is enabled again."
        )
    return check


@dataclass
class Registration:
    """What ``register`` did.  ``created`` is False only when ``existing_ok`` found the certificate already
    registered, live, for this identity (``entry`` is then that entry, and nothing but scopes changed)."""

    entry: RegisteredCertificate
    identity: CertificateIdentity
    created: bool
    identity_created: bool
    warnings: list[str]


def register(
    identity: CertificateIdentity | str,
    certificate: x509.Certificate | CertificateInfo | None = None,
    *,
    thumbprint: str | None = None,
    not_after: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    scopes: list[str] | None = None,
    label: str = "",
    predecessor: RegisteredCertificate | None = None,
    by: Any = None,
    now: dt.datetime | None = None,
    existing_ok: bool = False,
) -> Registration:
    """Register a certificate (or a typed thumbprint with its dates) for an identity, given as an object or a
    name (created when missing, with ``scopes`` added).  The one registration path of the admin form, the CLI
    and code: every check of ``check_registration``, then the writes, in one transaction.  Raises one
    ``ValidationError`` (by field, see ``FIELDS``) with every refusal, and then nothing is created, not even
    the identity.  There is no override: what could never authenticate, a duplicate, a revoked certificate
    are refused alike everywhere.  ``existing_ok`` (set-up scripts that run on every start): a certificate
    already registered, live, for this very identity is no error; nothing is created then."""
    now = now or timezone.now()
    name = identity.name if isinstance(identity, CertificateIdentity) else identity
    info = describe(certificate) if isinstance(certificate, x509.Certificate) else certificate
    with transaction.atomic():
        known = (
            identity
            if isinstance(identity, CertificateIdentity)
            else CertificateIdentity.objects.filter(name=name).first()
        )
        if existing_ok:
            canonical = info.thumbprint_sha256 if info else None
            if info is None and thumbprint and thumbprint_problem(thumbprint) is None:
                canonical = normalize_thumbprint(thumbprint)
            existing = RegisteredCertificate.objects.filter(
                thumbprint_sha256=canonical, identity__name=name, revoked_at__isnull=True
            ).first()
            if existing is not None:
                try:
                    owner, _ = get_or_create_identity(name, scopes=scopes)
                except ValidationError as exc:
                    raise ValidationError({"scopes": exc.error_list}) from exc
                return Registration(existing, owner, created=False, identity_created=False, warnings=[])
        check = check_registration(
            known or name,
            info,
            thumbprint=thumbprint,
            not_after=not_after,
            not_before=not_before,
            predecessor=predecessor,
            scopes=scopes,
            now=now,
        )
        if check.errors:
            raise check.error()
        owner, identity_created = get_or_create_identity(name, scopes=scopes)
        entry = RegisteredCertificate(identity=owner, label=label, predecessor=predecessor)
        if info is not None:
            entry.fill_from(info)
        else:
            expiry = _aware(not_after)
            assert check.thumbprint and expiry is not None  # check_registration refuses a thumbprint without them
            entry.thumbprint_sha256, entry.not_after, entry.not_before = check.thumbprint, expiry, _aware(not_before)
            entry.source = RegisteredCertificate.Source.THUMBPRINT
        entry.created_by = by if getattr(by, "pk", None) else None
        try:
            with transaction.atomic():  # a savepoint: a concurrent registration of the same bytes lost the race
                entry.save()
        except IntegrityError as exc:
            existing = RegisteredCertificate.objects.filter(thumbprint_sha256=entry.thumbprint_sha256).first()
            if existing is None:
                raise
            duplicate = ValidationError(duplicate_message(existing), code="duplicate")
            raise ValidationError({"certificate": [duplicate]}) from exc
        return Registration(entry, owner, created=True, identity_created=identity_created, warnings=check.warnings)


@transaction.atomic
def register_certificate(
    identity: CertificateIdentity,
    certificate: x509.Certificate | CertificateInfo,
    *,
    label: str = "",
    predecessor: RegisteredCertificate | None = None,
    by: Any = None,
) -> RegisteredCertificate:
    """Record a certificate for an identity as given: the integrity checks only (a duplicate thumbprint, the same
    certificate in another encoding, a compromised key: ``ValidationError``).  For fixtures and data imports;
    operators' registrations go through ``register``, which also refuses what could never authenticate."""
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
    """Record a typed thumbprint (any spelling) as given, refusing a duplicate only.  For fixtures and data
    imports; operators' registrations go through ``register`` (which also refuses an expiry in the past)."""
    try:
        canonical = normalize_thumbprint(thumbprint)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_thumbprint") from exc
    if _beyond_the_calendar(_aware(not_after)) or _beyond_the_calendar(_aware(not_before)):  # unreadable once stored
        raise ValidationError("A certificate's dates lie between 0001-01-01 and 9999-12-31 in UTC.", code="invalid")
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
    moving.  ``certificate`` may be a typed thumbprint, which then needs ``not_after``.  Through ``register``:
    the same checks, the same ``ValidationError``."""
    return register(
        entry.identity,
        None if isinstance(certificate, str) else certificate,
        thumbprint=certificate if isinstance(certificate, str) else None,
        not_after=not_after,
        not_before=not_before,
        label=label,
        predecessor=entry,
        by=by,
    ).entry


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
