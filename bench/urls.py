"""The project's URLs plus the bench-only views."""

from __future__ import annotations

from django.urls import include, path

from bench import views

urlpatterns = [
    path("bench/token/", views.TokenPingView.as_view(), name="bench-token"),
    path("bench/open-certificate/", views.OpenCertificatePingView.as_view(), name="bench-open-certificate"),
    path("bench/certificate/", views.CertificatePingView.as_view(), name="bench-certificate"),
    path("bench/open/", views.OpenView.as_view(), name="bench-open"),
    path("bench/cert/", views.CertificateView.as_view(), name="bench-cert"),
    path("bench/open-whoami/", views.OpenWhoAmIView.as_view(), name="bench-open-whoami"),
    path("", include("project.urls")),
]
