"""What a warm certificate costs on the async path vs the sync path (a pinned certificate, remembered).

``python -m bench.async_paths`` (``BENCH_DB`` names the SQLite file, default ``/tmp/certauth-async-bench``;
migrated on start).  Interleaved rounds, medians; prints a table, never fails on timing.

* the decision alone: ``evaluate(request)`` vs ``await aevaluate(request)`` on a running loop, and, for
  scale, the same ``evaluate`` behind one ``sync_to_async`` hop (what every request would pay if the async
  path simply ran the sync one in a thread);
* through Django's handlers: a sync view with and without ``@certificate_required`` (WSGI, ``Client``),
  and an async view with and without it (ASGI: Django's ``ASGIHandler`` called as an ASGI server calls it).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BENCH_DB", "/tmp/certauth-async-bench.sqlite3")

import django

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, RequestFactory, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from certauth import devpki  # noqa: E402
from certauth.authenticator import aevaluate, evaluate  # noqa: E402
from certauth.decorators import certificate_required  # noqa: E402


def sync_open(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@certificate_required(scopes=["orders:read"])
def sync_protected(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


async def async_open(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@certificate_required(scopes=["orders:read"])
async def async_protected(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [
    path("sync/open/", sync_open),
    path("sync/protected/", sync_protected),
    path("async/open/", async_open),
    path("async/protected/", async_protected),
]

ROUNDS, PER_ROUND, WARMUP = 20, 200, 300


def setup() -> dict[str, str]:
    from django.core.management import call_command

    from certauth.authorities import add_authority
    from certauth.models import CertificateIdentity, RegisteredCertificate, TrustedAuthority
    from certauth.services import get_or_create_identity, register_certificate

    call_command("migrate", verbosity=0)
    RegisteredCertificate.objects.all().delete()
    CertificateIdentity.objects.all().delete()
    TrustedAuthority.objects.all().delete()
    root = devpki.make_ca("async bench root")
    client = devpki.issue_client(root, "async-bench")
    add_authority("async bench root", root.cert_pem())
    identity, _ = get_or_create_identity("async-bench", scopes=["orders:read"])
    register_certificate(identity, client.certificate)
    return {"X-SSL-Client-Cert": quote(client.cert_pem().decode(), safe=""), "X-SSL-Client-Verify": "SUCCESS"}


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def run_sync(calls: dict[str, Callable[[], object]], samples: dict[str, list[int]]) -> None:
    for name, call in calls.items():
        for _ in range(PER_ROUND):
            start = time.perf_counter_ns()
            call()
            samples[name].append(time.perf_counter_ns() - start)


async def run_async(calls: dict[str, Callable[[], Awaitable[object]]], samples: dict[str, list[int]]) -> None:
    for name, call in calls.items():
        for _ in range(PER_ROUND):
            start = time.perf_counter_ns()
            await call()
            samples[name].append(time.perf_counter_ns() - start)


def main() -> None:
    headers = setup()
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    factory = RequestFactory()

    def request() -> HttpRequest:
        return factory.get("/", REMOTE_ADDR="127.0.0.1", **meta)

    wsgi = Client()
    app = ASGIHandler()
    with override_settings(MIDDLEWARE=["certauth.middleware.ClientCertificateMiddleware"]):
        lean = ASGIHandler()  # certauth's middleware alone: no MiddlewareMixin thread hops around it
    asgi_headers = [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]

    async def asgi_get(url: str, app: ASGIHandler = app) -> int:
        """One request through Django's ASGI handler the way an ASGI server calls it (no test client)."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": url,
            "raw_path": url.encode(),
            "query_string": b"",
            "headers": asgi_headers,
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        status = 0

        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if sent_body:  # then the client stays connected: Django cancels this wait when it is done
                await asyncio.Event().wait()
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    sync_calls: dict[str, Callable[[], object]] = {
        "building the request alone (in both decision rows)": request,
        "decision: evaluate()": lambda: evaluate(request()),
        "WSGI sync view, no auth": lambda: wsgi.get("/sync/open/", headers=headers),
        "WSGI sync view, @certificate_required": lambda: wsgi.get("/sync/protected/", headers=headers),
    }
    hop = sync_to_async(evaluate)
    async_calls: dict[str, Callable[[], Awaitable[object]]] = {
        "decision: await aevaluate()": lambda: aevaluate(request()),
        "decision: await sync_to_async(evaluate)() (one hop, for scale)": lambda: hop(request()),
        "ASGI async view, no auth": lambda: asgi_get("/async/open/"),
        "ASGI async view, @certificate_required": lambda: asgi_get("/async/protected/"),
        "ASGI async view, certauth middleware alone, no auth": lambda: asgi_get("/async/open/", lean),
        "ASGI async view, certauth middleware alone, @certificate_required": lambda: asgi_get(
            "/async/protected/", lean
        ),
    }
    samples: dict[str, list[int]] = {name: [] for name in (*sync_calls, *async_calls)}
    for response in (wsgi.get("/sync/protected/", headers=headers),):
        assert response.status_code == 200, response.content

    async def check_async() -> None:
        assert await asgi_get("/async/protected/") == 200

    asyncio.run(check_async())
    warm: dict[str, list[int]] = {name: [] for name in samples}
    for _ in range(max(1, WARMUP // PER_ROUND)):
        run_sync(sync_calls, warm)
        asyncio.run(run_async(async_calls, warm))
    for _ in range(ROUNDS):
        run_sync(sync_calls, samples)
        asyncio.run(run_async(async_calls, samples))
    medians = {name: median_us(values) for name, values in samples.items()}
    print(f"Python {sys.version.split()[0]}, Django {django.get_version()}, {ROUNDS}x{PER_ROUND} interleaved")
    print("| scenario | median | vs |\n|---|---|---|")
    baseline = {
        "decision: await aevaluate()": "decision: evaluate()",
        "decision: await sync_to_async(evaluate)() (one hop, for scale)": "decision: evaluate()",
        "WSGI sync view, @certificate_required": "WSGI sync view, no auth",
        "ASGI async view, @certificate_required": "ASGI async view, no auth",
        "ASGI async view, certauth middleware alone, @certificate_required": (
            "ASGI async view, certauth middleware alone, no auth"
        ),
    }
    for name, value in medians.items():
        against = baseline.get(name)
        ratio = f"{value / medians[against]:.2f}x {against} (+{value - medians[against]:.1f} µs)" if against else ""
        print(f"| {name} | {value:.1f} µs | {ratio} |")


if __name__ == "__main__":
    with override_settings(ROOT_URLCONF="bench.async_paths", ALLOWED_HOSTS=["testserver"]):
        main()
