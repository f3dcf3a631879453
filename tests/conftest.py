"""Shared fixtures: real certificates built with ``cryptography`` (via certauth.devpki) and a DRF
client that talks to the app the way nginx does."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import django
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from certauth import devpki

hypothesis_settings.register_profile(
    "quick", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile(
    "long", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck)
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


def django_deprecation_classes() -> list[type[Warning]]:
    """Every ``RemovedIn…``/``RemovedAfter…`` class of the installed Django, pending ones included (the names
    change with each release: 5.2 has ``RemovedInDjango60Warning``, 6.1 ``RemovedInDjango2028Warning``)."""
    from django.utils import deprecation

    found = {getattr(deprecation, name) for name in dir(deprecation) if name.startswith("Removed")}
    return sorted((c for c in found if isinstance(c, type) and issubclass(c, Warning)), key=lambda c: c.__name__)


# Whose Django deprecation warnings fail a test: the project's own code, and Django's frames, to which Django
# attributes some of them (the (name, address) ADMINS pairs warning points at django.core.mail).  One that a
# third-party package (DRF, drf-spectacular, pytest-django...) causes is reported, not fatal: a new Django
# must not turn the suite red for code this project does not own.  Settings are read before this hook runs:
# tests/test_compat.py loads project.settings under the same errors.
DEPRECATION_ORIGINS = r"(certauth|project|tests|bench|scripts|django)(\.|$)"


def pytest_configure(config: pytest.Config) -> None:
    for category in django_deprecation_classes():
        config.addinivalue_line(
            "filterwarnings", f"error::{category.__module__}.{category.__qualname__}:{DEPRECATION_ORIGINS}"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every hypothesis test is also marked ``fuzz``: ``make fuzz`` runs them all with the long profile."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.fuzz)


def admins(*addresses: str) -> list[Any]:
    """An ``ADMINS`` value for the installed Django: plain addresses from 6.0 on ((name, address) pairs are
    deprecated there), pairs on 5.2, which reads ``ADMINS`` only as pairs."""
    return list(addresses) if django.VERSION >= (6, 0) else [("Ops", address) for address in addresses]


def escaped(issued: devpki.Issued | bytes) -> str:
    """What nginx puts in ``$ssl_client_escaped_cert``."""
    pem = issued if isinstance(issued, bytes) else issued.cert_pem()
    return quote(pem.decode("ascii"), safe="")


@dataclass
class FixturePKI:
    root: devpki.Issued
    intermediate: devpki.Issued
    other_ca: devpki.Issued
    client: devpki.Issued
    client2: devpki.Issued
    stranger: devpki.Issued
    expired: devpki.Issued
    not_yet_valid: devpki.Issued
    server_usage: devpki.Issued
    self_signed: devpki.Issued
    via_intermediate: devpki.Issued
    from_other_ca: devpki.Issued

    def issue(self, common_name: str, **kwargs: Any) -> devpki.Issued:
        return devpki.issue_client(self.root, common_name, **kwargs)


@pytest.fixture(scope="session")
def pki() -> FixturePKI:
    now = dt.datetime.now(dt.UTC)
    root = devpki.make_ca("certauth test root")
    intermediate = devpki.make_ca("certauth test intermediate", issuer=root)
    other = devpki.make_ca("some other CA")
    return FixturePKI(
        root=root,
        intermediate=intermediate,
        other_ca=other,
        client=devpki.issue_client(root, "billing-service"),
        client2=devpki.issue_client(root, "billing-service-next"),
        stranger=devpki.issue_client(root, "stranger"),
        expired=devpki.issue_client(
            root, "old", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
        ),
        not_yet_valid=devpki.issue_client(
            root, "future", not_before=now + dt.timedelta(days=2), not_after=now + dt.timedelta(days=30)
        ),
        server_usage=devpki.issue_client(root, "a-server", eku=("server_auth",)),
        self_signed=devpki.self_signed_client("selfie"),
        via_intermediate=devpki.issue_client(intermediate, "via-intermediate"),
        from_other_ca=devpki.issue_client(other, "foreign"),
    )


@pytest.fixture(autouse=True)
def _fresh_certauth_state() -> Any:
    """Each test starts with empty per-worker caches (they are process-wide by design)."""
    from certauth import audit, authenticator
    from certauth.registry import registry, reset_last_used_memory

    registry.invalidate()
    reset_last_used_memory()
    # A refusal recorded outside a request in a previous test's transaction must not land in this one.
    audit.discard_pending()
    authenticator._config = None
    yield
    registry.invalidate()


class CertClient:
    """A DRF test client that sends what nginx sends: the escaped certificate and the verify verdict,
    from a trusted proxy address unless told otherwise."""

    def __init__(self) -> None:
        from rest_framework.test import APIClient

        self.client = APIClient()

    def request(
        self,
        method: str,
        path: str,
        cert: devpki.Issued | str | None = None,
        *,
        verify: str | None = "SUCCESS",
        remote: str = "127.0.0.1",
        client_ip: str | None = "203.0.113.7",
        data: Any = None,
        **extra: Any,
    ) -> Any:
        headers: dict[str, Any] = {"REMOTE_ADDR": remote}
        if cert is not None:
            headers["HTTP_X_SSL_CLIENT_CERT"] = cert if isinstance(cert, str) else escaped(cert)
            if verify is not None:
                headers["HTTP_X_SSL_CLIENT_VERIFY"] = verify
        if client_ip:
            headers["HTTP_X_REAL_IP"] = client_ip
        headers.update(extra)
        if data is not None:
            encoding = {} if "content_type" in headers else {"format": "json"}
            return getattr(self.client, method.lower())(path, data, **encoding, **headers)
        return getattr(self.client, method.lower())(path, **headers)

    def get(self, path: str, cert: devpki.Issued | str | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path, cert, **kwargs)

    def post(self, path: str, cert: devpki.Issued | str | None = None, **kwargs: Any) -> Any:
        return self.request("POST", path, cert, **kwargs)


@pytest.fixture
def trusted_root(db: Any, pki: FixturePKI) -> Any:
    """The test root and intermediate as enabled TrustedAuthority rows (``ALLOWED_CERTIFICATE_TYPES`` is
    ``chained`` outside DEBUG, so a pinned certificate must also chain to one).  Returns the root's row."""
    from certauth.authorities import add_authority
    from certauth.models import TrustedAuthority

    for name, ca in (("test root", pki.root), ("test intermediate", pki.intermediate)):
        if not TrustedAuthority.objects.filter(thumbprint_sha256=ca.thumbprint).exists():
            add_authority(name, ca.cert_pem())
    return TrustedAuthority.objects.get(thumbprint_sha256=pki.root.thumbprint)


@pytest.fixture
def api(db: Any, trusted_root: Any) -> CertClient:
    """The client; the test root CA is trusted (see ``trusted_root``)."""
    return CertClient()


@pytest.fixture
def register(db: Any, trusted_root: Any) -> Any:
    """``register(issued, identity="billing", scopes="orders:read")`` -> RegisteredCertificate."""
    from certauth.services import get_or_create_identity, register_certificate

    def _register(issued: devpki.Issued, identity: str = "billing", scopes: str = "", **kwargs: Any) -> Any:
        ident, _ = get_or_create_identity(identity, scopes=scopes.split() if scopes else None)
        return register_certificate(ident, issued.certificate, **kwargs)

    return _register


def failures(**filters: Any) -> list[Any]:
    from certauth.models import AuthenticationFailure

    return list(AuthenticationFailure.objects.filter(**filters))


@pytest.fixture(scope="session")
def real_issuers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real PKI tools' CAs and clients (tests/pkitools.py), each built on first use, once per session."""
    from .pkitools import RealIssuers

    return RealIssuers(tmp_path_factory.mktemp("real-issuers"))
