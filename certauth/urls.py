"""certauth's URLs.  Include at the site root (``path("", include("certauth.urls"))``): the shipped nginx
config sends its certificate refusals to ``/-/certauth/refused`` (``certauth.nginxconf.REFUSED_PATH``).
``/-/certauth/metrics`` is the Prometheus scrape URL, 404 unless ``METRICS_ENABLED`` (docs/metrics.md)."""

from django.urls import path

from . import views

urlpatterns = [
    path("-/certauth/refused", views.refused, name="certauth-refused"),
    path("-/certauth/metrics", views.metrics_view, name="certauth-metrics"),
]
