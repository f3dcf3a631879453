from django.apps import AppConfig


class CertauthConfig(AppConfig):
    name = "certauth"
    verbose_name = "Client certificates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers system checks
        from .registry import connect_signals

        connect_signals()
