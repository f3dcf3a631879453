"""uvicorn with its proxy headers on (its default) behind the real nginx: what goes wrong, and that certauth
says how to fix it.  nginx reaches uvicorn over loopback TCP and certauth trusts 127.0.0.1 (with the proxy
secret); uvicorn's default --forwarded-allow-ips (127.0.0.1) then copies the X-Forwarded-For address nginx
wrote into REMOTE_ADDR.  A client from 127.0.0.1 would hide that (nginx writes 127.0.0.1, a trusted
address), so the client connects from 127.0.0.2, like any real client.  test_asgi.py has the shipped setting
(--no-proxy-headers), where the same client authenticates."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from certauth.authenticator import REWRITTEN_FIX

from .conftest import E2EStack, uvicorn_stack
from .test_asgi import get_from

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rewriting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    # After the shipped flags, so these win (click: the last one does); uvicorn's own defaults, spelled out
    # so that no FORWARDED_ALLOW_IPS in the environment changes them.
    yield from uvicorn_stack(
        tmp_path_factory,
        "e2e-uvicorn-proxy-headers",
        upstream="tcp",
        workers=1,
        server_args=["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1,::1"],
    )


def _log_holds(e2e: E2EStack, text: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if text in (e2e.stack.log_dir / "uvicorn.log").read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def test_uvicorn_proxy_headers_make_a_real_client_untrusted_proxy_with_the_fix(rewriting: E2EStack) -> None:
    status, body = get_from(rewriting, "127.0.0.2", "client", "/api/whoami/")
    assert status == 401, body
    assert body["reason"] == "untrusted_proxy"
    # The peer certauth saw is the client's address, and the detail says why and what to change.
    assert "came from 127.0.0.2" in body["detail"]
    assert REWRITTEN_FIX in body["detail"]
    assert "--no-proxy-headers" in body["detail"]
    # Once in the server's log too, for the operator.
    assert _log_holds(rewriting, "REMOTE_ADDR=127.0.0.2, an X-Forwarded-For address")


def test_uvicorn_proxy_headers_are_reported_at_start_up_as_w015(rewriting: E2EStack) -> None:
    """certauth.W015 in uvicorn's log: the flags it was started with rewrite the trusted proxy's address."""
    assert _log_holds(rewriting, "(certauth.W015) uvicorn runs with proxy headers for 127.0.0.1,::1")
