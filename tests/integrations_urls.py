"""Django Ninja and adrf views authenticated by certauth (``tests/test_async_integrations.py``); imported only
when both packages are installed."""

from __future__ import annotations

from typing import Any

from adrf.views import APIView as AsyncAPIView
from django.http import HttpRequest
from django.urls import path
from ninja import NinjaAPI
from rest_framework.request import Request
from rest_framework.response import Response

from certauth.ninja import ClientCertificate, install
from certauth.permissions import HasCertificateScope

api = NinjaAPI(auth=ClientCertificate(), urls_namespace="certauth-ninja-test")
install(api)


@api.get("/async/whoami")
async def ninja_async_whoami(request: HttpRequest) -> dict[str, Any]:
    return {"identity": request.auth.identity.name, "same": request.auth is request.certificate_auth}  # type: ignore[attr-defined]


@api.get("/sync/whoami")
def ninja_sync_whoami(request: HttpRequest) -> dict[str, Any]:
    return {"identity": request.auth.identity.name}  # type: ignore[attr-defined]


@api.post("/async/orders", auth=ClientCertificate(scopes=["orders:write"]))
async def ninja_async_orders(request: HttpRequest) -> dict[str, Any]:
    return {"created": True, "by": request.auth.identity.name}  # type: ignore[attr-defined]


class AdrfOrders(AsyncAPIView):
    """certauth's DRF classes as they are: adrf runs authentication and permissions in a thread."""

    permission_classes = [HasCertificateScope]
    required_scopes = ["orders:read"]

    async def get(self, request: Request) -> Response:
        return Response({"identity": request.auth.identity.name, "user": request.user.get_username()})


urlpatterns = [path("ninja/", api.urls), path("adrf/orders/", AdrfOrders.as_view())]
