"""The registry in the Django admin: identities with their certificate entries inline, and the entries'
own admin where certificates are registered, rotated (add successor, retire) and revoked.

Logic lives in ``certauth.models`` (querysets) and ``certauth.services``; this module only wires it
to the admin and renders it.  Revoking needs ``certauth.revoke_registeredcertificate``, disabling an
identity ``certauth.disable_certificateidentity``; registering is the ordinary "add" permission.  Widening
what an identity grants (its rule, scopes, name, re-enabling it) needs ``certauth.grant_certificateidentity``
as well as the "add registered certificate" permission: see ``certauth.grants`` and docs/registry.md.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import LogEntry
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, Count, Prefetch, QuerySet, Value, When, Window
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters

from .. import grants, services, timeline
from ..certificates import format_thumbprint, visible
from ..conf import settings
from ..forms import (
    SENSITIVE_FIELDS,
    FirstCertificateForm,
    PredecessorInput,
    RegistrationForm,
    RevocationForm,
    ScopesWidget,
)
from ..models import AuthenticationFailure, CertificateIdentity, RegisteredCertificate, RevocationReason

STATUS_LABELS = {
    "valid": _("Valid"),
    "expiring": _("Expiring soon"),
    "expired": _("Expired"),
    "not_yet_valid": _("Not yet valid"),
    "revoked": _("Revoked"),
}
CSS = {"all": ["certauth/admin.css", "certauth/identity.css"]}
# What an identity grants: its rule and its scopes.  Editing them needs the grant permission (certauth.grants).
GRANT_FIELDS = ("match_authority", "match_field", "match_pattern", "scopes")
# How many entries the revocation confirmation page lists before summarising the rest.
CONFIRMATION_LIST_LIMIT = 100
#: ``?from_failure=<pk>`` copies an audit row into the add form: only for users who may read the audit.
VIEW_AUDIT_PERMISSION = "certauth.view_authenticationfailure"
LINE_BREAK = mark_safe("<br>")
#: The identity page's timeline draws this many certificates at most (the newest); the inline lists them all.
TIMELINE_LIMIT = 20
#: Query-string primary keys longer than this are refused unread (no table of ours gets near 10**18 rows).
PRIMARY_KEY_MAX_DIGITS = 18
_ASCII_DIGITS = frozenset("0123456789")


def parse_primary_key(value: object) -> int | None:
    """``value`` (a query-string parameter) as a positive primary key, or None.  Strict on purpose:
    ``str.isdigit()`` also says yes to "²" and to 5000-digit strings, which ``int()`` then refuses (a 500)."""
    text = str(value) if value is not None else ""
    if not text or len(text) > PRIMARY_KEY_MAX_DIGITS or not _ASCII_DIGITS.issuperset(text):
        return None
    try:
        number = int(text)
    except ValueError:  # cannot happen for 1-18 ASCII digits; kept so no future change turns it into a 500
        return None
    return number if number > 0 else None


# --- rendering helpers -------------------------------------------------------------------------------
def thumbprint_html(thumbprint: str) -> SafeString:
    """The first eight bytes, with the full colon-separated thumbprint on hover."""
    return format_html(
        '<code class="certauth-thumbprint" title="{}">{}…</code>',
        format_thumbprint(thumbprint),
        format_thumbprint(thumbprint[:16]),
    )


def status_html(entry: RegisteredCertificate, now: dt.datetime | None = None) -> SafeString:
    """A badge: colour and text (never colour alone)."""
    status = entry.status(now)
    if status == "revoked":
        hint = f"{entry.get_revocation_reason_display()}, {entry.revoked_at:%Y-%m-%d %H:%M} UTC"
    elif status == "not_yet_valid" and entry.not_before is not None:
        hint = f"from {entry.not_before:%Y-%m-%d %H:%M} UTC"
    else:
        hint = f"until {entry.not_after:%Y-%m-%d %H:%M} UTC"
    return format_html(
        '<span class="certauth-status certauth-status--{}" title="{}">{}</span>', status, hint, STATUS_LABELS[status]
    )


def when_html(moment: dt.datetime | None, never: str = "never") -> SafeString:
    if moment is None:
        return format_html('<span class="certauth-never">{}</span>', never)
    return format_html(
        '<time datetime="{}" title="{} UTC">{} ago</time>',
        moment.isoformat(),
        f"{moment:%Y-%m-%d %H:%M:%S}",
        timesince(moment),
    )


def validity_html(entry: RegisteredCertificate) -> SafeString:
    """Two lines at most: each date (and the arrow with the first) never breaks."""
    start = f"{entry.not_before:%Y-%m-%d}" if entry.not_before else "?"
    return format_html(
        '<span class="certauth-nowrap">{} →</span> <span class="certauth-nowrap">{}</span>',
        start,
        f"{entry.not_after:%Y-%m-%d}",
    )


def list_status_html(entry: RegisteredCertificate) -> SafeString:
    """The status badge for lists; a revoked entry's also says when (on the badge's line) and why (below)."""
    if entry.revoked_at is None:
        return status_html(entry)
    return format_html(
        '<span class="certauth-nowrap">{} <time datetime="{}">{}</time></span>'
        '<span class="certauth-revocation-note">{}</span>',
        status_html(entry),
        entry.revoked_at.isoformat(),
        f"{entry.revoked_at:%Y-%m-%d}",
        entry.get_revocation_reason_display(),
    )


def entry_change_url(entry: RegisteredCertificate) -> str:
    return reverse("admin:certauth_registeredcertificate_change", args=[entry.pk])


def entry_name(entry: RegisteredCertificate) -> str:
    """How an entry is called in headings and warnings: its label (spelled out by ``visible``: it may be a refused
    certificate's CN, prefilled from the audit), else its shortened thumbprint."""
    return visible(entry.label) or f"{format_thumbprint(entry.thumbprint_sha256[:16])}…"


def last_used_text(moment: dt.datetime | None, now: dt.datetime) -> str:
    """ "last used 3 minutes ago", "last used less than a minute ago" or "never used"."""
    if moment is None:
        return str(_("never used"))
    if now - moment < dt.timedelta(minutes=1):
        return str(_("last used less than a minute ago"))
    return str(_("last used %(when)s ago") % {"when": timesince(moment, now)})


def recent_use_warning(entry: RegisteredCertificate, now: dt.datetime) -> str:
    """Why retiring ``entry`` may cut a client off, when it was used recently (``services.recent_use``); else ""."""
    if services.recent_use(entry, now) is None:
        return ""
    return str(
        _(
            "%(entry)s of %(identity)s was %(last_used)s: a client may still present it, and retiring refuses it "
            "from the next request. Last use is recorded at most once every %(seconds)d seconds, so it may have "
            "been used since. Check that its successor's last use is recent first."
        )
        % {
            "entry": entry_name(entry),
            "identity": visible(entry.identity.name),
            "last_used": last_used_text(entry.last_used_at, now),
            "seconds": settings.LAST_USED_RESOLUTION_SECONDS,
        }
    )


def successor_heading(predecessor: RegisteredCertificate) -> str:
    """The "add successor" page's title (plain text: the template escapes it)."""
    return str(
        _("Add a successor to %(entry)s of %(identity)s")
        % {"entry": entry_name(predecessor), "identity": visible(predecessor.identity.name)}
    )


def predecessor_html(entry: RegisteredCertificate) -> SafeString:
    """The predecessor on the "add successor" form: name, thumbprint, identity, status and last use."""
    return format_html(
        "<strong>{}</strong> {} {} {} · {} {} {}",
        entry_name(entry),
        thumbprint_html(entry.thumbprint_sha256),
        _("of"),
        visible(entry.identity.name),
        status_html(entry),
        _("last used"),
        when_html(entry.last_used_at),
    )


def timeline_bar(entry: RegisteredCertificate, now: dt.datetime) -> timeline.Bar:
    status = entry.status(now)
    return timeline.Bar(
        key=str(entry.pk),
        name=entry_name(entry),
        status=status,
        status_text=str(STATUS_LABELS[status]),
        not_before=entry.not_before,
        not_after=entry.not_after,
        last_used_at=entry.last_used_at,
        last_used_text=last_used_text(entry.last_used_at, now),
        revoked_at=entry.revoked_at,
        replaces=str(entry.predecessor_id) if entry.predecessor_id else None,
        replaces_name=entry_name(entry.predecessor) if entry.predecessor else "",
        href=entry_change_url(entry),
        subject=entry.subject_cn,
    )


def timeline_html(identity: CertificateIdentity, now: dt.datetime | None = None) -> SafeString:
    """The identity's rotation timeline (``certauth.timeline``): validity, today, last use, successors."""
    now = now or timezone.now()
    newest = list(
        identity.certificates.select_related("predecessor")
        .annotate(total=Window(Count("pk")))  # how many in all, in the same query
        .order_by("-created_at", "-pk")[:TIMELINE_LIMIT]
    )
    more = newest[0].total - len(newest) if newest else 0  # type: ignore[attr-defined]
    entries = newest[::-1]  # oldest at the top: a rotation reads downwards
    bars = [timeline_bar(entry, now) for entry in entries]
    title = _("Certificates of %(identity)s: validity, today, last use and successors") % {"identity": identity.name}
    svg = timeline.render(bars, now=now, title=str(title), more=more)
    if not svg:
        return format_html('<p class="certauth-never">{}</p>', _("No certificate registered yet."))
    return mark_safe(f'<figure class="certauth-timeline-figure">{svg}</figure>')  # noqa: S308 (timeline.text escapes every value)


def can_revoke(request: HttpRequest) -> bool:
    return bool(request.user.has_perm("certauth.revoke_registeredcertificate"))


def _raisable(queryset: QuerySet[RegisteredCertificate]) -> QuerySet[RegisteredCertificate]:
    """The entries of ``queryset`` revoked for a reason that key compromise may still raise."""
    return queryset.filter(revoked_at__isnull=False).exclude(revocation_reason=RevocationReason.KEY_COMPROMISE)


# --- list filters ------------------------------------------------------------------------------------
class IdentityCertificateFilter(admin.SimpleListFilter):
    title = _("certificates")
    parameter_name = "certificates"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("expiring", _("expiring within %(days)d days") % {"days": settings.EXPIRY_WARNING_DAYS}),
            ("expired", _("expired (not revoked)")),
            ("revoked", _("revoked")),
            ("never_used", _("never used")),
        ]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value == "expiring":
            return queryset.with_entries_expiring_within(settings.EXPIRY_WARNING_DAYS)
        if value == "expired":
            return queryset.with_expired_entries()
        if value == "revoked":
            return queryset.with_revoked_entries()
        if value == "never_used":
            return queryset.never_used()
        return queryset


class EntryStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [*STATUS_LABELS.items(), ("never_used", _("Never used"))]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value == "never_used":
            return queryset.filter(last_used_at__isnull=True)
        if value in STATUS_LABELS:
            return queryset.with_status(value)
        return queryset


# --- identities --------------------------------------------------------------------------------------
class RegisteredCertificateInline(admin.TabularInline):
    """Read-only overview of an identity's entries; registering and revoking happen on the entry admin
    (linked from each row), so every change goes through one form and one permission check."""

    model = RegisteredCertificate
    fk_name = "identity"
    extra = 0
    can_delete = False
    ordering = ["-created_at"]
    verbose_name_plural = _("certificates (newest first)")
    base_fields = ["thumbprint", "status", "validity", "last_used", "label", "replaces", "links"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*self.base_fields, "revocation_links"] if can_revoke(request) else list(self.base_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[RegisteredCertificate]:
        return super().get_queryset(request).select_related("identity", "predecessor")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("thumbprint"))
    def thumbprint(self, entry: RegisteredCertificate) -> SafeString:
        return format_html('<a href="{}">{}</a>', entry_change_url(entry), thumbprint_html(entry.thumbprint_sha256))

    @admin.display(description=_("status"))
    def status(self, entry: RegisteredCertificate) -> SafeString:
        return status_html(entry)

    @admin.display(description=_("validity"))
    def validity(self, entry: RegisteredCertificate) -> SafeString:
        return validity_html(entry)

    @admin.display(description=_("last used"))
    def last_used(self, entry: RegisteredCertificate) -> SafeString:
        return when_html(entry.last_used_at)

    @admin.display(description=_("replaces"))
    def replaces(self, entry: RegisteredCertificate) -> SafeString | str:
        return thumbprint_html(entry.predecessor.thumbprint_sha256) if entry.predecessor else "—"

    @admin.display(description="")
    def links(self, entry: RegisteredCertificate) -> SafeString:
        if entry.revoked_at is not None:
            return format_html('<a href="{}">{}</a>', entry_change_url(entry), _("details"))
        successor = reverse("admin:certauth_registeredcertificate_successor", args=[entry.pk])
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a>',
            entry_change_url(entry),
            _("details"),
            successor,
            _("add successor"),
        )

    @admin.display(description="")
    def revocation_links(self, entry: RegisteredCertificate) -> SafeString | str:
        if entry.revoked_at is not None:
            return ""
        return format_html(
            '<a href="{}">{}</a> · <a href="{}" class="certauth-danger-link">{}</a>',
            reverse("admin:certauth_registeredcertificate_retire", args=[entry.pk]),
            _("retire"),
            reverse("admin:certauth_registeredcertificate_revoke", args=[entry.pk]),
            _("revoke…"),
        )


