"""A Django authentication backend: ``django.contrib.auth.authenticate(request)`` with no credentials
returns the certificate's user (or ``CertificatePrincipal``) when the request's certificate is accepted."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest

from .authenticator import evaluate


class ClientCertificateBackend:
    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> Any:
        # Only the credential-less call is ours: a username/password login must never be answered
        # by whatever certificate header happens to be on that request.
        if request is None or credentials:
            return None
        outcome = evaluate(request)
        return outcome.user if outcome.ok else None

    def get_user(self, user_id: Any) -> Any:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        return user if getattr(user, "is_active", True) else None

    # Certificates grant API scopes, not Django model permissions.
    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return False
