"""Bench-only views returning the same JSON as ``/api/ping/`` (the unauthenticated baseline), so the
rows differ only by authentication."""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from certauth.authentication import ClientCertificateAuthentication
from certauth.permissions import IsCertificateAuthenticated


class TokenPingView(APIView):
    """DRF's TokenAuthentication (one query per request): the peer to beat."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"identity": request.user.get_username(), "ok": True})


class CertificatePingView(APIView):
    """certauth's DRF authentication class."""

    authentication_classes = [ClientCertificateAuthentication]
    permission_classes = [IsCertificateAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"identity": request.auth.identity.name, "ok": True})
