"""Settings of the certauth reference project.  Everything comes from the environment with safe
defaults; see the README's settings table."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

import certauth
from certauth.privatefiles import (
    UnsafeDirectory,
    UnsafeFile,
    check_private_file,
    create_file,
    ensure_private_directory,
    read_private_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CERTAUTH_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)


def _private_directory(directory: Path) -> None:
    """Check (or create 0700) a folder we read secrets from, every start and before reading anything in it:
    in a folder another user owns or may write to, they could have planted the key or the database."""
    try:
        ensure_private_directory(directory)
    except UnsafeDirectory as error:
        raise ImproperlyConfigured(
            f"{error} certauth keeps its secret key and SQLite database there (CERTAUTH_VAR_DIR, DATABASE_URL)."
        ) from None


def _refuse_unless_private(path: Path) -> None:
    """An existing secret file (key, database) that is a link, another user's, or open to others: refused."""
    try:
        check_private_file(path)
    except FileNotFoundError:
        pass
    except UnsafeFile as error:
        raise ImproperlyConfigured(str(error)) from None


def _secret_key() -> str:
    """SECRET_KEY from the environment; otherwise a random key kept in var/ (never committed), created
    0600 from its first byte in a private var/ (several workers starting at once agree on one key).  An
    existing key is used only from a private var/, as a private file of ours (a planted key would let its
    author forge sessions and signed values)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = VAR_DIR / "secret_key"
    _private_directory(VAR_DIR)
    try:
        try:
            return read_private_file(path).decode().strip()
        except FileNotFoundError:
            create_file(path, secrets.token_urlsafe(50).encode())  # loses to a key another process wrote first
            return read_private_file(path).decode().strip()
    except UnsafeFile as error:
        raise ImproperlyConfigured(str(error)) from None


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "certauth",
    "project.api.apps.ApiConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "certauth.middleware.ClientCertificateMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "certauth.backends.ClientCertificateBackend",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'certauth.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several gunicorn workers write to one file: WAL, a busy timeout and IMMEDIATE transactions keep
    # SQLite from answering "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("CONN_MAX_AGE", "600"))
    DATABASES["default"].pop("CONN_HEALTH_CHECKS", None)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    # The database holds admin sessions: create it 0600 in a private folder before SQLite would create
    # it with the umask's mode (its -wal and -shm files copy the database file's mode).
    # An existing one (and its -wal/-shm/-journal files) is used only if it is a private file of ours in a
    # private folder, checked at every start: a database someone else planted or can read is refused.
    _sqlite_file = Path(DATABASES["default"]["NAME"])
    if str(_sqlite_file) not in {"", ":memory:"} and not str(_sqlite_file).startswith("file:"):
        _private_directory(_sqlite_file.parent)
        for _suffix in ("", "-wal", "-shm", "-journal"):
            _refuse_unless_private(_sqlite_file.with_name(_sqlite_file.name + _suffix))
        if not _sqlite_file.exists():
            create_file(_sqlite_file, b"")  # anything another worker wrote first wins (and is ours: private folder)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES: dict[str, dict[str, Any]] = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if os.environ.get("REDIS_URL"):
    CACHES["shared"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
        # A Redis host that silently drops packets must not hang requests: certauth falls back to the database.
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Behind nginx: the request is HTTPS when nginx says so (nginx overwrites the header).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "https://localhost:8443,https://127.0.0.1:8443")
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["certauth.authentication.ClientCertificateAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["certauth.permissions.IsCertificateAuthenticated"],
    "EXCEPTION_HANDLER": "certauth.drf.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "certauth reference API",
    "DESCRIPTION": "Machine-to-machine API authenticated by X.509 client certificates (mutual TLS).",
    "VERSION": certauth.__version__,
    "OAS_VERSION": "3.1.0",
    # certauth.openapi: 401/403/503 with the reason codes on every certificate-authenticated operation.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "certauth.openapi.add_refusal_responses",
    ],
}

CERTAUTH = {
    "TRUSTED_PROXIES": env_list("CERTAUTH_TRUSTED_PROXIES", "127.0.0.1,::1"),
    "PROXY_VERIFIES_CERTIFICATE": env_bool("CERTAUTH_PROXY_VERIFIES_CERTIFICATE", True),
    "REGISTRY_MAX_STALENESS_SECONDS": float(os.environ.get("CERTAUTH_REGISTRY_MAX_STALENESS_SECONDS", "1")),
}
if os.environ.get("CERTAUTH_PROXY_SECRET_FILE"):
    # The random value nginx sends in X-Certauth-Proxy-Secret (`make run` writes a new one each start).
    CERTAUTH["PROXY_SECRET_FILE"] = os.environ["CERTAUTH_PROXY_SECRET_FILE"]
if os.environ.get("CERTAUTH_PROXY_CA_BUNDLE"):
    # The CA file the proxy verifies against (scripts/stack.py sets it): `certauth doctor` and W019 compare it.
    CERTAUTH["PROXY_CA_BUNDLE"] = os.environ["CERTAUTH_PROXY_CA_BUNDLE"]
if os.environ.get("CERTAUTH_REVOCATION_MODE"):
    CERTAUTH["REVOCATION_MODE"] = os.environ["CERTAUTH_REVOCATION_MODE"]
    CERTAUTH["REVOCATION_FAIL_OPEN"] = env_bool("CERTAUTH_REVOCATION_FAIL_OPEN", False)
# The forwarding dialect of the proxy in front (`certauth proxy-config` prints the values for each proxy;
# the dev stack sets them for `make run PROXY=haproxy|apache|caddy`).  An empty value means None.
for _name in ("CERTIFICATE_HEADER", "FORWARDING_FORMAT", "VERIFY_HEADER", "CLIENT_IP_HEADER", "CHAIN_HEADER"):
    if f"CERTAUTH_{_name}" in os.environ:
        CERTAUTH[_name] = os.environ[f"CERTAUTH_{_name}"] or None
if os.environ.get("CERTAUTH_ALLOWED_CERTIFICATE_TYPES"):
    CERTAUTH["ALLOWED_CERTIFICATE_TYPES"] = os.environ["CERTAUTH_ALLOWED_CERTIFICATE_TYPES"]
if "shared" in CACHES:
    CERTAUTH["SHARED_CACHE_ALIAS"] = "shared"
if env_bool("CERTAUTH_METRICS_ENABLED", False):
    # Prometheus metrics at /-/certauth/metrics (docs/metrics.md): loopback-only unless CERTAUTH_METRICS_ALLOW.
    CERTAUTH["METRICS_ENABLED"] = True
    CERTAUTH["METRICS_ALLOW"] = os.environ.get("CERTAUTH_METRICS_ALLOW", "loopback")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"certauth": {"handlers": ["console"], "level": os.environ.get("CERTAUTH_LOG_LEVEL", "INFO")}},
}

# Mail (flood alerts, `certauth expiring --mail`).  Django 6.0 takes ADMINS as plain addresses and deprecates
# (name, address) pairs, which 5.2 still requires; Django 6.1 replaces EMAIL_BACKEND by MAILERS (the EMAIL_*
# settings are deprecated there, and unknown to 5.2/6.0).  Drop both branches with Django 5.2/6.0 support.
_email_backend = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
_admin_email = os.environ.get("ADMIN_EMAIL")
if django.VERSION >= (6, 0):
    ADMINS: list[Any] = [_admin_email] if _admin_email else []
else:
    ADMINS = [("Operator", _admin_email)] if _admin_email else []
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": _email_backend}}
else:
    EMAIL_BACKEND = _email_backend