class FirstCertificateInline(admin.StackedInline):
    """On "Add certificate identity": the identity's first certificate in the same page, through the
    registration form (``FirstCertificateForm``), so it is checked exactly as "Register a certificate" checks
    it, and a refused certificate leaves the whole page unsaved.  Needs the "add registered certificate"
    permission (without it the page adds the identity alone)."""

    model = RegisteredCertificate
    form = FirstCertificateForm
    fk_name = "identity"
    extra = 1
    max_num = 1
    can_delete = False
    fields = ["pem_text", "certificate_file", "pkcs12_password", "label"]
    verbose_name = _("first certificate (optional)")
    verbose_name_plural = _("first certificate (optional)")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


#: The first certificate's pasted text and bundle password, as the identity page posts them.
FIRST_CERTIFICATE_SENSITIVE_FIELDS = tuple(f"certificates-0-{name}" for name in SENSITIVE_FIELDS)


class RefusedAtSaveMixin:
    """A registration the service refuses when it writes (the registry changed between the form's checks and
    its save: another operator, the CLI or a concurrent request registered the same certificate) is an error
    message and the page again, never a 500.  Django's ``changeform_view`` saves inside ``transaction.atomic``,
    which has rolled back by the time the refusal arrives here: nothing of the page is kept, no identity half
    created."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        except ValidationError as exc:
            text = " ".join(exc.messages)
            self.message_user(  # type: ignore[attr-defined]
                request, format_html("Nothing was saved: {}", text), messages.ERROR
            )
            return HttpResponseRedirect(request.get_full_path())


@admin.register(CertificateIdentity)
class CertificateIdentityAdmin(RefusedAtSaveMixin, admin.ModelAdmin):
    list_display = ["name", "is_active", "live_entries", "soonest_expiry", "last_used", "scopes"]
    list_filter = ["is_active", IdentityCertificateFilter]
    # The search itself is get_search_results(); search_fields only turns the box (and autocomplete) on.
    search_fields = ["name"]
    search_help_text = _("Name, certificate thumbprint in any spelling (AB:CD:… or abcd…), subject CN or serial.")
    show_full_result_count = False
    list_per_page = 50
    raw_id_fields = ["user"]
    actions = ["disable_selected"]
    readonly_fields = ["timeline", "disabled_at", "disabled_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "is_active", "scopes", "user"]}),
        (
            _("Match by rule instead of pinned thumbprints (optional)"),
            {
                "classes": ["collapse"],
                "fields": ["match_authority", "match_field", "match_pattern"],
                "description": _(
                    "The only wildcard is *, and it stays within one DNS label or URI path segment (in a CN it "
                    "never crosses . / @); **.example.com or spiffe://prod.example/ns/** match any depth. "
                    "Names are ASCII. See docs/trust.md, Identity rules."
                ),
            },
        ),
        (_("History"), {"fields": ["disabled_at", "disabled_by", "created_at", "updated_at"]}),
    ]

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[CertificateIdentity]:
        return super().get_queryset(request).with_registry_summary()  # type: ignore[attr-defined]

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[admin.options.InlineModelAdmin]]:
        return [RegisteredCertificateInline] if obj is not None else [FirstCertificateInline]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:  # nothing to show yet: the first certificate follows the scopes more closely without it
            return [fieldset for fieldset in fieldsets if fieldset[0] != _("History")]
        fieldsets.insert(1, (_("Rotation timeline"), {"fields": ["timeline"], "classes": ["certauth-timeline-set"]}))
        return fieldsets

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "scopes":
            kwargs["widget"] = ScopesWidget(known=CertificateIdentity.objects.known_scopes())
            kwargs["help_text"] = _("Tick scopes already granted in the registry, or type others (space-separated).")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @method_decorator(sensitive_post_parameters(*FIRST_CERTIFICATE_SENSITIVE_FIELDS))
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        return super().add_view(request, form_url, extra_context)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not RegisteredCertificate or change:
            return super().save_formset(request, form, formset, change)
        # The first certificate, validated with the rest of the page: registered through the same service.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []  # read by the history
        for entry_form in formset.forms:
            if not entry_form.has_changed():
                continue
            entry = entry_form.register(by=request.user)
            formset.new_objects.append(entry)
            self.log_addition(request, entry, [{"added": {}}])
            for warning in entry_form.registration_warnings:  # the trust policy refuses it today
                self.message_user(request, warning, messages.WARNING)
        return None

    @admin.display(description=_("certificates over time"))
    def timeline(self, identity: CertificateIdentity) -> SafeString:
        return timeline_html(identity)

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        if request.path.endswith("/autocomplete/"):
            # Choosing an identity for a registration: match names only, the exact name first, so typing
            # "demo-client" can never preselect another identity whose certificate's CN contains it.
            term = search_term.strip()
            if not term:
                return queryset, False
            exact_first = Case(When(name__iexact=term, then=Value(0)), default=Value(1))
            return queryset.filter(name__icontains=term).order_by(exact_first, "name"), False
        return queryset.search(search_term), False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """Who may change what is decided by ``certauth.grants``; the fields follow it (and save_model checks
        it again, so a POST carrying a read-only field changes nothing)."""
        fields = list(super().get_readonly_fields(request, obj))
        may_grant = grants.can_grant(request.user)
        # Disabling is its own permission, re-enabling a grant: neither is a side effect of "change".
        may_toggle = may_grant if obj is not None and not obj.is_active else self.has_disable_permission(request)
        if not may_toggle:
            fields.append("is_active")
        if not may_grant:
            fields += [*GRANT_FIELDS, "name"] if obj is not None else list(GRANT_FIELDS)
        if not request.user.is_superuser:
            fields.append("user")  # whom a certificate acts as is a superuser's decision
        return fields

    def save_model(self, request: HttpRequest, obj: CertificateIdentity, form: ModelForm, change: bool) -> None:
        stored = CertificateIdentity.objects.filter(pk=obj.pk).select_related("match_authority").first()
        before = grants.IdentityGrant.of(stored) if change and stored is not None else None
        grants.check_identity_change(before, obj, by=request.user)
        form.certauth_grant_before = before  # type: ignore[attr-defined]  # read by construct_change_message
        if "is_active" in form.changed_data:
            obj.disabled_at = None if obj.is_active else timezone.now()
            obj.disabled_by = None if obj.is_active else request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: Any, add: bool = False) -> Any:
        """Django's "Changed X and Y." plus the old and new value of the rule, scopes, name and state, so the
        object's History page shows what a grant was before and after."""
        message = super().construct_change_message(request, form, formsets, add)
        described = grants.describe_identity_change(
            getattr(form, "certauth_grant_before", None), grants.IdentityGrant.of(form.instance)
        )
        if not described:
            return message
        summary = LogEntry(change_message=json.dumps(message)).get_change_message()
        # Plain text (not JSON): LogEntry.get_change_message() shows it as written.
        return f"{summary} {described}." if summary else f"{described}."

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        days = settings.EXPIRY_WARNING_DAYS
        expiring = RegisteredCertificate.objects.expiring_within(days).filter(identity__is_active=True).count()
        context = {"certauth_expiring_count": expiring, "certauth_warning_days": days, **(extra_context or {})}
        return super().changelist_view(request, context)

    def has_disable_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("certauth.disable_certificateidentity"))

    @admin.display(description=_("live certificates"), ordering="live_entry_count")
    def live_entries(self, identity: Any) -> int:
        return int(identity.live_entry_count)

    @admin.display(description=_("soonest expiry"), ordering="soonest_expiry")
    def soonest_expiry(self, identity: Any) -> SafeString | str:
        moment = identity.soonest_expiry
        if moment is None:
            return "—"
        soon = moment <= timezone.now() + dt.timedelta(days=settings.EXPIRY_WARNING_DAYS)
        if soon:
            return format_html(
                '<span class="certauth-status certauth-status--expiring" title="{}">{} ({})</span>',
                _("Expiring soon"),
                f"{moment:%Y-%m-%d}",
                _("in %(when)s") % {"when": timesince(timezone.now(), moment, depth=1)},
            )
        return f"{moment:%Y-%m-%d}"

    @admin.display(description=_("last used"), ordering="last_used")
    def last_used(self, identity: Any) -> SafeString:
        return when_html(identity.last_used)

    @admin.action(description=_("Disable selected identities"), permissions=["disable"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[CertificateIdentity]) -> None:
        active = list(queryset.filter(is_active=True))
        changed = services.disable_identities(queryset, by=request.user)
        for identity in active:  # the same history entry as unticking "is active" in the form
            self.log_change(request, identity, "Disabled (active: True → False).")
        self.message_user(
            request,
            ngettext(
                "Disabled %(count)d identity: its clients are refused (identity_disabled) from the next request.",
                "Disabled %(count)d identities: their clients are refused (identity_disabled) from the next request.",
                changed,
            )
            % {"count": changed},
            messages.SUCCESS if changed else messages.INFO,
        )


# --- registered certificates -------------------------------------------------------------------------
@admin.register(RegisteredCertificate)
class RegisteredCertificateAdmin(RefusedAtSaveMixin, admin.ModelAdmin):
    # Compact enough for a 1366 px screen: the columns a rotation is watched by come first.
    list_display = ["thumbprint", "identity", "status", "validity", "last_used", "subject_cn_text", "label"]
    list_display_links = ["thumbprint"]
    list_filter = [EntryStatusFilter, "source", "revocation_reason"]
    list_select_related = ["identity"]
    search_fields = ["subject_cn"]  # see get_search_results
    search_help_text = _("Thumbprint in any spelling (full or first bytes), serial, subject CN, label or identity.")
    show_full_result_count = False
    list_per_page = 50
    ordering = ["-pk"]  # newest first, on the primary key index
    autocomplete_fields = ["identity"]
    raw_id_fields = ["predecessor"]
    actions = ["revoke_selected", "retire_selected"]
    add_fieldsets = [
        (None, {"fields": ["identity", "label", "predecessor"]}),
        (
            _("The certificate: one of"),
            {
                "fields": ["pem_text", "certificate_file", "pkcs12_password", "thumbprint"],
                "description": _(
                    "Thumbprint, subject, issuer, serial, alternative names and validity are read from the "
                    "certificate. Type a thumbprint only when the certificate itself is not at hand."
                ),
            },
        ),
        (_("Validity, with a typed thumbprint only"), {"fields": ["thumbprint_not_before", "thumbprint_not_after"]}),
    ]
    change_readonly_fields = [
        "identity_link",
        "status",
        "thumbprint_full",
        "subject",
        "subject_cn",
        "issuer",
        "serial_number",
        "alternative_names",
        "not_before",
        "not_after",
        "last_used",
        "source",
        "rotation",
        "revoked_at",
        "revocation_reason",
        "revoked_by",
        "created_at",
        "created_by",
        "certificate",
    ]
    fieldsets = [
        (None, {"fields": ["identity_link", "status", "label", "last_used"]}),
        (
            _("Certificate"),
            {
                "fields": [
                    "thumbprint_full",
                    "subject",
                    "subject_cn",
                    "issuer",
                    "serial_number",
                    "alternative_names",
                    "not_before",
                    "not_after",
                    "source",
                ]
            },
        ),
        (_("Rotation"), {"fields": ["rotation"]}),
        (_("Revocation"), {"fields": ["revoked_at", "revocation_reason", "revoked_by"]}),
        (_("History"), {"fields": ["created_at", "created_by", "certificate"]}),
    ]

    class Media:
        css = CSS

    # --- forms: a registration form to add, read-only facts (label editable) to change -------------
    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = RegistrationForm
            predecessor = self._chosen_predecessor(request)
            if predecessor is not None:  # "Add successor": the predecessor by name, not a record number to check
                kwargs["widgets"] = {
                    **kwargs.get("widgets", {}),
                    "predecessor": PredecessorInput(predecessor_html(predecessor)),
                }
        return super().get_form(request, obj, change=change, **kwargs)

    def _chosen_predecessor(self, request: HttpRequest) -> RegisteredCertificate | None:
        """The entry the add form registers a successor of (``?predecessor=``, or the posted value), if any."""
        source = request.POST if request.method == "POST" else request.GET
        pk = parse_primary_key(source.get("predecessor"))
        if pk is None:
            return None
        return RegisteredCertificate.objects.select_related("identity").filter(pk=pk).first()

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else self.change_readonly_fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """Besides ``?identity=<pk>`` and ``?predecessor=<pk>``, ``?from_failure=<pk>`` prefills the
        pasted PEM (and the identity, when known) from a refused certificate in the audit, for a user who
        may view the audit (the row's certificate, CN and identity are the audit's data, not the registry's)."""
        initial = super().get_changeform_initial_data(request)
        # Every primary key from the query string goes through parse_primary_key: a bad one is dropped with
        # a message (the form then starts empty there), never handed to a query or a widget (a 500).
        for field in ("identity", "predecessor"):
            if field in initial and parse_primary_key(initial[field]) is None:
                del initial[field]
                messages.warning(request, _("Ignored ?%(field)s=: not a record number.") % {"field": field})
        failure_text = request.GET.get("from_failure", "")
        failure_pk = parse_primary_key(failure_text)
        if failure_text and not request.user.has_perm(VIEW_AUDIT_PERMISSION):
            messages.warning(request, _("Prefilling from Authentication failures needs permission to view them."))
        elif failure_text:
            failure = AuthenticationFailure.objects.filter(pk=failure_pk).first() if failure_pk is not None else None
            if failure is None or not failure.certificate_pem:
                messages.warning(request, _("That row of Authentication failures holds no certificate to register."))
            else:
                initial["pem_text"] = failure.certificate_pem
                if failure.identity_id and not initial.get("identity"):
                    initial["identity"] = str(failure.identity_id)
                if failure.subject_cn and not initial.get("label"):
                    initial["label"] = failure.subject_cn
        predecessor_pk = parse_primary_key(initial.get("predecessor"))
        if predecessor_pk is not None and not initial.get("identity"):
            identity_pk = (
                RegisteredCertificate.objects.filter(pk=predecessor_pk).values_list("identity", flat=True).first()
            )
            if identity_pk is not None:
                initial["identity"] = str(identity_pk)
        return initial

    @method_decorator(sensitive_post_parameters(*SENSITIVE_FIELDS))
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        predecessor = self._chosen_predecessor(request)
        if predecessor is not None:
            extra_context = {"title": successor_heading(predecessor), **(extra_context or {})}
        return super().add_view(request, form_url, extra_context)

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        if change:
            return super().save_form(request, form, change)
        entry = form.register(by=request.user)  # through certauth.services, already saved
        for warning in getattr(form, "registration_warnings", ()):  # the trust policy refuses it today
            self.message_user(request, warning, messages.WARNING)
        return entry

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)

    # --- list ---------------------------------------------------------------------------------------
    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        return queryset.search(search_term), False

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 asks for the actions of a location (change list or change form) and deprecates overrides
        # without the parameter; 5.2 and 6.0 call get_actions(request) and know no such argument.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location)  # type: ignore[call-arg]
        # Deleting leaves no record of who stopped a certificate and why: revoke instead.  Deleting one
        # revoked entry (to register it again) stays possible from its page.
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting a revoked entry undoes its revocation (the thumbprint may be registered again, or an identity
        # rule may admit it anew): only superusers may, not whoever merely holds the delete permission.
        if obj is not None and obj.revoked_at is not None and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return can_revoke(request)

    @admin.display(description=_("thumbprint"), ordering="thumbprint_sha256")
    def thumbprint(self, entry: RegisteredCertificate) -> SafeString:
        return thumbprint_html(entry.thumbprint_sha256)

    @admin.display(description=_("status"))
    def status(self, entry: RegisteredCertificate) -> SafeString:
        return list_status_html(entry)

    @admin.display(description=_("validity"), ordering="not_after")
    def validity(self, entry: RegisteredCertificate) -> SafeString:
        return validity_html(entry)

    @admin.display(description=_("last used"), ordering="last_used_at")
    def last_used(self, entry: RegisteredCertificate) -> SafeString:
        return when_html(entry.last_used_at)

    @admin.display(description=_("subject CN"), ordering="subject_cn")
    def subject_cn_text(self, entry: RegisteredCertificate) -> str:
        return visible(entry.subject_cn)  # the certificate's text: bidi and C1 spelled out (Django escapes HTML)

    # --- detail -------------------------------------------------------------------------------------
    @admin.display(description=_("identity"))
    def identity_link(self, entry: RegisteredCertificate) -> SafeString:
        url = reverse("admin:certauth_certificateidentity_change", args=[entry.identity_id])
        return format_html('<a href="{}">{}</a>', url, entry.identity.name)

    @admin.display(description=_("SHA-256 thumbprint"))
    def thumbprint_full(self, entry: RegisteredCertificate) -> SafeString:
        return format_html(
            '<code class="certauth-thumbprint-full">{}</code><br><code>{}</code>',
            format_thumbprint(entry.thumbprint_sha256),
            entry.thumbprint_sha256,
        )

    @admin.display(description=_("alternative names"))
    def alternative_names(self, entry: RegisteredCertificate) -> SafeString | str:
        names = entry.subject_alternative_names or {}
        rows = [(kind.upper(), ", ".join(values)) for kind, values in names.items() if values]
        return format_html_join(LINE_BREAK, "{}: {}", rows) if rows else "—"

    @admin.display(description=_("predecessor and successors"))
    def rotation(self, entry: RegisteredCertificate) -> SafeString | str:
        """Both sides of a rotation with their last use, so the operator sees when the old one is idle."""
        related = [(_("replaces"), entry.predecessor)] if entry.predecessor else []
        related += [(_("replaced by"), successor) for successor in entry.successors.order_by("-created_at")]
        if not related:
            return "—"
        return format_html_join(
            LINE_BREAK,
            '{}: <a href="{}">{}</a> {} last used {}',
            (
                (
                    role,
                    entry_change_url(other),
                    thumbprint_html(other.thumbprint_sha256),
                    status_html(other),
                    when_html(other.last_used_at),
                )
                for role, other in related
            ),
        )

    @admin.display(description=_("certificate (PEM)"))
    def certificate(self, entry: RegisteredCertificate) -> SafeString | str:
        if not entry.certificate_pem:
            return "—"
        return format_html('<pre class="certauth-pem">{}</pre>', entry.certificate_pem)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> Any:
        context = {"certauth_can_revoke": can_revoke(request), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    # --- rotation and revocation --------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        def name(suffix: str) -> str:
            return f"{self.opts.app_label}_{self.opts.model_name}_{suffix}"

        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/successor/", wrap(self.successor_view), name=name("successor")),
            path("<path:object_id>/retire/", wrap(self.retire_view), name=name("retire")),
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=name("revoke")),
            *super().get_urls(),
        ]

    def successor_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The "add successor" flow: the registration form, preset to the same identity with this predecessor."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        entry = get_object_or_404(RegisteredCertificate, pk=object_id)
        query = urlencode({"identity": entry.identity_id, "predecessor": entry.pk})
        return HttpResponseRedirect(f"{reverse('admin:certauth_registeredcertificate_add')}?{query}")

    def retire_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self.revoke_view(request, object_id, initial_reason=RevocationReason.SUPERSEDED)

    def revoke_view(self, request: HttpRequest, object_id: str, initial_reason: str | None = None) -> HttpResponse:
        if not can_revoke(request):
            raise PermissionDenied
        entry = get_object_or_404(RegisteredCertificate.objects.select_related("identity"), pk=object_id)
        # A revoked entry accepts one change: its reason raised to key compromise (RegisteredCertificate.revoke).
        raising = entry.raises_to(RevocationReason.KEY_COMPROMISE)
        if entry.revoked_at is not None and not raising:
            self.message_user(request, _("This certificate is already revoked."), messages.WARNING)
            return HttpResponseRedirect(entry_change_url(entry))
        if request.method == "POST":
            form = RevocationForm(request.POST, raising=raising)
            if form.is_valid():
                reason, earlier = form.cleaned_data["reason"], entry.revocation_reason
                if not services.revoke(entry, reason, by=request.user):
                    # Someone revoked it meanwhile (the database decides, not the page loaded before).
                    self.message_user(request, _("This certificate is already revoked."), messages.WARNING)
                    return HttpResponseRedirect(entry_change_url(entry))
                if raising:
                    self.log_change(request, entry, f"Revocation reason raised from {earlier} to {reason}.")
                else:
                    self.log_change(request, entry, f"Revoked ({reason}).")
                self._report_revoked(request, 1, reason)
                return HttpResponseRedirect(entry_change_url(entry))
        else:
            initial = {"reason": initial_reason} if initial_reason and not raising else None
            form = RevocationForm(initial=initial, raising=raising)
        queryset = RegisteredCertificate.objects.filter(pk=entry.pk)
        return self._confirmation(
            request, queryset, form, action=None, retire=initial_reason is not None and not raising
        )

    @admin.action(description=_("Revoke selected certificates…"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[RegisteredCertificate]) -> Any:
        return self._bulk_revoke(request, queryset, "revoke_selected", initial_reason=None)

    @admin.action(description=_("Retire selected certificates (revoke as superseded)…"), permissions=["revoke"])
    def retire_selected(self, request: HttpRequest, queryset: QuerySet[RegisteredCertificate]) -> Any:
        return self._bulk_revoke(request, queryset, "retire_selected", initial_reason=RevocationReason.SUPERSEDED)

    def _bulk_revoke(
        self, request: HttpRequest, queryset: QuerySet[RegisteredCertificate], action: str, initial_reason: str | None
    ) -> Any:
        # Nothing live selected, but entries revoked for another reason: only key compromise changes them.
        raising = not queryset.filter(revoked_at__isnull=True).exists() and _raisable(queryset).exists()
        if request.POST.get("post") == "yes":
            form = RevocationForm(request.POST, raising=raising)
            if form.is_valid():
                reason = form.cleaned_data["reason"]
                if reason == RevocationReason.KEY_COMPROMISE:
                    for entry in _raisable(queryset):  # admin history says whose reason was raised
                        self.log_change(
                            request, entry, f"Revocation reason raised from {entry.revocation_reason} to {reason}."
                        )
                changed = services.revoke_many(queryset, reason, by=request.user)
                self._report_revoked(request, changed, reason)
                return None  # back to the change list
        else:
            initial = {"reason": initial_reason} if initial_reason and not raising else None
            form = RevocationForm(initial=initial, raising=raising)
        return self._confirmation(request, queryset, form, action=action, retire=initial_reason is not None)

    def _report_revoked(self, request: HttpRequest, changed: int, reason: str) -> None:
        self.message_user(
            request,
            ngettext(
                "Revoked %(count)d certificate (%(reason)s): it is refused from the next request.",
                "Revoked %(count)d certificates (%(reason)s): they are refused from the next request.",
                changed,
            )
            % {"count": changed, "reason": RevocationReason(reason).label},
            messages.SUCCESS if changed else messages.INFO,
        )

    def _confirmation(
        self,
        request: HttpRequest,
        queryset: QuerySet[RegisteredCertificate],
        form: RevocationForm,
        *,
        action: str | None,
        retire: bool,
    ) -> TemplateResponse:
        live = queryset.filter(revoked_at__isnull=True)
        raisable = _raisable(queryset).count()
        if not live.exists() and raisable:
            live = _raisable(queryset)  # the confirmation lists what key compromise would change
        total = live.count()
        entries = list(
            live.select_related("identity").prefetch_related(
                Prefetch("successors", queryset=RegisteredCertificate.objects.order_by("-created_at"))
            )[:CONFIRMATION_LIST_LIMIT]
        )
        now = timezone.now()
        rows = [
            {
                "entry": entry,
                # The certificate's CN and the identity's name spelled out (bidi and C1: ``visible``).
                "identity": visible(entry.identity.name),
                "subject_cn": visible(entry.subject_cn),
                "recent_use": recent_use_warning(entry, now) if retire else "",
                "thumbprint": thumbprint_html(entry.thumbprint_sha256),
                "status": status_html(entry),
                "last_used": when_html(entry.last_used_at),
                "successors": [
                    {
                        "thumbprint": thumbprint_html(s.thumbprint_sha256),
                        "status": status_html(s),
                        "last_used": when_html(s.last_used_at),
                        "usable": s.status() in ("valid", "expiring"),
                    }
                    for s in entry.successors.all()
                ],
            }
            for entry in entries
        ]
        title = _("Retire certificates") if retire else _("Revoke certificates")
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "media": self.media + form.media,
            "form": form,
            "rows": rows,
            "recent_use": [row["recent_use"] for row in rows if row["recent_use"]],
            "total": total,
            "raisable": raisable,
            "more": max(total - len(rows), 0),
            "retire": retire,
            "action": action,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "cancel_url": (
                entry_change_url(entries[0])
                if action is None and entries
                else reverse("admin:certauth_registeredcertificate_changelist")
            ),
        }
        return TemplateResponse(request, "admin/certauth/registeredcertificate/revoke_confirmation.html", context)
