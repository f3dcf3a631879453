from django.apps import AppConfig


class CertauthConfig(AppConfig):
    name = "certauth"
    verbose_name = "Client certificates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers system checks
        from .registry import connect_signals

        connect_signals()
        try:
            import drf_spectacular  # noqa: F401 - optional
        except ImportError:
            pass
        else:
            from . import openapi  # noqa: F401 - registers the mutualTLS security scheme
