"""What ``request.user`` and ``request.auth`` are after a successful certificate authentication."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .certificates import CertificateInfo
from .registry import IdentitySnapshot


@dataclass(frozen=True, slots=True)
class CertificateAuth:
    """``request.auth``: the identity and the facts of the certificate it presented (the counterpart of
    ASP.NET's claims)."""

    identity: IdentitySnapshot
    certificate: CertificateInfo
    entry_id: int | None

    @property
    def thumbprint(self) -> str:
        return self.certificate.thumbprint_sha256

    @property
    def subject(self) -> str:
        return self.certificate.subject

    @property
    def issuer(self) -> str:
        return self.certificate.issuer

    @property
    def serial_number(self) -> str:
        return self.certificate.serial_hex

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_after

    @property
    def subject_alternative_names(self) -> dict[str, list[str]]:
        return self.certificate.subject_alternative_names()

    @property
    def scopes(self) -> frozenset[str]:
        return self.identity.scopes

    def has_scope(self, scope: str) -> bool:
        return self.identity.has_scope(scope)


class CertificatePrincipal:
    """``request.user`` for an identity without a linked Django user.  Authenticated (so DRF's own
    ``IsAuthenticated`` works), never staff, holds no Django model permissions, cannot log in."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, identity: IdentitySnapshot) -> None:
        self.identity = identity

    @property
    def username(self) -> str:
        return self.identity.name

    def get_username(self) -> str:
        return self.identity.name

    def __str__(self) -> str:
        return self.identity.name

    def __repr__(self) -> str:
        return f"<CertificatePrincipal {self.identity.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CertificatePrincipal) and other.identity.id == self.identity.id

    def __hash__(self) -> int:
        return hash(("certauth", self.identity.id))

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def has_perms(self, perm_list: Any, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, module: str) -> bool:
        return False

    def get_all_permissions(self, obj: Any = None) -> set[str]:
        return set()

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("A certificate principal is not stored.")

    def delete(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("A certificate principal is not stored.")
