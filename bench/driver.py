"""Calls Django's WSGI handler directly with prebuilt environ dicts: no test-client machinery, no
sockets; what a gunicorn worker does per request minus the HTTP parsing."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any

from django.core.handlers.wsgi import WSGIHandler

TRUSTED_PROXY = "127.0.0.1"


class BenchFailure(RuntimeError):
    """A scenario did not answer what it should (the benchmark would measure the wrong thing)."""


def environ(path: str, headers: dict[str, str] | None = None, *, remote: str = TRUSTED_PROXY) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "application/json",
        "HTTP_USER_AGENT": "certauth-bench",
        "HTTP_X_REAL_IP": "203.0.113.7",
        "HTTP_X_FORWARDED_PROTO": "https",
        "wsgi.url_scheme": "https",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    env.update(headers or {})
    return env


def certificate_headers(escaped_pem: str) -> dict[str, str]:
    """What nginx (ssl_verify_client on) forwards."""
    return {"HTTP_X_SSL_CLIENT_CERT": escaped_pem, "HTTP_X_SSL_CLIENT_VERIFY": "SUCCESS"}


class Driver:
    def __init__(self) -> None:
        self.handler = WSGIHandler()
        self.status = ""

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        return None

    def call(self, env: dict[str, Any]) -> bytes:
        request_env = dict(env)
        for key in self._large_headers(env):
            # A server builds new strings for every request: no cached str hash from the last one.
            request_env[key] = "".join(env[key])
        request_env["wsgi.input"] = io.BytesIO(b"")
        response = self.handler(request_env, self._start_response)
        try:
            return b"".join(response)
        finally:
            response.close()

    @staticmethod
    def _large_headers(env: dict[str, Any]) -> list[str]:
        return [key for key, value in env.items() if key.startswith("HTTP_") and len(value) > 256]

    def caller(self, env: dict[str, Any], expect: int = 200) -> Callable[[], bytes]:
        """A zero-argument callable for ``measure.interleaved``; checks the answer once up front."""
        body = self.call(env)
        if not self.status.startswith(str(expect)):
            raise BenchFailure(f"{env['PATH_INFO']} answered {self.status}: {body[:300]!r}")
        return lambda: self.call(env)

    def sequence_caller(self, envs: list[dict[str, Any]], expect: int = 200) -> Callable[[], bytes]:
        """Each call uses the next environ (e.g. a never-seen certificate each time); checks every answer."""
        iterator = iter(envs)

        def call() -> bytes:
            try:
                env = next(iterator)
            except StopIteration:
                raise BenchFailure("ran out of prepared requests") from None
            body = self.call(env)
            if not self.status.startswith(str(expect)):
                raise BenchFailure(f"{env['PATH_INFO']} answered {self.status}: {body[:300]!r}")
            return body

        return call
