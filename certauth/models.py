"""The registry: identities, their certificates, trusted authorities, and the refusal audit."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .certificates import THUMBPRINT_LENGTH, CertificateInfo, normalize_thumbprint
from .matching import PatternError, validate_pattern

SCOPE_RE = re.compile(r"\A[A-Za-z0-9_.:*/-]+\Z")


def parse_scopes(text: str) -> list[str]:
    """``"orders:read, orders:write"`` -> ``["orders:read", "orders:write"]`` (sorted, unique)."""
    scopes = sorted({part for part in re.split(r"[\s,]+", text or "") if part})
    for scope in scopes:
        if not SCOPE_RE.match(scope):
            raise ValidationError(
                _("Invalid scope %(scope)s: use letters, digits and : . _ - /"), params={"scope": scope}
            )
    return scopes


_SEARCH_SEPARATORS = re.compile(r"[\s:\-]")
_HEX_FRAGMENT = re.compile(r"\A[0-9a-f]+\Z")
# A partial thumbprint shorter than this is too ambiguous to be worth a prefix search.
MIN_THUMBPRINT_PREFIX = 6


def _hex_search_term(term: str) -> str:
    """A search term as bare lowercase hex (``AB:CD ef`` -> ``abcdef``), or "" when it is not hex.
    Accepts the ``sha256:`` / ``SHA256 Fingerprint=`` / ``0x`` prefixes openssl and consoles print."""
    value = term.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256fingerprint=", "sha256:", "sha256=", "serial=", "0x"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    value = _SEARCH_SEPARATORS.sub("", value)
    return value if _HEX_FRAGMENT.match(value) else ""


def _full_thumbprint(term: str) -> str:
    """The canonical thumbprint when ``term`` spells a whole SHA-256 thumbprint, else ""."""
    hex_term = _hex_search_term(term)
    return hex_term if len(hex_term) == THUMBPRINT_LENGTH else ""


class CertificateIdentityQuerySet(models.QuerySet["CertificateIdentity"]):
    def active(self) -> CertificateIdentityQuerySet:
        return self.filter(is_active=True)

    def with_registry_summary(self, at: dt.datetime | None = None) -> CertificateIdentityQuerySet:
        """Annotate ``live_entry_count``, ``soonest_expiry`` (of live entries) and ``last_used``.

        Correlated subqueries rather than JOIN + GROUP BY: the database evaluates them only for the
        rows on the page, so a paginated list stays cheap with 100,000 identities."""
        now = at or timezone.now()
        entries = RegisteredCertificate.objects.filter(identity=OuterRef("pk")).order_by()
        live = entries.live(now)
        return self.annotate(
            live_entry_count=Coalesce(Subquery(live.values("identity").annotate(n=Count("pk")).values("n")[:1]), 0),
            soonest_expiry=Subquery(live.order_by("not_after").values("not_after")[:1]),
            last_used=Subquery(
                entries.filter(last_used_at__isnull=False).order_by("-last_used_at").values("last_used_at")[:1]
            ),
        )

    def _having(self, entries: RegisteredCertificateQuerySet) -> CertificateIdentityQuerySet:
        return self.filter(Exists(entries.filter(identity=OuterRef("pk"))))

    def with_entries_expiring_within(self, days: int, at: dt.datetime | None = None) -> CertificateIdentityQuerySet:
        return self._having(RegisteredCertificate.objects.expiring_within(days, at))

    def with_expired_entries(self, at: dt.datetime | None = None) -> CertificateIdentityQuerySet:
        """Identities with an entry that expired without being revoked (a rotation that was missed)."""
        return self._having(RegisteredCertificate.objects.expired(at).filter(revoked_at__isnull=True))

    def with_revoked_entries(self) -> CertificateIdentityQuerySet:
        return self._having(RegisteredCertificate.objects.revoked())

    def never_used(self) -> CertificateIdentityQuerySet:
        """Identities none of whose entries has ever authenticated a request."""
        return self.exclude(
            Exists(RegisteredCertificate.objects.filter(identity=OuterRef("pk"), last_used_at__isnull=False))
        )

    def known_scopes(self, limit: int = 12, sample: int = 1000) -> list[str]:
        """The scopes granted in the registry, those in the most distinct scope lists first, then by name.  Reads
        at most ``sample`` distinct lists, so the admin's scope widget costs the same with 100,000 identities."""
        counts: Counter[str] = Counter()
        for text in self.exclude(scopes="").order_by().values_list("scopes", flat=True).distinct()[:sample]:
            counts.update(scope for scope in re.split(r"[\s,]+", text) if scope and SCOPE_RE.match(scope))
        return [scope for scope, _count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]]

    def search(self, term: str) -> CertificateIdentityQuerySet:
        """Name (contains), or any entry matching ``RegisteredCertificateQuerySet.search``."""
        term = term.strip()
        if not term:
            return self
        matching_entries = RegisteredCertificate.objects.search(term, include_identity=False)
        if _full_thumbprint(term):
            return self.filter(pk__in=matching_entries.values("identity_id"))
        # IN (uncorrelated subquery): the database scans the entries once, not once per identity.
        return self.filter(Q(name__icontains=term) | Q(pk__in=matching_entries.values("identity_id")))


