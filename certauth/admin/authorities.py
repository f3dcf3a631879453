"""Trusted authorities (CAs) in the Django admin: upload or paste a CA certificate (PEM or DER), enable or
disable it, attach a CRL (upload, or a URL that ``certauth crl-refresh`` fetches).  The certificate's facts
are filled in from the certificate and shown read-only.  The parsing and checks live in
``certauth.trust`` and ``certauth.authorities``; this module only wires them to the admin."""

from __future__ import annotations

import json
from typing import Any

from cryptography import x509
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.db import DatabaseError, models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import grants
from ..authorities import (
    CRL_FIELDS,
    apply_crl,
    fill_authority,
    proxy_bundle_report,
    refresh_crl,
    refusal_message,
    save_without_crl,
    stale_crls,
    store_crl,
)
from ..certificates import format_thumbprint, thumbprint_of, visible
from ..models import TrustedAuthority
from ..proxybundle import describe_report
from ..reasons import CertificateRefused
from ..trust import lint_authority, load_authority_certificate, parse_crl

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def _read(upload: Any) -> bytes:
    if upload.size > MAX_UPLOAD_BYTES:
        raise forms.ValidationError(_("The file is too large."))
    return bytes(upload.read())


# A CRL or OCSP URL typed without a scheme is http, as distribution points and responders are served (RFC 5280
# 4.2.1.13: https would need the certificates it is there to check).  Said explicitly: Django 5.2 assumes http
# and warns that 6.0 assumes https.  For the form on its own (Meta) and as the admin builds it (its own callback).
URL_FIELD_OPTIONS: dict[str, Any] = {"assume_scheme": "http"}


def _formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs = {**URL_FIELD_OPTIONS, **kwargs}
    return field.formfield(**kwargs)


