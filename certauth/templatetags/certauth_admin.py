"""``{% certauth_dashboard %}``: certauth's dashboard (``certauth.admin.dashboard``) for the admin index
(the reference project's templates/admin/index.html) and certauth's app index."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("admin/certauth/dashboard.html", takes_context=True)
def certauth_dashboard(context: Any) -> dict[str, Any]:
    from ..admin.dashboard import dashboard_tiles

    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff):
        return {"tiles": []}
    return {"tiles": dashboard_tiles(user, current_app=getattr(request, "current_app", None))}
