"""The reference project's URLs plus async views (``@pytest.mark.urls("tests.async_urls")``): what a project
served by ASGI writes, to test the middleware, the decorator and the backend on the async path."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from certauth.decorators import certificate_required
from project.urls import urlpatterns as project_urlpatterns


def _describe(user: Any) -> dict[str, Any]:
    return {"name": user.get_username(), "authenticated": user.is_authenticated, "pk": getattr(user, "pk", None)}


async def whoami(request: HttpRequest) -> JsonResponse:
    """No decorator: what the middleware put on the request, read the two ways an async view may."""
    auth = request.certificate_auth  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "user": _describe(request.user),
            "auser": _describe(await request.auser()),
            "identity": auth.identity.name if auth is not None else None,
        }
    )


@certificate_required(scopes=["orders:read"])
async def orders(request: HttpRequest) -> JsonResponse:
    auth = request.certificate_auth  # type: ignore[attr-defined]
    user = await request.auser()
    return JsonResponse({"identity": auth.identity.name, "user": user.get_username()})


@certificate_required
async def anything(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"identity": request.certificate_auth.identity.name})  # type: ignore[attr-defined]


urlpatterns = [
    path("async/whoami/", whoami),
    path("async/orders/", orders),
    path("async/anything/", anything),
    *project_urlpatterns,
]
