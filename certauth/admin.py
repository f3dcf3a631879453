"""The registry and the refusal audit in the Django admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AuthenticationFailure, CertificateIdentity, RegisteredCertificate, TrustedAuthority


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


@admin.register(TrustedAuthority)
class TrustedAuthorityAdmin(admin.ModelAdmin):
    list_display = ["name", "is_enabled", "subject", "not_after"]
    list_filter = ["is_enabled"]


@admin.register(AuthenticationFailure)
class AuthenticationFailureAdmin(admin.ModelAdmin):
    list_display = ["last_seen", "reason", "count", "identity", "subject_cn", "client_ip", "path"]
    list_filter = ["reason"]
    date_hierarchy = "last_seen"
    search_fields = ["thumbprint_sha256", "subject", "client_ip"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)
