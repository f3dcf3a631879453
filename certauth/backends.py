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

    # A session begun with this backend (``login(request, authenticate(request))``) is read back here on every
    # request: the same rule as a certificate's linked user, so such a session never acts as an inactive,
    # staff or superuser account, whatever the user became since the login.
    def get_user(self, user_id: Any) -> Any:
        return _may_act_as(get_user_model()._default_manager.filter(pk=user_id).first())

    async def aget_user(self, user_id: Any) -> Any:
        return _may_act_as(await get_user_model()._default_manager.filter(pk=user_id).afirst())

    # Certificates grant API scopes, not Django model permissions.
    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    async def ahas_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return False

    async def ahas_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return False


def _may_act_as(user: Any) -> Any:
    if user is None or not getattr(user, "is_active", True):
        return None
    return None if getattr(user, "is_staff", False) or getattr(user, "is_superuser", False) else user
