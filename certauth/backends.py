"""A Django authentication backend: ``django.contrib.auth.authenticate(request)`` (or ``await
aauthenticate(request)``) with no credentials returns the certificate's user (or ``CertificatePrincipal``)
when the request's certificate is accepted.  The async methods are native: ``aauthenticate`` answers a
warm certificate on the event loop (``certauth.authenticator.aevaluate``) and a password login without
touching the request's certificate at all, so ``django.contrib.auth.aauthenticate()`` works for the whole
site with this backend next to ``ModelBackend``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.http import HttpRequest

from .authenticator import aevaluate, evaluate


class ClientCertificateBackend(BaseBackend):
    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> Any:
        # Only the credential-less call is ours: a username/password login must never be answered
        # by whatever certificate header happens to be on that request.
        if request is None or credentials:
            return None
        outcome = evaluate(request)
        return outcome.user if outcome.ok else None

    async def aauthenticate(self, request: HttpRequest | None, **credentials: Any) -> Any:
        if request is None or credentials:
            return None
        outcome = await aevaluate(request)
        return outcome.user if outcome.ok else None

    def get_user(self, user_id: Any) -> Any:
        user_model = get_user_model()
        user = user_model._default_manager.filter(pk=user_id).first()
        return user if user is not None and getattr(user, "is_active", True) else None

    async def aget_user(self, user_id: Any) -> Any:
        user = await get_user_model()._default_manager.filter(pk=user_id).afirst()
        return user if user is not None and getattr(user, "is_active", True) else None

    # Certificates grant API scopes, not Django model permissions.
    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    async def ahas_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return False

    async def ahas_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return False
