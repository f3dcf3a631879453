"""The refusal audit in the Django admin: read-only, searchable, with a 24-hour summary per reason and a
one-click way from an unknown certificate in the log to its registration."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .. import audit, services
from ..certificates import format_thumbprint
from ..models import AuthenticationFailure, RegisteredCertificate
from ..reasons import Reason

SUMMARY_HOURS = 24
DETAIL_FIELDS = (
    "reason",
    "detail",
    "count",
    "first_seen",
    "last_seen",
    "identity",
    "thumbprint_sha256",
    "aggregated_by_address",
    "last_thumbprint_sha256",
    "subject",
    "issuer",
    "serial_number",
    "not_after",
    "client_ip",
    "proxy_ip",
    "method",
    "path",
    "user_agent",
    "certificate_pem",
)


class ReasonFilter(admin.SimpleListFilter):
    """Every reason code, from the enumeration: no ``SELECT DISTINCT`` over a million audit rows."""

    title = _("reason")
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(reason.value, reason.value) for reason in Reason]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuthenticationFailure]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(reason=value) if value else queryset


def registration_url(failure: AuthenticationFailure) -> str:
    """The registry's add form, prefilled from this row's captured certificate."""
    return reverse("admin:certauth_registeredcertificate_add") + f"?from_failure={failure.pk}"


@admin.register(AuthenticationFailure)
class AuthenticationFailureAdmin(admin.ModelAdmin):
    list_display = [
        "last_seen",
        "reason",
        "count",
        "identity_link",
        "short_thumbprint",
        "subject_cn",
        "client_ip",
        "path",
        "register_link",
    ]
    list_filter = [ReasonFilter]
    list_select_related = ["identity"]
    date_hierarchy = "last_seen"
    search_fields = ["subject", "subject_cn", "client_ip"]
    search_help_text = _("A thumbprint in any spelling (or 8+ hex digits of one), an IP address, or part of a subject.")
    show_full_result_count = False
    actions = ["register_certificate"]
    fields = DETAIL_FIELDS
    readonly_fields = DETAIL_FIELDS

    # --- read-only ------------------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_register_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("certauth.add_registeredcertificate"))

    # --- columns --------------------------------------------------------------------------------------

    @admin.display(description=_("identity"), ordering="identity__name")
    def identity_link(self, obj: AuthenticationFailure) -> str:
        identity = obj.identity
        if identity is None:
            return "-"
        url = reverse("admin:certauth_certificateidentity_change", args=[identity.pk])
        return format_html('<a href="{}">{}</a>', url, identity.name)

    @admin.display(description=_("thumbprint"), ordering="thumbprint_sha256")
    def short_thumbprint(self, obj: AuthenticationFailure) -> str:
        if not obj.thumbprint_sha256:
            return "-"
        # The first 8 bytes identify a certificate at a glance; the full value is in the tooltip and on
        # the detail page, and searching for either spelling finds the row.
        if obj.aggregated_by_address and obj.last_thumbprint_sha256 not in ("", obj.thumbprint_sha256):
            # Refusals of several certificates from one address: the first one seen stands for them.
            return format_html(
                '<span title="{}"><code>{}…</code> {}</span>',
                format_thumbprint(obj.thumbprint_sha256),
                format_thumbprint(obj.thumbprint_sha256[:16]),
                _("and others from this address"),
            )
        return format_html(
            '<span title="{}"><code>{}…</code></span>',
            format_thumbprint(obj.thumbprint_sha256),
            format_thumbprint(obj.thumbprint_sha256[:16]),
        )

    @admin.display(description=_("register"))
    def register_link(self, obj: AuthenticationFailure) -> str:
        if not obj.certificate_pem:
            return ""
        return format_html('<a href="{}">{}</a>', registration_url(obj), _("Register this certificate"))

    # --- search ---------------------------------------------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuthenticationFailure], search_term: str
    ) -> tuple[QuerySet[AuthenticationFailure], bool]:
        indexed = audit.search_filter(search_term)
        if indexed is not None:
            return queryset.filter(indexed), False
        return super().get_search_results(request, queryset, search_term)

    # --- the 24-hour summary --------------------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        since = timezone.now() - dt.timedelta(hours=SUMMARY_HOURS)
        counts = audit.reason_counts(since)
        context = {
            "reason_summary": counts,
            "reason_summary_total": sum(item["refusals"] for item in counts),
            "reason_summary_hours": SUMMARY_HOURS,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    # --- onboarding from the log ----------------------------------------------------------------------

    @admin.action(description=_("Register this certificate"), permissions=["register"])
    def register_certificate(
        self, request: HttpRequest, queryset: QuerySet[AuthenticationFailure]
    ) -> HttpResponseRedirect | None:
        captured = [failure for failure in queryset[:2] if failure.certificate_pem]
        if queryset.count() != 1 or len(captured) != 1:
            self.message_user(
                request,
                _("Select exactly one row whose certificate was captured (an unknown certificate from a proxy)."),
                messages.WARNING,
            )
            return None
        existing = (
            RegisteredCertificate.objects.filter(thumbprint_sha256=captured[0].thumbprint_sha256)
            .select_related("identity")
            .first()
        )
        if existing is not None:  # the registration form's words (certauth.services), revoked or not
            self.message_user(request, services.duplicate_message(existing), messages.WARNING)
            return None
        return HttpResponseRedirect(registration_url(captured[0]))
