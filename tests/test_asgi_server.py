"""certauth under an ASGI server (uvicorn): which peer Django's ASGI handler reports, the refusal that says
how to fix a server that copied X-Forwarded-For into REMOTE_ADDR, and certauth.W015, which reads the flags a
uvicorn process was started with.  The real server behind the real nginx: tests/e2e/test_asgi*.py."""

from __future__ import annotations

import io
import logging
import sys
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.handlers.asgi import ASGIRequest
from django.test import override_settings

from certauth import authenticator
from certauth.authenticator import REWRITTEN_FIX
from certauth.checks import uvicorn_rewrites_trusted_proxy
from certauth.proxies import UNIX_SOCKET, ProxyAllowList, peer_address
from certauth.reasons import Reason

SECRET = "n5c8N0dQ2mJ1v7cW4k9PZ6yT3bR0aLxE"
SECRET_META = "HTTP_X_CERTAUTH_PROXY_SECRET"


def _asgi_meta(client: tuple[str, int] | None) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/api/whoami/", "headers": [], "client": client}
    return ASGIRequest(scope, io.BytesIO()).META


def test_django_asgi_sets_no_remote_addr_for_a_unix_socket_peer() -> None:
    """uvicorn on --uds gives ``scope["client"] = None`` (a unix peer has no address); Django then sets no
    REMOTE_ADDR at all, which certauth reads as ``unix:`` (as gunicorn's ``""`` on its AF_UNIX socket).  A TCP
    peer's address becomes REMOTE_ADDR as under WSGI."""
    meta = _asgi_meta(None)
    assert "REMOTE_ADDR" not in meta
    assert peer_address(meta) == UNIX_SOCKET
    assert peer_address(_asgi_meta(("127.0.0.1", 41000))) == "127.0.0.1"
    assert UNIX_SOCKET in ProxyAllowList(["unix:"]) and "127.0.0.1" not in ProxyAllowList(["unix:"])


def _refused(response: Any) -> str:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == str(Reason.UNTRUSTED_PROXY), body
    return str(body["detail"])


