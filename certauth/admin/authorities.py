"""Trusted authorities (CAs) in the Django admin."""

from __future__ import annotations

from django.contrib import admin

from ..models import TrustedAuthority


@admin.register(TrustedAuthority)
class TrustedAuthorityAdmin(admin.ModelAdmin):
    list_display = ["name", "is_enabled", "subject", "not_after"]
    list_filter = ["is_enabled"]