class TrustedAuthorityForm(forms.ModelForm):
    certificate_file = forms.FileField(
        required=False, label=_("CA certificate file"), help_text=_("PEM or DER; a root or an intermediate CA.")
    )
    certificate_text = forms.CharField(
        required=False,
        label=_("or paste the CA certificate (PEM)"),
        widget=forms.Textarea(attrs={"rows": 6, "cols": 70, "spellcheck": "false"}),
    )
    crl_file = forms.FileField(
        required=False,
        label=_("CRL file"),
        help_text=_("PEM or DER, signed by this CA.  Used when REVOCATION_MODE is 'crl'."),
    )

    class Meta:
        model = TrustedAuthority
        fields = ["name", "is_enabled", "notes", "crl_url", "ocsp_url"]
        formfield_callback = _formfield
        help_texts = {
            "is_enabled": _(
                "A disabled authority is distrusted wherever it appears: from the next request, every "
                "certificate whose chain goes through it is refused, also when another authority above or "
                "below it is enabled."
            ),
            "crl_url": _("http(s) URL of this CA's CRL, fetched by `certauth crl-refresh` (cron or --loop)."),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new_certificate: x509.Certificate | None = None
        self.crl_data: bytes | None = None  # an uploaded CRL that verified; stored by save_model (store_crl)
        self.authority_warnings: list[str] = []  # lint_authority's warnings, shown once the authority is saved

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload, text = cleaned.get("certificate_file"), (cleaned.get("certificate_text") or "").strip()
        if upload and text:
            self.add_error("certificate_text", _("Upload a file or paste the certificate, not both."))
            return cleaned
        field = "certificate_file" if upload else "certificate_text"
        try:
            data = _read(upload) if upload else text.encode("utf-8", "replace")
        except forms.ValidationError as exc:
            self.add_error(field, exc)
            return cleaned
        if data:
            try:
                self.new_certificate = load_authority_certificate(data)
            except CertificateRefused as refused:
                self.add_error(field, refused.detail)
                return cleaned
            # The same check as `certauth authority add` (certauth.trust.lint_authority).
            problems = lint_authority(self.new_certificate, timezone.now())
            for problem in problems:
                if problem.severity == "refuse":
                    self.add_error(field, problem.text)
                else:
                    self.authority_warnings.append(problem.text)
            if self.errors:
                return cleaned
            duplicate = TrustedAuthority.objects.filter(thumbprint_sha256=thumbprint_of(self.new_certificate)).exclude(
                pk=self.instance.pk
            )
            if duplicate.exists():
                self.add_error(field, _("This CA certificate is already registered as another authority."))
        elif self.instance.pk is None:
            self.add_error("certificate_file", _("Upload or paste the CA certificate."))
        crl_upload = cleaned.get("crl_file")
        if crl_upload and not self.errors:
            try:
                issuer = self.new_certificate or load_authority_certificate(self.instance.certificate_pem.encode())
                data = _read(crl_upload)
                # On the instance for the form's and grants' checks; written by save_model through store_crl.
                apply_crl(self.instance, data, issuer)
                self.crl_data = data
            except forms.ValidationError as exc:
                self.add_error("crl_file", exc)
            except CertificateRefused as refused:
                self.add_error("crl_file", refusal_message(self.instance, refused.detail))
        return cleaned

    def save(self, commit: bool = True) -> TrustedAuthority:
        authority: TrustedAuthority = super().save(commit=False)
        if self.new_certificate is not None:
            fill_authority(authority, self.new_certificate)
        if commit and authority.pk is None:
            authority.save()
        elif commit:  # as TrustedAuthorityAdmin.save_model: the CRL only through store_crl (raises if refused)
            save_without_crl(authority)
            if self.crl_data is not None:
                store_crl(authority, self.crl_data)
        return authority


class CrlStateFilter(admin.SimpleListFilter):
    """The "stale" choice: past nextUpdate, or not refreshed (``certauth.authorities.stale_crls``, as the dashboard)."""

    title = _("CRL")
    parameter_name = "crl"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("stale", _("stale (past nextUpdate or not refreshed)"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TrustedAuthority]) -> QuerySet[TrustedAuthority]:
        if self.value() == "stale":
            return queryset.filter(pk__in=stale_crls().values("pk"))
        return queryset


@admin.register(TrustedAuthority)
class TrustedAuthorityAdmin(admin.ModelAdmin):
    form = TrustedAuthorityForm

    class Media:
        css = {"all": ["certauth/admin.css"]}

    formfield_overrides = {models.URLField: URL_FIELD_OPTIONS}
    list_display = ["name", "is_enabled", "subject_text", "not_after", "crl_status"]
    list_filter = ["is_enabled", CrlStateFilter]
    search_fields = ["name", "subject", "thumbprint_sha256"]
    actions = ["enable", "disable", "refresh_crl_now"]
    readonly_fields = [
        "thumbprint",
        "subject",
        "issuer",
        "not_before",
        "not_after",
        "crl_last_update",
        "crl_next_update",
        "crl_fetched_at",
        "crl_error",
        "crl_entries",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["name", "is_enabled", "notes"]}),
        (_("CA certificate"), {"fields": ["certificate_file", "certificate_text"]}),
        (_("Certificate facts"), {"fields": ["thumbprint", "subject", "issuer", "not_before", "not_after"]}),
        (
            _("Revocation list"),
            {
                "fields": [
                    "crl_url",
                    "crl_file",
                    "crl_last_update",
                    "crl_next_update",
                    "crl_fetched_at",
                    "crl_error",
                    "crl_entries",
                ]
            },
        ),
        (_("OCSP"), {"fields": ["ocsp_url"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description=_("SHA-256 thumbprint"))
    def thumbprint(self, obj: TrustedAuthority) -> SafeString | str:
        if not obj.thumbprint_sha256:
            return "-"
        return format_html("<code>{}</code>", format_thumbprint(obj.thumbprint_sha256))

    @admin.display(description=_("subject"), ordering="subject")
    def subject_text(self, obj: TrustedAuthority) -> str:
        return visible(obj.subject)  # the CA certificate's text: bidi and C1 spelled out (Django escapes HTML)

    @admin.display(description=_("CRL"))
    def crl_status(self, obj: TrustedAuthority) -> SafeString | str:
        if obj.crl_error:
            return str(_("error"))
        if obj.crl_next_update is None:
            return "-" if obj.crl_last_update is None else str(_("loaded"))
        late = obj.crl_next_update <= timezone.now()
        return format_html(  # two lines at most: what, then when
            '<span class="certauth-nowrap">{}</span> <span class="certauth-nowrap">{} UTC</span>',
            _("stale since") if late else _("next update"),
            f"{obj.crl_next_update:%Y-%m-%d %H:%M}",
        )

    @admin.display(description=_("Revoked serials in the CRL"))
    def crl_entries(self, obj: TrustedAuthority) -> str:
        if not obj.crl_der:
            return "-"
        try:
            issuer = load_authority_certificate(obj.certificate_pem.encode())
            return str(len(parse_crl(bytes(obj.crl_der), issuer)))
        except CertificateRefused as refused:
            return refused.detail

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not obj.is_enabled and not grants.can_trust(request.user):
            fields.append("is_enabled")  # re-enabling is trusting the CA anew (certauth.grants)
        if obj is not None and not grants.can_trust(request.user):
            # Where revocations are read from decides which are seen, and is a URL the server fetches.
            fields.extend(grants.REVOCATION_SOURCE_FIELDS)
        return fields

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not grants.can_trust(request.user):
            # Replacing the CA certificate is trusting a new CA; save_model refuses a forged upload too.
            fieldsets = [fieldset for fieldset in fieldsets if "certificate_file" not in fieldset[1]["fields"]]
        return fieldsets

    def save_model(self, request: HttpRequest, obj: TrustedAuthority, form: Any, change: bool) -> None:
        # The form's declared fields (certificate_file, certificate_text) are read from the POST even when the
        # fieldset hiding them is left out: the permission is checked on what is about to be saved.
        replaces = change and getattr(form, "new_certificate", None) is not None
        if change and getattr(form, "crl_data", None) is None:
            obj.refresh_from_db(fields=list(CRL_FIELDS))  # no CRL in this form: the one held now, not as first read
        grants.check_authority_change(obj, replaces_certificate=replaces, by=request.user)
        for warning in getattr(form, "authority_warnings", ()):  # accepted, but worth knowing (lint_authority)
            self.message_user(request, warning, messages.WARNING)
        form.certauth_revocation_sources = grants.describe_revocation_source_change(obj)  # construct_change_message
        if replaces:
            stored = TrustedAuthority.objects.filter(pk=obj.pk).values_list("thumbprint_sha256", flat=True).first()
            form.certauth_replaced_thumbprint = stored or ""  # read by construct_change_message
        if not change:
            super().save_model(request, obj, form, change)  # a new row: nobody else wrote a CRL onto it
            self._warn_about_proxy_bundle(request)
            return
        # The CRL columns as this request read them may be stale (crl-refresh, another administrator): they are
        # never written back; an uploaded CRL is checked again against the row as stored now.
        save_without_crl(obj)
        if getattr(form, "crl_data", None) is not None:
            try:
                store_crl(obj, form.crl_data)
            except CertificateRefused as refused:
                self.message_user(request, refusal_message(obj, refused.detail), messages.ERROR)
        self._warn_about_proxy_bundle(request)

    def _warn_about_proxy_bundle(self, request: HttpRequest) -> None:
        """After a change of what is trusted: when ``PROXY_CA_BUNDLE`` is set and no longer matches the enabled
        authorities (one added or enabled is missing from it, one disabled is still in it), say so and how to
        fix it: the proxy decides first, and would refuse (or accept) what the admin now says otherwise."""
        try:
            report = proxy_bundle_report()
        except DatabaseError:
            return
        if report is None or report.ok:
            return
        for line in describe_report(report):
            self.message_user(request, f"{line[:1].upper()}{line[1:]}.", messages.WARNING)

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: Any, add: bool = False) -> Any:
        """A replaced CA certificate or a changed CRL / OCSP URL is a new trust: the history names the old and
        the new thumbprint or URL."""
        message = super().construct_change_message(request, form, formsets, add)
        details = []
        old = getattr(form, "certauth_replaced_thumbprint", None)
        if old is not None:
            new = format_thumbprint(form.instance.thumbprint_sha256)
            details.append(f"certificate: {format_thumbprint(old)} → {new}")
        if getattr(form, "certauth_revocation_sources", ""):
            details.append(form.certauth_revocation_sources)
        if not details:
            return message
        summary = LogEntry(change_message=json.dumps(message)).get_change_message()
        changed = "; ".join(details)
        return f"{summary} {changed}." if summary else f"{changed}."

    def has_enable_permission(self, request: HttpRequest) -> bool:
        return grants.can_trust(request.user)

    @admin.action(description=_("Enable selected authorities"), permissions=["enable"])
    def enable(self, request: HttpRequest, queryset: QuerySet[TrustedAuthority]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description=_("Disable selected authorities"), permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[TrustedAuthority]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[TrustedAuthority], enabled: bool) -> None:
        changed = 0
        for authority in queryset.filter(is_enabled=not enabled):
            authority.is_enabled = enabled
            # The action's own permission already gates it; the shared check keeps one rule for every caller.
            grants.check_authority_change(authority, replaces_certificate=False, by=request.user)
            authority.save(update_fields=["is_enabled", "updated_at"])  # post_save bumps the registry generation
            self.log_change(request, authority, "Enabled." if enabled else "Disabled.")
            changed += 1
        self.message_user(
            request, ngettext("%d authority updated.", "%d authorities updated.", changed) % changed, messages.SUCCESS
        )
        if changed:
            self._warn_about_proxy_bundle(request)

    @admin.action(description=_("Fetch the CRL from its URL now"), permissions=["change"])
    def refresh_crl_now(self, request: HttpRequest, queryset: QuerySet[TrustedAuthority]) -> None:
        for authority in queryset.exclude(crl_url=""):
            result = refresh_crl(authority)
            self.message_user(
                request, f"{result.authority}: {result.message}", messages.SUCCESS if result.ok else messages.ERROR
            )
