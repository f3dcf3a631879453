"""*Authentication failures* (the refusal audit) in the Django admin: read-only, searchable, with a chart of
refusals per reason over the last 24 hours and 7 days, and a one-click way from an unknown certificate in the
log to its registration, offered only where registering helps (``certauth.audit.registration_obstacle``)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from .. import audit, services
from ..certificates import format_thumbprint, visible
from ..models import AuthenticationFailure, RegisteredCertificate
from ..reasons import Reason

SUMMARY_HOURS = 24
#: The "seen" filter's choices: query value -> (label, hours).
SEEN_WINDOWS = {"1h": (_("last hour"), 1), "24h": (_("last 24 hours"), 24), "7d": (_("last 7 days"), 7 * 24)}
#: The chart's windows: (legend, "seen" filter value); the first is also the summary's (SUMMARY_HOURS).
CHART_WINDOWS = (("24 h", "24h"), ("7 d", "7d"))
#: Subjects and paths longer than this are cut in the list (whole in the tooltip and on the row's page).
CLIPPED_LENGTH = 60
CHART_LABEL_WIDTH, CHART_BAR_WIDTH, CHART_BAR_HEIGHT, CHART_GAP, CHART_TOP = 220, 300, 13, 8, 24
DETAIL_FIELDS = (
    "registration",
    "reason",
    "detail_text",
    "count",
    "first_seen",
    "last_seen",
    "identity",
    "thumbprint_sha256",
    "aggregated_by_address",
    "last_thumbprint_sha256",
    "subject_text",
    "issuer_text",
    "serial_number",
    "not_after",
    "client_ip",
    "proxy_ip",
    "method",
    "path_text",
    "user_agent_text",
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


class SeenFilter(admin.SimpleListFilter):
    """Rows last seen within the last hour, 24 hours or 7 days: what the dashboard and the chart link to."""

    title = _("last seen")
    parameter_name = "seen"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(value, label) for value, (label, _hours) in SEEN_WINDOWS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuthenticationFailure]) -> QuerySet[Any]:
        window = SEEN_WINDOWS.get(str(self.value()))
        if window is None:
            return queryset
        return queryset.filter(last_seen__gte=timezone.now() - dt.timedelta(hours=window[1]))


def reason_chart_svg(windows: list[tuple[str, str, list[dict[str, Any]]]]) -> SafeString:
    """Horizontal bars, one group per reason, one bar per window (``(label, seen filter value, reason_counts)``,
    the widest window last), each labelled with its count and linked to the rows it counts.  Drawn on the
    server, every text escaped (a stored reason is a database string); the bars only show proportions."""
    counts: dict[str, list[int]] = {}
    for position, (_label, _seen, items) in enumerate(windows):
        for item in items:
            counts.setdefault(str(item["reason"]), [0] * len(windows))[position] = int(item["refusals"])
    if not counts:
        return format_html('<p class="certauth-chart-empty">{}</p>', _("No refusals."))
    reasons = sorted(counts, key=lambda reason: (-counts[reason][-1], reason))
    peak = max(max(values) for values in counts.values())
    group_height = CHART_BAR_HEIGHT * len(windows) + CHART_GAP
    width, height = CHART_LABEL_WIDTH + CHART_BAR_WIDTH + 80, CHART_TOP + group_height * len(reasons)
    parts = [
        format_html(
            '<rect x="{}" y="4" width="10" height="10" class="certauth-bar--{}"></rect><text x="{}" y="13">{}</text>',
            CHART_LABEL_WIDTH + 80 * position,
            position,
            CHART_LABEL_WIDTH + 80 * position + 14,
            label,
        )
        for position, (label, _seen, _items) in enumerate(windows)
    ]
    for index, reason in enumerate(reasons):
        top = CHART_TOP + index * group_height
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="end" class="certauth-chart-reason">{}</text>',
                CHART_LABEL_WIDTH - 8,
                top + CHART_BAR_HEIGHT,
                visible(reason),
            )
        )
        for position, (label, seen, _items) in enumerate(windows):
            value = counts[reason][position]
            length = max(round(CHART_BAR_WIDTH * value / peak), 1 if value else 0)
            y = top + position * CHART_BAR_HEIGHT
            parts.append(
                format_html(
                    '<a href="?{}" data-reason="{}" data-window="{}" data-count="{}">'
                    "<title>{}: {} in the last {}</title>"
                    '<rect x="{}" y="{}" width="{}" height="{}" class="certauth-bar--{}"></rect>'
                    '<text x="{}" y="{}" class="certauth-chart-count">{}</text></a>',
                    urlencode({"reason": reason, "seen": seen}),
                    visible(reason),
                    seen,
                    value,
                    visible(reason),
                    value,
                    label,
                    CHART_LABEL_WIDTH,
                    y,
                    length,
                    CHART_BAR_HEIGHT - 2,
                    position,
                    CHART_LABEL_WIDTH + length + 4,
                    y + CHART_BAR_HEIGHT - 3,
                    value,
                )
            )
    return format_html(
        '<svg class="certauth-chart" role="img" aria-labelledby="certauth-chart-title" viewBox="0 0 {} {}" '
        'width="{}" height="{}" xmlns="http://www.w3.org/2000/svg"><title id="certauth-chart-title">{}</title>{}</svg>',
        width,
        height,
        width,
        height,
        _("Refusals per reason"),
        format_html_join("", "{}", ((part,) for part in parts)),
    )


LINE_BREAK = mark_safe("<br>")


def _visible_field(name: str, label: Any) -> Any:
    """A read-only field for the row's page showing the client's text through ``visible`` (Django escapes HTML;
    bidi and C1 characters would reorder or hide it)."""

    @admin.display(description=label)
    def shown(self: Any, obj: AuthenticationFailure) -> str:
        return visible(getattr(obj, name)) or "-"

    return shown


def clipped(text: str, length: int = CLIPPED_LENGTH) -> str:
    """``text`` cut to ``length`` characters with an ellipsis: the list shows the start, the page the whole."""
    return text if len(text) <= length else f"{text[: length - 1]}…"


def breakable_html(text: str, separators: str) -> SafeString:
    """``text`` made visible and escaped, with a line-break opportunity after each of ``separators`` (``_`` in
    reason codes, ``:`` in IPv6 addresses, ``/`` in paths): long values wrap where they are read, not mid-word."""
    pieces = re.split(f"(?<=[{re.escape(separators)}])", visible(text))
    return format_html_join(mark_safe("<wbr>"), "{}", ((piece,) for piece in pieces if piece))


def registration_url(failure: AuthenticationFailure) -> str:
    """The registry's add form, prefilled from this row's captured certificate."""
    return reverse("admin:certauth_registeredcertificate_add") + f"?from_failure={failure.pk}"


@admin.register(AuthenticationFailure)
class AuthenticationFailureAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": ["certauth/admin.css"]}

    # Six columns fit a 1366 px screen with Django's navigation sidebar and the filters open: the certificate
    # (subject CN, thumbprint, identity) and the client (IP address, path) each share one column.
    list_display = ["seen", "reason_code", "count", "certificate", "client", "register_link"]
    list_display_links = ["seen"]
    list_filter = [ReasonFilter, SeenFilter]
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuthenticationFailure]:
        # One subquery instead of a lookup per row: is the captured certificate registered by now?
        registered = RegisteredCertificate.objects.filter(thumbprint_sha256=OuterRef("thumbprint_sha256"))
        return super().get_queryset(request).annotate(certauth_registered=Exists(registered))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return DETAIL_FIELDS if self.has_register_permission(request) else DETAIL_FIELDS[1:]

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))
        return shown if self.has_register_permission(request) else [c for c in shown if c != "register_link"]

    detail_text = _visible_field("detail", _("detail"))
    subject_text = _visible_field("subject", _("subject"))
    issuer_text = _visible_field("issuer", _("issuer"))
    path_text = _visible_field("path", _("path"))
    user_agent_text = _visible_field("user_agent", _("user agent"))

    # --- columns --------------------------------------------------------------------------------------

    @admin.display(description=_("last seen"), ordering="last_seen")
    def seen(self, obj: AuthenticationFailure) -> SafeString:
        return format_html(
            '<time datetime="{}"><span class="certauth-nowrap">{}</span><br>{}</time>',
            obj.last_seen.isoformat(),
            f"{obj.last_seen:%Y-%m-%d}",
            f"{obj.last_seen:%H:%M}",
        )

    @admin.display(description=_("reason"), ordering="reason")
    def reason_code(self, obj: AuthenticationFailure) -> SafeString:
        return breakable_html(obj.reason, "_")

    @admin.display(description=_("subject CN · thumbprint · identity"), ordering="subject_cn")
    def certificate(self, obj: AuthenticationFailure) -> SafeString | str:
        lines = [
            format_html(
                '<span title="{}">{}</span>', visible(obj.subject), breakable_html(clipped(obj.subject_cn), ".-@")
            )
            if obj.subject_cn
            else "",
            self.short_thumbprint(obj) if obj.thumbprint_sha256 else "",
            self.identity_link(obj) if obj.identity_id else "",
        ]
        return format_html_join(LINE_BREAK, "{}", ((line,) for line in lines if line)) or "-"

    @admin.display(description=_("client IP · path"), ordering="client_ip")
    def client(self, obj: AuthenticationFailure) -> SafeString | str:
        lines = [
            breakable_html(obj.client_ip, ":.") if obj.client_ip else "",
            format_html('<span title="{}">{}</span>', visible(obj.path), breakable_html(clipped(obj.path), "/-"))
            if obj.path
            else "",
        ]
        return format_html_join(LINE_BREAK, "{}", ((line,) for line in lines if line)) or "-"

    @admin.display(description=_("identity"), ordering="identity__name")
    def identity_link(self, obj: AuthenticationFailure) -> str:
        identity = obj.identity
        if identity is None:
            return "-"
        url = reverse("admin:certauth_certificateidentity_change", args=[identity.pk])
        return format_html('<a href="{}">{}</a>', url, breakable_html(identity.name, "-_."))

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
        if audit.registration_obstacle(obj, timezone.now(), registered=getattr(obj, "certauth_registered", None)):
            return ""
        return format_html(
            '<a class="certauth-register-link" href="{}">{}</a>', registration_url(obj), _("Register this certificate")
        )

    @admin.display(description=_("registration"))
    def registration(self, obj: AuthenticationFailure) -> str:
        """On the row's own page: the link, or why registering would not help."""
        obstacle = audit.registration_obstacle(
            obj, timezone.now(), registered=getattr(obj, "certauth_registered", None)
        )
        if obstacle:
            return format_html('<span class="certauth-register-obstacle">{}</span>', obstacle)
        return format_html(
            '<a class="certauth-register-link" href="{}">{}</a>', registration_url(obj), _("Register this certificate")
        )

    # --- search ---------------------------------------------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuthenticationFailure], search_term: str
    ) -> tuple[QuerySet[AuthenticationFailure], bool]:
        indexed = audit.search_filter(search_term)
        if indexed is not None:
            return queryset.filter(indexed), False
        return super().get_search_results(request, queryset, search_term)

    # --- the chart: refusals per reason, 24 hours and 7 days ----------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        now = timezone.now()
        windows = [
            (label, seen, audit.reason_counts(now - dt.timedelta(hours=SEEN_WINDOWS[seen][1])))
            for label, seen in CHART_WINDOWS
        ]
        counts = windows[0][2]
        context = {
            "reason_summary": counts,
            "reason_summary_total": sum(item["refusals"] for item in counts),
            "reason_summary_hours": SUMMARY_HOURS,
            "reason_summary_week_total": sum(item["refusals"] for item in windows[-1][2]),
            "reason_chart": reason_chart_svg(windows),
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
        obstacle = audit.registration_obstacle(captured[0], timezone.now(), registered=False)
        if obstacle:
            self.message_user(request, obstacle, messages.WARNING)
            return None
        return HttpResponseRedirect(registration_url(captured[0]))