class CertificateIdentity(models.Model):
    """A machine client: one name, its scopes, and one or more registered certificates."""

    class MatchField(models.TextChoices):
        SUBJECT_CN = "subject_cn", _("Subject common name")
        DNS_SAN = "dns_san", _("DNS subject alternative name")
        URI_SAN = "uri_san", _("URI subject alternative name (e.g. spiffe://)")
        EMAIL_SAN = "email_san", _("Email subject alternative name")

    name = models.CharField(
        max_length=150, unique=True, help_text=_("A stable name for this client, e.g. billing-service.")
    )
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True, help_text=_("Disabled identities are refused (identity_disabled)."))
    user = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="certificate_identities",
        help_text=_("Optional Django user that request.user becomes; without one a lightweight principal is used."),
    )
    scopes = models.TextField(
        blank=True, help_text=_("Space- or comma-separated scopes, e.g. orders:read orders:write.")
    )
    # Optional rule: any certificate from this authority whose field matches the pattern (exact or glob).
    match_authority = models.ForeignKey(
        "TrustedAuthority", null=True, blank=True, on_delete=models.PROTECT, related_name="identities"
    )
    match_field = models.CharField(max_length=20, choices=MatchField.choices, blank=True)
    match_pattern = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CertificateIdentityQuerySet.as_manager()

    class Meta:
        verbose_name = _("certificate identity")
        verbose_name_plural = _("certificate identities")
        ordering = ["name"]
        permissions = [
            ("disable_certificateidentity", "Can disable certificate identities"),
            # Widening a grant: rule, added scopes, rename, re-enabling (see certauth.grants).
            ("grant_certificateidentity", "Can grant: edit identity rules, add scopes, rename, re-enable"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope_list(self) -> list[str]:
        return parse_scopes(self.scopes)

    def clean(self) -> None:
        self.scopes = " ".join(parse_scopes(self.scopes))
        # Validation of the values only: a model has no request user, so who may change a rule is decided
        # by certauth.grants (called by the admin), not here.
        if self.match_authority_id and not (self.match_field and self.match_pattern):
            raise ValidationError(_("A matching rule needs a field and a pattern."))
        if not self.match_authority_id and (self.match_field or self.match_pattern):
            # Without an authority the rule admits nothing; saying so beats keeping a rule that looks live.
            raise ValidationError({"match_authority": _("A matching rule needs the authority it applies to.")})
        if self.match_field and self.match_pattern:
            # Refused at save, with the reason, rather than stored and silently matching nothing (or more).
            try:
                validate_pattern(self.match_field, self.match_pattern)
            except PatternError as exc:
                raise ValidationError({"match_pattern": str(exc)}) from exc
        if self.user is not None and (self.user.is_staff or self.user.is_superuser):
            # A certificate would then open the admin without a password: link a dedicated service user.
            raise ValidationError(
                {"user": _("A certificate identity cannot act as a staff or superuser account; link a non-staff user.")}
            )

    def disable(self, *, by: Any = None) -> None:
        if self.is_active:
            self.is_active = False
            self.disabled_at = timezone.now()
            self.disabled_by = by if getattr(by, "pk", None) else None
            self.save(update_fields=["is_active", "disabled_at", "disabled_by", "updated_at"])


class RevocationReason(models.TextChoices):
    UNSPECIFIED = "unspecified", _("Unspecified")
    KEY_COMPROMISE = "key_compromise", _("Key compromise")
    SUPERSEDED = "superseded", _("Superseded (rotated)")
    CESSATION_OF_OPERATION = "cessation_of_operation", _("Cessation of operation")


class RegisteredCertificateQuerySet(models.QuerySet["RegisteredCertificate"]):
    def usable(self, at: dt.datetime | None = None) -> RegisteredCertificateQuerySet:
        """Entries that authenticate now: not revoked, within validity, identity active."""
        now = at or timezone.now()
        return self.filter(revoked_at__isnull=True, identity__is_active=True, not_after__gt=now).filter(
            Q(not_before__isnull=True) | Q(not_before__lte=now)
        )

    def live(self, at: dt.datetime | None = None) -> RegisteredCertificateQuerySet:
        """Not revoked and not expired (the identity may be disabled)."""
        now = at or timezone.now()
        return self.filter(revoked_at__isnull=True, not_after__gt=now)

    def expiring_within(self, days: int, at: dt.datetime | None = None) -> RegisteredCertificateQuerySet:
        now = at or timezone.now()
        return self.live(now).filter(not_after__lte=now + dt.timedelta(days=days))

    def expired(self, at: dt.datetime | None = None) -> RegisteredCertificateQuerySet:
        return self.filter(not_after__lte=at or timezone.now())

    def revoked(self) -> RegisteredCertificateQuerySet:
        return self.filter(revoked_at__isnull=False)

    def with_status(
        self, status: str, at: dt.datetime | None = None, warning_days: int | None = None
    ) -> RegisteredCertificateQuerySet:
        """Entries whose ``RegisteredCertificate.status()`` is ``status`` (same precedence: revoked,
        expired, not yet valid, expiring, valid)."""
        from .conf import settings

        now = at or timezone.now()
        days = settings.EXPIRY_WARNING_DAYS if warning_days is None else warning_days
        if status == "revoked":
            return self.revoked()
        if status == "expired":
            return self.expired(now).filter(revoked_at__isnull=True)
        started = Q(not_before__isnull=True) | Q(not_before__lte=now)
        if status == "not_yet_valid":
            return self.live(now).filter(not_before__gt=now)
        if status == "expiring":
            return self.expiring_within(days, now).filter(started)
        if status == "valid":
            return self.live(now).filter(started, not_after__gt=now + dt.timedelta(days=days))
        raise ValueError(f"Unknown status {status!r}")

    def search(self, term: str, *, include_identity: bool = True) -> RegisteredCertificateQuerySet:
        """Thumbprint in any spelling (full, or a prefix of at least six hex digits), serial in any
        spelling, subject CN or label (contains), and the identity name unless told otherwise."""
        term = term.strip()
        if not term:
            return self
        full = _full_thumbprint(term)
        if full:  # unambiguous: one unique-index lookup instead of scanning names and subjects
            return self.filter(thumbprint_sha256=full)
        query = Q(subject_cn__icontains=term) | Q(label__icontains=term)
        if include_identity:
            query |= Q(identity__name__icontains=term)
        hex_term = _hex_search_term(term)
        if hex_term:
            if len(hex_term) >= MIN_THUMBPRINT_PREFIX:
                query |= Q(thumbprint_sha256__startswith=hex_term)
            serial = hex_term.lstrip("0").upper() or "0"
            query |= Q(serial_number=serial)
        return self.filter(query)


class RegisteredCertificate(models.Model):
    """One certificate an identity may present, pinned by its SHA-256 thumbprint.  An identity may have
    several with overlapping validity: that is how rotation works without downtime."""

    class Source(models.TextChoices):
        CERTIFICATE = "certificate", _("From a certificate")
        THUMBPRINT = "thumbprint", _("Typed thumbprint")
        RULE = "rule", _("Seen via identity rule")

    identity = models.ForeignKey(CertificateIdentity, on_delete=models.CASCADE, related_name="certificates")
    thumbprint_sha256 = models.CharField(_("SHA-256 thumbprint"), max_length=64, unique=True)
    label = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.CERTIFICATE)
    subject = models.TextField(blank=True)
    subject_cn = models.CharField(max_length=255, blank=True, db_index=True)
    issuer = models.TextField(blank=True)
    serial_number = models.CharField(max_length=100, blank=True, db_index=True, help_text=_("Hexadecimal."))
    subject_alternative_names = models.JSONField(default=dict, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(db_index=True)
    certificate_pem = models.TextField(blank=True, help_text=_("The public certificate; never a private key."))
    # "The same certificate" whatever its encoding (docs/registry.md): the thumbprint pins one encoding, these
    # find every re-encoding of the same issuance and, for a key revoked as compromised, every certificate for
    # that key.  NULL (which equals nothing, not even another NULL) for a typed thumbprint until that
    # certificate is first presented.
    issuer_serial_sha256 = models.CharField(  # noqa: DJ001
        _("issuer and serial (SHA-256)"), max_length=64, null=True, blank=True, editable=False, db_index=True
    )
    tbs_sha256 = models.CharField(  # noqa: DJ001
        _("signed content (SHA-256 of the TBS)"), max_length=64, null=True, blank=True, editable=False, db_index=True
    )
    spki_sha256 = models.CharField(  # noqa: DJ001 (indexed with the revocation reason: see Meta.indexes)
        _("public key (SHA-256 of the SPKI)"), max_length=64, null=True, blank=True, editable=False
    )
    predecessor = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="successors",
        help_text=_("The entry this one replaces (rotation)."),
    )
    revoked_at = models.DateTimeField(null=True, blank=True, db_index=True)
    revocation_reason = models.CharField(max_length=30, choices=RevocationReason.choices, blank=True)
    revoked_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = RegisteredCertificateQuerySet.as_manager()

    class Meta:
        verbose_name = _("registered certificate")
        verbose_name_plural = _("registered certificates")
        ordering = ["-created_at"]
        permissions = [("revoke_registeredcertificate", "Can revoke registered certificates")]
        indexes = [
            models.Index(fields=["identity", "revoked_at", "not_after"], name="certauth_entry_live_idx"),
            # "a key revoked as compromised" reads only those rows, however many certificates share the key
            models.Index(fields=["spki_sha256", "revocation_reason"], name="certauth_entry_key_idx"),
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Remembered so save() can refuse to un-revoke or lower a reason (instances loaded from the DB come
        # through here too).
        self._loaded_revoked_at = self.revoked_at
        self._loaded_revocation_reason = self.revocation_reason

    def __str__(self) -> str:
        return f"{self.identity.name if self.identity_id else '?'} {self.thumbprint_sha256[:12]}…"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.thumbprint_sha256 = normalize_thumbprint(self.thumbprint_sha256)
        if self._loaded_revoked_at is not None and self.revoked_at != self._loaded_revoked_at:
            # Revocation is one-way: reinstating means registering the certificate again.
            raise ValidationError(_("A revoked certificate cannot be reinstated; register it again instead."))
        if (
            self._loaded_revocation_reason == RevocationReason.KEY_COMPROMISE
            and self.revocation_reason != RevocationReason.KEY_COMPROMISE
        ):
            # The reason only ratchets up: lowering it would admit the key again (see revoke()).
            raise ValidationError(_("A key revoked as compromised stays compromised; its reason cannot be lowered."))
        super().save(*args, **kwargs)
        self._loaded_revoked_at = self.revoked_at
        self._loaded_revocation_reason = self.revocation_reason

    def clean(self) -> None:
        if self.thumbprint_sha256:
            try:
                self.thumbprint_sha256 = normalize_thumbprint(self.thumbprint_sha256)
            except ValueError as exc:
                raise ValidationError({"thumbprint_sha256": str(exc)}) from exc

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def status(self, at: dt.datetime | None = None, warning_days: int | None = None) -> str:
        """valid | expiring | expired | not_yet_valid | revoked"""
        from .conf import settings

        now = at or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.not_after <= now:
            return "expired"
        if self.not_before is not None and self.not_before > now:
            return "not_yet_valid"
        days = settings.EXPIRY_WARNING_DAYS if warning_days is None else warning_days
        if self.not_after <= now + dt.timedelta(days=days):
            return "expiring"
        return "valid"

    def revoke(self, reason: str = RevocationReason.UNSPECIFIED, *, by: Any = None) -> bool:
        """Revoke this entry (one-way).  Returns False when nothing changed.

        An entry already revoked for another reason (retired as ``superseded``, say) can still be revoked as
        ``key_compromise``: the one change a revoked entry accepts, because only that reason refuses every other
        certificate for its key.  Its ``revoked_at`` stays (the certificate has been refused since then);
        ``revoked_by`` becomes who raised it, when known.  Any other reason on a revoked entry changes nothing.

        Decided by the database, not by this instance: two conditional UPDATEs (revoke a live row; raise a revoked
        one to ``key_compromise``), so an instance loaded before someone else revoked the entry (an admin page, a
        rotation retiring its predecessor) can neither lower a ``key_compromise`` reason nor move the date.  The
        instance is refreshed from the row afterwards."""
        from .registry import registry_changed

        revoker = by if getattr(by, "pk", None) else None
        row = RegisteredCertificate.objects.using(self._state.db).filter(pk=self.pk)
        with transaction.atomic(using=row.db):
            changed = row.filter(revoked_at__isnull=True).update(
                revoked_at=timezone.now(), revocation_reason=reason, revoked_by=revoker
            )
            if not changed and reason == RevocationReason.KEY_COMPROMISE:
                changed = row.exclude(revocation_reason=RevocationReason.KEY_COMPROMISE).update(
                    revocation_reason=reason, **({"revoked_by": revoker} if revoker else {})
                )
            if changed:
                registry_changed(row.db)  # update() sends no post_save: bump the generation in this transaction
        self.refresh_from_db(using=row.db, fields=["revoked_at", "revocation_reason", "revoked_by"])
        self._loaded_revoked_at = self.revoked_at
        self._loaded_revocation_reason = self.revocation_reason
        return bool(changed)

    def raises_to(self, reason: str) -> bool:
        """Whether revoking this already revoked entry with ``reason`` raises it to ``key_compromise``."""
        return (
            self.revoked_at is not None
            and reason == RevocationReason.KEY_COMPROMISE
            and self.revocation_reason != RevocationReason.KEY_COMPROMISE
        )

    def fill_from(self, info: CertificateInfo) -> None:
        """Copy the certificate's facts onto the entry (thumbprint, subject, validity, SANs, PEM)."""
        self.thumbprint_sha256 = info.thumbprint_sha256
        self.subject = info.subject
        self.subject_cn = info.subject_cn[:255]
        self.issuer = info.issuer
        self.serial_number = info.serial_hex[:100]
        self.subject_alternative_names = {k: v for k, v in info.subject_alternative_names().items() if v}
        self.not_before = info.not_before
        self.not_after = info.not_after
        self.certificate_pem = info.pem()
        self.fill_issuance_keys(info)
        self.source = self.Source.CERTIFICATE

    def fill_issuance_keys(self, info: CertificateInfo) -> None:
        """The keys that make a revocation reach every encoding of this certificate (and, for a compromised
        key, every certificate for it); see ``certauth.certificates.issuer_serial_of``."""
        self.issuer_serial_sha256 = info.issuer_serial_sha256 or None
        self.tbs_sha256 = info.tbs_sha256 or None
        self.spki_sha256 = info.spki_sha256 or None


class TrustedAuthority(models.Model):
    """A CA (root or intermediate) whose certificates certauth's chain validation accepts."""

    name = models.CharField(max_length=150, unique=True)
    certificate_pem = models.TextField()
    thumbprint_sha256 = models.CharField(_("SHA-256 thumbprint"), max_length=64, unique=True)
    subject = models.TextField(blank=True)
    issuer = models.TextField(blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    is_enabled = models.BooleanField(default=True)
    notes = models.TextField(blank=True)
    crl_url = models.URLField(blank=True, max_length=1000)
    crl_der = models.BinaryField(null=True, blank=True, editable=False)
    crl_last_update = models.DateTimeField(null=True, blank=True)
    crl_next_update = models.DateTimeField(null=True, blank=True)
    crl_fetched_at = models.DateTimeField(null=True, blank=True)
    crl_error = models.TextField(blank=True)
    ocsp_url = models.URLField(
        _("OCSP responder URL"),
        blank=True,
        max_length=1000,
        help_text=_("Asked about certificates this CA issued (REVOCATION_MODE ocsp); empty: each certificate's AIA."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("trusted authority")
        verbose_name_plural = _("trusted authorities")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AuthenticationFailure(models.Model):
    """Refused authentications, aggregated: identical refusals (same reason, thumbprint, client IP and
    identity) within one audit window are one row whose ``count`` is exact.  Refusals before the registry
    step, and unknown certificates past the capture cap, are one row per (reason, client IP, window)
    whatever the certificate (``aggregated_by_address``; see ``certauth.audit``)."""

    key = models.CharField(max_length=64, editable=False)
    window_start = models.DateTimeField(editable=False)
    reason = models.CharField(max_length=40, db_index=True)
    detail = models.TextField(blank=True)
    thumbprint_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    subject = models.TextField(blank=True)
    subject_cn = models.CharField(max_length=255, blank=True)
    issuer = models.TextField(blank=True)
    serial_number = models.CharField(max_length=100, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    client_network = models.CharField(
        _("client network"),
        max_length=64,
        blank=True,
        db_index=True,
        editable=False,
        help_text=_("What the row counts refusals of: the IPv4 address, or the IPv6 network (AUDIT_IPV6_PREFIX)."),
    )
    proxy_ip = models.GenericIPAddressField(null=True, blank=True)
    method = models.CharField(max_length=10, blank=True)
    path = models.CharField(max_length=500, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    identity = models.ForeignKey(
        CertificateIdentity, null=True, blank=True, on_delete=models.SET_NULL, related_name="failures"
    )
    certificate_pem = models.TextField(blank=True, help_text=_("The refused certificate (public data)."))
    aggregated_by_address = models.BooleanField(
        default=False,
        help_text=_("Counts refusals of any certificate from this address; the certificate shown is the first."),
    )
    last_thumbprint_sha256 = models.CharField(
        max_length=64, blank=True, help_text=_("The thumbprint of the latest refused certificate in this row.")
    )
    count = models.PositiveBigIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = _("authentication failure")
        verbose_name_plural = _("authentication failures")
        ordering = ["-last_seen"]
        constraints = [models.UniqueConstraint(fields=["key", "window_start"], name="certauth_failure_window_uniq")]
        indexes = [models.Index(fields=["reason", "-last_seen"], name="certauth_failure_reason_idx")]

    def __str__(self) -> str:
        return f"{self.reason} x{self.count}"


class RegistryState(models.Model):
    """A single row whose ``generation`` is bumped by every registry change, so every worker (and
    every host sharing the database) can tell cheaply whether its cached decisions are still current."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    generation = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("registry state")

    def __str__(self) -> str:
        return f"registry generation {self.generation}"
