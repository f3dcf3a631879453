import logging

from django.apps import AppConfig


class CertauthConfig(AppConfig):
    name = "certauth"
    verbose_name = "Client certificates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # registers system checks
        from .registry import connect_signals

        connect_signals()
        # Inside a uvicorn server nobody runs `manage.py check`: say it in its log at start-up.
        for message in checks.check_asgi_server_proxy_headers():
            logging.getLogger("certauth").warning("%s", message)
        # Likewise inside gunicorn: several workers without PROMETHEUS_MULTIPROC_DIR (certauth.W022).
        for message in checks.check_metrics():
            if message.id == "certauth.W022":
                logging.getLogger("certauth").warning("%s", message)
        try:
            import drf_spectacular  # noqa: F401 - optional
        except ImportError:
            pass
        else:
            from . import openapi  # noqa: F401 - registers the mutualTLS security scheme
