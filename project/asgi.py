"""The reference project under an ASGI server (``make run SERVER=uvicorn``; docs/deployment.md, "Running
under ASGI").  Run uvicorn with ``--no-proxy-headers``: certauth decides trust from the real peer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_asgi_application()
