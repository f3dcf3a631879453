from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny

from project.api import views

# The reference project has no public site: no "View site" link into a 404.  Its admin branding is in
# templates/admin/base_site.html.
admin.site.site_url = None

urlpatterns = [
    path("admin/", admin.site.urls),
    # certauth's refusal view (/-/certauth/refused), where nginx sends the certificates it refused.
    path("", include("certauth.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("api/whoami/", views.WhoAmIView.as_view(), name="whoami"),
    path("api/orders/", views.OrdersView.as_view(), name="orders"),
    path("api/ping/", views.OpenPingView.as_view(), name="ping"),
    path("plain/orders/", views.plain_orders, name="plain-orders"),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="schema",
    ),
]
