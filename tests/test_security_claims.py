"""docs/SECURITY.md names, for every guarantee, the test that proves it.  These tests keep that page honest
(every named test exists) and prove the guarantees no other test file covers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from certauth import authenticator
from certauth.registry import registry
from scripts.stack import Stack, StackError

from .conftest import escaped

REPO = Path(__file__).resolve().parent.parent
SECURITY = REPO / "docs" / "SECURITY.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def referenced_tests() -> list[tuple[str, str]]:
    return REFERENCE.findall(SECURITY.read_text(encoding="utf-8"))


def test_security_page_names_tests_for_every_section() -> None:
    text = SECURITY.read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    assert len(sections) >= 10
    for section in sections:
        assert REFERENCE.search(section), f"no proving test named in section {section.splitlines()[0]!r}"


@pytest.mark.parametrize(("path", "name"), referenced_tests(), ids=lambda value: str(value))
def test_every_test_named_in_the_security_page_exists(path: str, name: str) -> None:
    source = REPO / path
    assert source.is_file(), f"docs/SECURITY.md names {path}, which does not exist"
    assert re.search(rf"^\s*(async\s+)?def {name}\(", source.read_text(encoding="utf-8"), re.MULTILINE), (
        f"docs/SECURITY.md names {path}::{name}, which does not exist"
    )


def _answer(api, value: str) -> tuple[int, str]:
    response = api.get("/api/whoami/", value)
    return response.status_code, "" if response.status_code == 200 else response.json()["reason"]


def _cold() -> None:
    """Forget every per-worker cache (parsed values and registry decisions)."""
    authenticator._config = None
    registry.invalidate()


def test_parse_cache_answers_only_for_the_exact_header_value(api, pki, register) -> None:
    """With the genuine certificate's answer cached, values that share its prefix, its length or its
    certificate get exactly the answer they get from a cold cache: nothing borrows the cached decision."""
    register(pki.client)
    genuine = escaped(pki.client)
    stranger = escaped(pki.stranger)
    hostile = [
        genuine + stranger,  # the genuine value followed by a second certificate
        genuine[: len(genuine) // 2],  # its first half
        genuine[:-6] + "%0A%0A",  # same length, different tail
        stranger,  # another certificate from the same CA
        genuine.replace("%2F", "/", 1),  # another spelling of the same bytes (allowed to be the same answer)
    ]
    cold = {}
    for value in hostile:
        _cold()
        cold[value] = _answer(api, value)
    for value in hostile:
        _cold()
        assert _answer(api, genuine) == (200, "")  # the genuine answer is now cached
        assert _answer(api, value) == cold[value]
    assert cold[genuine + stranger][0] == 401 and cold[stranger] == (401, "unknown_certificate")
    assert cold[genuine[: len(genuine) // 2]] == (401, "malformed_certificate")


def test_the_stack_keeps_gunicorn_and_nginx_on_loopback(tmp_path: Path) -> None:
    """Whoever reaches gunicorn is a trusted proxy (127.0.0.1): the stack binds it to loopback only and
    refuses to put nginx anywhere else either."""
    for host in ("0.0.0.0", "::", "192.0.2.1"):  # noqa: S104 - each must be refused
        with pytest.raises(StackError, match="loopback"):
            Stack(tmp_path, host=host)
    stack = Stack(tmp_path, port=0, gunicorn_instances=2, upstream="tcp")
    stack.gunicorn_ports = [40001, 40002]
    for instance in (0, 1):
        command = stack._gunicorn_command(instance)
        assert command[command.index("--bind") + 1] == f"127.0.0.1:{stack.gunicorn_ports[instance]}"
        assert command[command.index("--forwarded-allow-ips") + 1] == "127.0.0.1"
    assert "server 127.0.0.1:40001;" in stack.render_nginx_conf()
    assert "server 127.0.0.1:40002;" in stack.render_nginx_conf()
    # The default: unix sockets in a directory only the stack's user may enter, and only they are trusted.
    stack = Stack(tmp_path / "unix", port=0, gunicorn_instances=2)
    for instance in (0, 1):
        command = stack._gunicorn_command(instance)
        assert command[command.index("--bind") + 1] == f"unix:{stack.socket_path(instance)}"
        assert f"server unix:{stack.socket_path(instance)};" in stack.render_nginx_conf()
    assert stack.socket_path(0).parent == stack.socket_dir
    assert stack.env["CERTAUTH_TRUSTED_PROXIES"] == "unix:"
