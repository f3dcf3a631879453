"""Bench-only views, so that compared rows differ only by authentication: unauthenticated twins returning the
same JSON as the authenticated views they are the baseline of (in-process: ``OpenCertificatePingView`` and
``OpenView``), and an unauthenticated twin of ``/api/whoami/`` returning exactly
its JSON (the end-to-end baseline)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from certauth.authentication import ClientCertificateAuthentication
from certauth.certificates import describe, load_certificates
from certauth.permissions import IsCertificateAuthenticated
from certauth.principal import CertificateAuth
from certauth.registry import load_entry
from project.api.views import WhoAmIView

#: The certificate whose ``/api/whoami/`` answer ``OpenWhoAmIView`` reproduces (PEM file path).
WHOAMI_CERTIFICATE_ENV = "BENCH_WHOAMI_CERTIFICATE"


class TokenPingView(APIView):
    """DRF's TokenAuthentication (one query per request): the peer to beat."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"identity": request.user.get_username(), "ok": True})


#: The identity of section 1's pinned certificate (``bench.inprocess``).
PINNED_IDENTITY = "bench-pinned"


class OpenCertificatePingView(APIView):
    """``CertificatePingView``'s JSON for the pinned certificate, without authentication: section 1's baseline
    (same URL depth, same bytes; the compared rows differ only by certauth)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"identity": PINNED_IDENTITY, "ok": True})


class CertificatePingView(APIView):
    """certauth's DRF authentication class."""

    authentication_classes = [ClientCertificateAuthentication]
    permission_classes = [IsCertificateAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"identity": request.auth.identity.name, "ok": True})


class OpenView(APIView):
    """No authentication at all (``bench.warm_client``'s baseline): the same code and JSON as
    ``CertificateView`` minus certauth."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class CertificateView(APIView):
    """``OpenView`` with certauth's authentication class and permission (``bench.warm_client``)."""

    authentication_classes = [ClientCertificateAuthentication]
    permission_classes = [IsCertificateAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class OpenWhoAmIView(WhoAmIView):
    """``/api/whoami/``'s own code and JSON for the certificate named by ``BENCH_WHOAMI_CERTIFICATE``,
    without authentication: the baseline that differs from ``/api/whoami/`` only by certauth."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        request.auth = _whoami_auth()
        return super().get(request)


@cache
def _whoami_auth() -> CertificateAuth:
    """Built once per worker (the registry row is read once, as certauth's own cache would)."""
    pem = Path(os.environ[WHOAMI_CERTIFICATE_ENV]).read_bytes()
    info = describe(load_certificates(pem)[0])
    entry = load_entry(info.thumbprint_sha256)
    if entry is None:
        raise LookupError(f"{os.environ[WHOAMI_CERTIFICATE_ENV]} is not registered")
    return CertificateAuth(identity=entry.identity, certificate=info, entry_id=entry.entry_id)
