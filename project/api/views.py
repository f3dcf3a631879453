"""The demo API: what a user of certauth writes in their own project."""

from __future__ import annotations

from typing import Any, cast

from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from certauth.decorators import certificate_required
from certauth.permissions import HasCertificateScope, IsCertificateAuthenticated
from certauth.principal import CertificateAuth

from .serializers import OrderListSerializer, OrderSerializer, PingSerializer, WhoAmISerializer

ORDERS = [
    {"id": 1, "item": "widget", "quantity": 3},
    {"id": 2, "item": "gadget", "quantity": 1},
]


class WhoAmIView(APIView):
    """Any identity authenticated by client certificate."""

    permission_classes = [IsCertificateAuthenticated]

    @extend_schema(responses=WhoAmISerializer, summary="Who am I: the identity and certificate of this request")
    def get(self, request: Request) -> Response:
        auth = cast(CertificateAuth, request.auth)  # IsCertificateAuthenticated guarantees it
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

    @extend_schema(responses=OrderListSerializer, summary="List orders (scope orders:read)")
    def get(self, request: Request) -> Response:
        return Response({"orders": ORDERS})

    @extend_schema(request=OrderSerializer, responses={201: OrderSerializer}, summary="Create an order (orders:write)")
    def post(self, request: Request) -> Response:
        serializer = OrderSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response({"id": len(ORDERS) + 1, **serializer.validated_data}, status=201)


class OpenPingView(APIView):
    """Unauthenticated DRF view returning the same kind of JSON (the benchmark baseline)."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @extend_schema(responses=PingSerializer, summary="Unauthenticated ping (benchmark baseline)")
    def get(self, request: Request) -> Response:
        return Response({"identity": None, "ok": True})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@certificate_required(scopes=["orders:read"])
def plain_orders(request: HttpRequest) -> JsonResponse:
    """A plain Django view (no DRF) protected by ``certificate_required``; ``request.user`` comes from the
    middleware, ``request.certificate_auth`` from the decorator."""
    auth = request.certificate_auth  # type: ignore[attr-defined]
    return JsonResponse({"identity": auth.identity.name, "user": request.user.get_username(), "orders": ORDERS})
