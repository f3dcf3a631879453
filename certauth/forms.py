"""Admin forms of the registry: register a certificate (pasted PEM, uploaded file, PKCS#12 bundle or
typed thumbprint) and choose a revocation reason.

The certificate is parsed by ``certauth.certificates`` and saved by ``certauth.services``; the form only
decides which input the operator gave and turns every failure into a form error.  A PKCS#12 private
key is decrypted by ``cryptography`` and dropped at once: it is never stored, returned or logged.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from django import forms
from django.contrib.admin import widgets as admin_widgets
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import services
from .certificates import CertificateInfo, describe, load_certificate, load_pkcs12_certificate
from .models import RegisteredCertificate, RevocationReason
from .reasons import CertificateRefused, Reason

# Re-exported: they moved to certauth.services with the registration checks.
from .services import duplicate_message as duplicate_message
from .services import policy_options as policy_options
from .services import registration_trust_store as registration_trust_store

MAX_UPLOAD_BYTES = 256 * 1024  # a certificate or PKCS#12 bundle is a few KB
CERTIFICATE_EXTENSIONS = (".pem", ".crt", ".cer", ".der")
PKCS12_EXTENSIONS = (".p12", ".pfx")
# Fields whose POSTed value Django's error reports must never show (a pasted key, a bundle password).
SENSITIVE_FIELDS = ("pem_text", "pkcs12_password")


def _unreadable(detail: str) -> CertificateRefused:
    return CertificateRefused(Reason.MALFORMED_CERTIFICATE, detail)


class RegistrationForm(forms.ModelForm):
    """Add a ``RegisteredCertificate`` from exactly one of: pasted PEM, uploaded certificate file,
    uploaded PKCS#12 bundle (+ password), or a typed thumbprint with its expiry date."""

    pem_text = forms.CharField(
        label=_("Paste a certificate (PEM)"),
        required=False,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 70, "spellcheck": "false", "class": "vLargeTextField"}),
        help_text=_("-----BEGIN CERTIFICATE----- … Only the public certificate: never paste a private key."),
    )
    certificate_file = forms.FileField(
        label=_("…or upload a file"),
        required=False,
        help_text=_(".pem, .crt, .cer or .der certificate; or a .p12/.pfx bundle with its password below."),
        widget=forms.ClearableFileInput(attrs={"accept": ",".join(CERTIFICATE_EXTENSIONS + PKCS12_EXTENSIONS)}),
    )
    pkcs12_password = forms.CharField(
        label=_("PKCS#12 password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_("Only for .p12/.pfx. The public certificate is kept; the private key is discarded unread."),
    )
    thumbprint = forms.CharField(
        label=_("…or type a SHA-256 thumbprint"),
        required=False,
        widget=forms.TextInput(attrs={"size": 100, "spellcheck": "false"}),
        help_text=_("Any spelling: AB:CD:…, ab cd …, or 64 hex digits. Needs the expiry date below."),
    )
    thumbprint_not_before = forms.SplitDateTimeField(
        label=_("Valid from"), required=False, widget=admin_widgets.AdminSplitDateTime
    )
    thumbprint_not_after = forms.SplitDateTimeField(
        label=_("Valid until"),
        required=False,
        widget=admin_widgets.AdminSplitDateTime,
        help_text=_("The certificate's notAfter (UTC). Required with a typed thumbprint."),
    )

    class Meta:
        model = RegisteredCertificate
        fields = ["identity", "label", "predecessor"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.certificate_info: CertificateInfo | None = None
        self.canonical_thumbprint: str | None = None
        self.registration_warnings: list[str] = []  # registration_problems' warnings, shown once saved

    # --- reading the one input given -------------------------------------------------------------
    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        pem = cleaned.get("pem_text") or ""
        upload: UploadedFile | None = cleaned.get("certificate_file")
        thumbprint = (cleaned.get("thumbprint") or "").strip()
        given = [
            name
            for name, value in (("pem_text", pem), ("certificate_file", upload), ("thumbprint", thumbprint))
            if value
        ]
        if not given:
            raise ValidationError(
                _("Give the certificate: paste its PEM, upload its file, or type its thumbprint."), code="required"
            )
        if len(given) > 1:
            raise ValidationError(
                _("Give the certificate one way only: a pasted PEM, an uploaded file or a typed thumbprint."),
                code="ambiguous",
            )
        try:
            if pem:
                self.certificate_info = describe(load_certificate(pem.encode("utf-8", "replace")))
            elif upload is not None:
                self.certificate_info = self._read_upload(upload, cleaned.get("pkcs12_password") or "")
        except CertificateRefused as exc:
            self.add_error(given[0], exc.detail)
            return cleaned
        check = services.check_registration(
            cleaned.get("identity"),
            self.certificate_info,
            thumbprint=thumbprint or None,
            not_after=cleaned.get("thumbprint_not_after"),
            not_before=cleaned.get("thumbprint_not_before"),
            predecessor=cleaned.get("predecessor"),
        )
        # The service's words on this form's fields; the warnings are shown once saved.
        fields = {"certificate": given[0], "not_after": "thumbprint_not_after", "not_before": "thumbprint_not_before"}
        for where, errors in check.errors.items():
            field = fields.get(where, where)
            for error in errors:
                self.add_error(field if field in self.fields else None, error)
        self.canonical_thumbprint = check.thumbprint
        self.registration_warnings = check.warnings
        return cleaned

    def _read_upload(self, upload: UploadedFile, password: str) -> CertificateInfo:
        if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
            raise _unreadable("The file is too large to be a certificate (at most 256 KB).")
        data = upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise _unreadable("The file is too large to be a certificate (at most 256 KB).")
        if not data.strip():
            raise _unreadable("The file is empty.")
        suffix = PurePath(upload.name or "").suffix.lower()
        if suffix in PKCS12_EXTENSIONS:
            certificate, _extra = load_pkcs12_certificate(data, password or None)
            return describe(certificate)
        try:
            return describe(load_certificate(data))
        except CertificateRefused:
            if suffix in CERTIFICATE_EXTENSIONS or not password:
                raise
        # An unknown extension with a password: perhaps a renamed PKCS#12 bundle.
        certificate, _extra = load_pkcs12_certificate(data, password)
        return describe(certificate)

    # --- saving -----------------------------------------------------------------------------------
    def register(self, *, by: Any = None) -> RegisteredCertificate:
        """Save through ``services.register`` (call only after ``is_valid()``): the checks of ``clean()`` again,
        in the transaction that writes."""
        if self.certificate_info is None and self.canonical_thumbprint is None:
            raise ValueError("register() needs a form that passed is_valid().")
        registration = services.register(
            self.cleaned_data["identity"],
            self.certificate_info,
            thumbprint=None if self.certificate_info else self.canonical_thumbprint,
            not_after=self.cleaned_data.get("thumbprint_not_after"),
            not_before=self.cleaned_data.get("thumbprint_not_before"),
            label=self.cleaned_data.get("label") or "",
            predecessor=self.cleaned_data.get("predecessor"),
            by=by,
        )
        self.registration_warnings = registration.warnings
        return registration.entry


class RevocationForm(forms.Form):
    """The reason chosen on the revocation confirmation page."""

    reason = forms.ChoiceField(
        label=_("Reason"),
        choices=RevocationReason.choices,
        widget=forms.RadioSelect,
        help_text=_("Recorded with the date and your user. Revocation cannot be undone."),
    )

    def __init__(self, *args: Any, raising: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if raising:
            # Already revoked for another reason: key compromise is the one change left (RegisteredCertificate.revoke).
            field = self.fields["reason"]
            assert isinstance(field, forms.ChoiceField)
            field.choices = [(RevocationReason.KEY_COMPROMISE.value, RevocationReason.KEY_COMPROMISE.label)]
            field.initial = RevocationReason.KEY_COMPROMISE
            field.help_text = _(
                "Already revoked: raising the reason to key compromise keeps the revocation date and refuses every "
                "other certificate for the same key (from any authority, by any rule)."
            )


class FirstCertificateForm(RegistrationForm):
    """The first certificate of an identity added in the same page ("Add certificate identity"): the
    registration form and its validation, unchanged, with the identity being created as its identity.  Left
    empty, nothing is registered (the identity may be matched by a rule, or get its certificate later)."""

    class Meta(RegistrationForm.Meta):
        fields = ["label"]


class ScopesWidget(forms.Widget):
    """Scopes as one or two lines: a checkbox per scope already used in the registry, and a text box for the
    others.  The form field still receives one space-separated string (``CertificateIdentity.scopes``), so
    the model's validation (``parse_scopes``) and the grant checks are unchanged."""

    template_name = "admin/certauth/widgets/scopes.html"
    #: Checkboxes shown at most; rarer scopes are typed (and shown in the text box when the identity has them).
    KNOWN_LIMIT = 12

    def __init__(self, known: list[str] | None = None, attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"class": "certauth-scopes-other", **(attrs or {})})
        self.known = list(known or [])[: self.KNOWN_LIMIT]

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        chosen = [part for part in re.split(r"[\s,]+", str(value or "")) if part]
        choices = list(dict.fromkeys(self.known))
        context["widget"]["choices"] = [
            {"value": scope, "checked": scope in chosen, "id": f"{context['widget']['attrs'].get('id', name)}_{index}"}
            for index, scope in enumerate(choices)
        ]
        context["widget"]["other"] = " ".join(scope for scope in chosen if scope not in choices)
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> str | None:
        typed = data.get(name)
        ticked = data.getlist(f"{name}_known") if hasattr(data, "getlist") else data.get(f"{name}_known") or []
        if typed is None and not ticked:
            return None
        return " ".join([*ticked, typed or ""]).strip()

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return name not in data and f"{name}_known" not in data


class PredecessorInput(forms.HiddenInput):
    """The predecessor on the "add a successor" page: kept as a hidden value and shown by name (label or
    thumbprint, identity, status, last use), never as a record number to be checked by hand."""

    is_hidden = False  # the row stays visible: it shows the predecessor

    def __init__(self, description: Any, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.description = description  # safe HTML, built by the admin from the entry

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> Any:
        return format_html(
            '{}<span class="certauth-predecessor">{}</span>',
            super().render(name, value, attrs, renderer),
            self.description,
        )