@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": SECRET, "TRUSTED_PROXIES": ["127.0.0.1"]})
def test_a_peer_copied_from_x_forwarded_for_gets_the_fix(api, pki, register, caplog) -> None:
    """What uvicorn's proxy headers do: REMOTE_ADDR is the client's address nginx appended to X-Forwarded-For,
    and the request carries nginx's secret.  Refused all the same, with the fix, and logged once."""
    register(pki.client)
    authenticator._rewrite_warned_at = None
    rewritten = {"HTTP_X_FORWARDED_FOR": "198.51.100.9, 203.0.113.7", SECRET_META: SECRET}
    with caplog.at_level(logging.WARNING, logger="certauth"):
        for _ in range(2):
            assert REWRITTEN_FIX in _refused(api.get("/api/whoami/", pki.client, remote="203.0.113.7", **rewritten))
    assert sum("an X-Forwarded-For address" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": SECRET, "TRUSTED_PROXIES": ["127.0.0.1"]})
def test_an_untrusted_peer_that_was_not_rewritten_gets_no_such_hint(api, pki, register) -> None:
    register(pki.client)
    cases = [
        {SECRET_META: SECRET},  # no X-Forwarded-For
        {"HTTP_X_FORWARDED_FOR": "198.51.100.9", SECRET_META: SECRET},  # the peer is not in it
        {"HTTP_X_FORWARDED_FOR": "203.0.113.7"},  # no secret: not through our proxy
        {"HTTP_X_FORWARDED_FOR": "203.0.113.7", SECRET_META: SECRET[:-1] + "x"},  # a wrong one
    ]
    for extra in cases:
        detail = _refused(api.get("/api/whoami/", pki.client, remote="203.0.113.7", **extra))
        assert "--no-proxy-headers" not in detail, extra
        assert "203.0.113.7, which is not a trusted proxy" in detail


UVICORN = "/srv/app/.venv/bin/uvicorn"
PYTHON_M_UVICORN = "/usr/lib/python3/site-packages/uvicorn/__main__.py"


@pytest.mark.parametrize(
    ("argv", "environ", "trusted", "rewrites"),
    [
        # uvicorn's defaults behind nginx on loopback TCP: proxy headers on, for 127.0.0.1 and ::1.
        ([UVICORN, "project.asgi:application"], {}, ["127.0.0.1"], True),
        ([PYTHON_M_UVICORN, "app", "--port", "8000"], {}, ["::1"], True),
        ([UVICORN, "app", "--forwarded-allow-ips", "10.0.0.0/8"], {}, ["10.1.2.3"], True),
        ([UVICORN, "app"], {"FORWARDED_ALLOW_IPS": "10.0.0.5"}, ["10.0.0.0/24"], True),
        ([UVICORN, "app"], {"UVICORN_FORWARDED_ALLOW_IPS": "*"}, ["unix:"], True),
        ([UVICORN, "app", "--uds", "/run/app.sock", "--forwarded-allow-ips=*"], {}, ["unix:"], True),
        ([UVICORN, "app", "--no-proxy-headers", "--proxy-headers"], {}, ["127.0.0.1"], True),  # the last wins
        # The shipped flag, or nothing of a trusted proxy's rewritten.
        ([UVICORN, "app", "--no-proxy-headers"], {}, ["127.0.0.1"], False),
        ([UVICORN, "app"], {"UVICORN_PROXY_HEADERS": "false"}, ["127.0.0.1"], False),
        ([UVICORN, "app", "--forwarded-allow-ips", ""], {"FORWARDED_ALLOW_IPS": "*"}, ["127.0.0.1"], False),
        ([UVICORN, "app", "--forwarded-allow-ips="], {}, ["127.0.0.1"], False),  # empty: no peer is trusted
        ([UVICORN, "app", "--uds", "/run/app.sock"], {}, ["unix:", "127.0.0.1"], False),  # no address to rewrite
        ([UVICORN, "app", "--forwarded-allow-ips", "/run/app.sock"], {}, ["unix:"], False),  # a literal
        # A peer certauth does not trust, rewritten: it can claim a trusted proxy's address (attack review).
        ([UVICORN, "app"], {"FORWARDED_ALLOW_IPS": "10.0.0.5"}, ["127.0.0.1"], True),
        ([UVICORN, "app", "--forwarded-allow-ips", "10.0.0.5"], {"FORWARDED_ALLOW_IPS": "*"}, ["127.0.0.1"], True),
        ([UVICORN, "app"], {}, ["unix:"], True),  # loopback TCP rewritten; X-Forwarded-For: unix: (see proxies)
        # Not uvicorn's command line (gunicorn never rewrites REMOTE_ADDR; manage.py check cannot see a server).
        (["/srv/app/.venv/bin/gunicorn", "project.wsgi"], {"FORWARDED_ALLOW_IPS": "*"}, ["127.0.0.1"], False),
        # gunicorn with uvicorn's worker: proxy headers always on, for gunicorn's --forwarded-allow-ips.
        (["/srv/.venv/bin/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "project.asgi"], {}, ["127.0.0.1"], True),
        (["gunicorn", "--worker-class=uvicorn_worker.UvicornWorker", "p.asgi"], {}, ["10.0.0.0/8"], True),
        (["gunicorn", "-kuvicorn.workers.UvicornWorker", "p.asgi", "--forwarded-allow-ips", ""], {}, ["::1"], False),
        (["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "unix:/run/a.sock", "p.asgi"], {}, ["unix:"], False),
        (["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "unix:/run/a.sock"], {"FORWARDED_ALLOW_IPS": "*"},
         ["unix:"], True),
        (["gunicorn", "-k", "gthread", "project.wsgi"], {}, ["127.0.0.1"], False),  # gunicorn never rewrites
        (["manage.py", "check"], {"FORWARDED_ALLOW_IPS": "127.0.0.1"}, ["127.0.0.1"], False),
    ],
)
def test_uvicorn_flags_that_rewrite_a_trusted_proxy(
    argv: list[str], environ: dict[str, str], trusted: list[str], rewrites: bool
) -> None:
    assert (uvicorn_rewrites_trusted_proxy(argv, environ, ProxyAllowList(trusted)) is not None) is rewrites


@override_settings(CERTAUTH={"TRUSTED_PROXIES": ["127.0.0.1"]})
def test_w015_is_reported_in_a_uvicorn_process_with_proxy_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    monkeypatch.delenv("UVICORN_FORWARDED_ALLOW_IPS", raising=False)
    monkeypatch.delenv("UVICORN_PROXY_HEADERS", raising=False)
    monkeypatch.setattr(sys, "argv", [UVICORN, "project.asgi:application", "--port", "8000"])
    assert "certauth.W015" in {message.id for message in run_checks()}
    monkeypatch.setattr(sys, "argv", [UVICORN, "project.asgi:application", "--port", "8000", "--no-proxy-headers"])
    assert "certauth.W015" not in {message.id for message in run_checks()}


@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": None, "TRUSTED_PROXIES": ["127.0.0.1"]})
def test_the_rewritten_peer_warning_cannot_be_used_up_by_a_client(api, pki, register, caplog) -> None:
    """Without a proxy secret a client can look rewritten (it names its own address in X-Forwarded-For) and
    trigger the warning; it is logged at most once a minute, not once per process, so the operator still
    hears a later, genuine case."""
    register(pki.client)
    authenticator._rewrite_warned_at = None
    looks_rewritten = {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    with caplog.at_level(logging.WARNING, logger="certauth"):
        for _ in range(3):
            _refused(api.get("/api/whoami/", pki.client, remote="203.0.113.7", **looks_rewritten))
        assert sum("an X-Forwarded-For address" in r.getMessage() for r in caplog.records) == 1
        # The interval has passed (moved back rather than waited for: no test waits on the clock).
        assert authenticator._rewrite_warned_at is not None
        authenticator._rewrite_warned_at -= authenticator.REWRITE_WARNING_INTERVAL
        _refused(api.get("/api/whoami/", pki.client, remote="203.0.113.7", **looks_rewritten))
    assert sum("an X-Forwarded-For address" in r.getMessage() for r in caplog.records) == 2
