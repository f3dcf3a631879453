"""The demo API: what a user of certauth writes in their own project."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from certauth.permissions import HasCertificateScope, IsCertificateAuthenticated

ORDERS = [
    {"id": 1, "item": "widget", "quantity": 3},
    {"id": 2, "item": "gadget", "quantity": 1},
]


class WhoAmIView(APIView):
    """Any identity authenticated by client certificate."""

    permission_classes = [IsCertificateAuthenticated]

    def get(self, request: Request) -> Response:
        auth = request.auth
        return Response(
            {
                "identity": auth.identity.name,
                "thumbprint": auth.thumbprint,
                "subject": auth.subject,
                "issuer": auth.issuer,
                "serial_number": auth.serial_number,
                "not_after": auth.not_after.isoformat(),
                "scopes": sorted(auth.scopes),
                "subject_alternative_names": auth.subject_alternative_names,
            }
        )


class OrdersView(APIView):
    """Reading needs ``orders:read``; creating needs ``orders:write``."""

    permission_classes = [IsCertificateAuthenticated & HasCertificateScope]
    required_scopes = {"GET": ["orders:read"], "POST": ["orders:write"]}

    def get(self, request: Request) -> Response:
        return Response({"orders": ORDERS})

    def post(self, request: Request) -> Response:
        data: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
        order = {
            "id": len(ORDERS) + 1,
            "item": str(data.get("item", "item"))[:100],
            "quantity": int(data.get("quantity", 1) or 1),
        }
        return Response(order, status=201)


class OpenPingView(APIView):
    """Unauthenticated DRF view returning the same kind of JSON (the benchmark baseline)."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        return Response({"identity": None, "ok": True})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
