"""The registry in the Django admin: identities and their certificates."""

from __future__ import annotations

from django.contrib import admin

from ..models import CertificateIdentity, RegisteredCertificate


class RegisteredCertificateInline(admin.TabularInline):
    model = RegisteredCertificate
    fk_name = "identity"
    extra = 0
    fields = [
        "thumbprint_sha256",
        "label",
        "subject_cn",
        "not_after",
        "revoked_at",
        "revocation_reason",
        "last_used_at",
    ]
    readonly_fields = ["subject_cn", "revoked_at", "revocation_reason", "last_used_at"]
    show_change_link = True


@admin.register(CertificateIdentity)
class CertificateIdentityAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "scopes", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "certificates__thumbprint_sha256", "certificates__subject_cn"]
    inlines = [RegisteredCertificateInline]
    raw_id_fields = ["user"]


@admin.register(RegisteredCertificate)
class RegisteredCertificateAdmin(admin.ModelAdmin):
    list_display = ["thumbprint_sha256", "identity", "subject_cn", "not_after", "revoked_at", "last_used_at"]
    list_select_related = ["identity"]
    search_fields = ["thumbprint_sha256", "subject_cn", "serial_number", "identity__name"]
    readonly_fields = ["last_used_at", "revoked_at", "revoked_by", "created_at", "created_by"]
    raw_id_fields = ["identity", "predecessor"]
