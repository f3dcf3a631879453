"""The refusal audit in the Django admin: read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ..models import AuthenticationFailure


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
