"""Telling certauth's own proxy from a neighbour on the same host: the proxy secret header and the unix
socket (issue 15, class 2).  Every local process reaches 127.0.0.1, so a trusted address alone does not
prove the request came through nginx.  The real stack's version of the attack is
tests/e2e/test_edge.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from certauth.nginxconf import PROXY_SECRET_MIN_LENGTH, PROXY_SECRET_PLACEHOLDER
from certauth.proxies import UNIX_SOCKET, ProxyAllowList, peer_address, secret_matches
from certauth.reasons import Reason

from .conftest import failures

SECRET = "n5c8N0dQ2mJ1v7cW4k9PZ6yT3bR0aLxE"
SECRET_META = "HTTP_X_CERTAUTH_PROXY_SECRET"


def _refused(response, reason: Reason) -> dict:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == str(reason), body
    return body


# --- the secret header ------------------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": SECRET})
def test_trusted_address_without_the_proxy_secret_is_untrusted_proxy(api, pki, register) -> None:
    register(pki.client)
    body = _refused(api.get("/api/whoami/", pki.client), Reason.UNTRUSTED_PROXY)
    assert "X-Certauth-Proxy-Secret" in body["detail"] and "proxy_set_header" in body["detail"]
    [row] = failures(reason="untrusted_proxy")
    assert row.client_ip == "127.0.0.1"  # X-Real-IP is not believed either
    assert SECRET not in body["detail"]


@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": SECRET})
def test_wrong_proxy_secret_is_untrusted_proxy(api, pki, register) -> None:
    register(pki.client)
    for wrong in ("", SECRET[:-1], SECRET + "x", SECRET.upper(), "é" + SECRET[1:]):
        body = _refused(api.get("/api/whoami/", pki.client, **{SECRET_META: wrong}), Reason.UNTRUSTED_PROXY)
        assert "wrong proxy secret" in body["detail"] or "without the proxy secret" in body["detail"]
    assert sum(row.count for row in failures(reason="untrusted_proxy")) == 5


@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": SECRET})
def test_the_right_proxy_secret_is_believed(api, pki, register) -> None:
    register(pki.client, identity="billing")
    response = api.get("/api/whoami/", pki.client, **{SECRET_META: SECRET})
    assert response.status_code == 200, response.content
    assert response.json()["identity"] == "billing"
    # Still only from a trusted address: the secret does not replace TRUSTED_PROXIES.
    response = api.get("/api/whoami/", pki.client, remote="198.51.100.9", **{SECRET_META: SECRET})
    _refused(response, Reason.UNTRUSTED_PROXY)


@pytest.mark.django_db
def test_proxy_secret_is_read_from_a_file(api, pki, register, tmp_path: Path) -> None:
    register(pki.client)
    path = tmp_path / "proxy-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    with override_settings(CERTAUTH={"PROXY_SECRET_FILE": str(path)}):
        assert api.get("/api/whoami/", pki.client, **{SECRET_META: SECRET}).status_code == 200
        _refused(api.get("/api/whoami/", pki.client, **{SECRET_META: "guess"}), Reason.UNTRUSTED_PROXY)


@pytest.mark.django_db
@pytest.mark.parametrize("content", [None, "", "  \n"], ids=["missing-file", "empty", "blank"])
def test_an_unusable_secret_file_fails_closed(api, pki, register, tmp_path: Path, content: str | None) -> None:
    register(pki.client)
    path = tmp_path / "proxy-secret"
    if content is not None:
        path.write_text(content)
    with override_settings(CERTAUTH={"PROXY_SECRET_FILE": str(path)}):
        for presented in ({}, {SECRET_META: ""}, {SECRET_META: content or "x"}):
            body = _refused(api.get("/api/whoami/", pki.client, **presented), Reason.UNTRUSTED_PROXY)
            assert "PROXY_SECRET_FILE" in body["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "configured",
    [
        # The committed nginx examples carry it; an operator who makes the 401s go away by putting the same
        # string into PROXY_SECRET_FILE (instead of replacing it in nginx) has a secret everyone can read.
        PROXY_SECRET_PLACEHOLDER,
        "changeme",  # nginxconf.render refuses secrets under 16 characters; certauth took any
        "x" * (PROXY_SECRET_MIN_LENGTH - 1),
    ],
    ids=["committed-placeholder", "short", "one-short"],
)
@pytest.mark.parametrize("source", ["setting", "file"])
def test_a_public_or_short_proxy_secret_is_not_believed(
    api, pki, register, settings, tmp_path: Path, configured: str, source: str
) -> None:
    """Attack review 2: ``load_proxy_secret`` accepted any non-empty value, the committed placeholder and
    guessable ones included; a neighbour on 127.0.0.1 sending it with a registered certificate got 200.
    Now it fails closed, saying how to fix it, and ``certauth.E012`` reports it."""
    assert configured == PROXY_SECRET_PLACEHOLDER or len(configured) < 16
    register(pki.client, identity="billing")
    if source == "file":
        path = tmp_path / "proxy-secret"
        path.write_text(configured + "\n")
        path.chmod(0o600)
        settings.CERTAUTH = {**settings.CERTAUTH, "PROXY_SECRET": None, "PROXY_SECRET_FILE": str(path)}
    else:
        settings.CERTAUTH = {**settings.CERTAUTH, "PROXY_SECRET": configured}
    response = api.get("/api/whoami/", pki.client, HTTP_X_CERTAUTH_PROXY_SECRET=configured)
    assert response.status_code == 401, f"a neighbour knowing {configured!r} is believed as the proxy"
    body = response.json()
    assert body["reason"] == "untrusted_proxy"
    assert configured not in body["detail"]
    assert "certauth.E012" in _check_ids()
    # How to fix it is the operator's to read (check, log), not the client's.
    [e012] = [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.id == "certauth.E012"]
    assert "token_urlsafe" in e012.msg


def _check_ids() -> set[str]:
    return {m.id for m in checks.run_checks(tags=[checks.Tags.security]) if m.id and m.id.startswith("certauth.")}


def _secret_file_messages(path: Path) -> list[Any]:
    return [
        m
        for m in checks.run_checks(tags=[checks.Tags.security])
        if m.id and m.id.startswith("certauth.") and m.level >= checks.WARNING and str(path) in m.msg
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("file_mode", [0o644, 0o604, 0o660, 0o602], ids=["0644", "0604", "0660", "0602"])
def test_a_proxy_secret_file_other_users_can_read_is_reported(
    api, pki, register, tmp_path: Path, settings, file_mode: int
) -> None:
    """Attack review 2: the proxy secret exists to tell nginx from the other local users, yet a
    ``PROXY_SECRET_FILE`` every local user can read (0644 under the usual umask) was used and reported by
    nothing.  Now: refused (fail closed, ``untrusted_proxy`` with the fix) and ``certauth.E012``."""
    register(pki.client)
    path = tmp_path / "proxy-secret"
    path.write_text(SECRET + "\n")
    path.chmod(file_mode)
    tmp_path.chmod(0o755)
    settings.CERTAUTH = {"PROXY_SECRET_FILE": str(path), "TRUSTED_PROXIES": ["127.0.0.1"]}
    messages = _secret_file_messages(path)
    assert messages, "no check reports a proxy secret file every local user can read"
    assert {m.id for m in messages} == {"certauth.E012"}
    body = _refused(api.get("/api/whoami/", pki.client, **{SECRET_META: SECRET}), Reason.UNTRUSTED_PROXY)
    assert "PROXY_SECRET_FILE" in body["detail"]
    # The file's path and mode are the operator's to read (E012, the log), never the client's.
    assert str(path) not in body["detail"] and "mode" not in body["detail"]
    assert "chmod 600" in messages[0].msg


@pytest.mark.django_db
def test_a_group_readable_proxy_secret_file_is_warned_about(api, pki, register, tmp_path: Path, settings) -> None:
    """0640 (readable by a group meant to hold the workers' user alone) still works, with ``certauth.W012``;
    0600 is silent."""
    register(pki.client)
    path = tmp_path / "proxy-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o640)
    settings.CERTAUTH = {"PROXY_SECRET_FILE": str(path), "TRUSTED_PROXIES": ["127.0.0.1"]}
    assert {m.id for m in _secret_file_messages(path)} == {"certauth.W012"}
    assert api.get("/api/whoami/", pki.client, **{SECRET_META: SECRET}).status_code == 200
    path.chmod(0o600)
    assert _secret_file_messages(path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to nobody)")
@pytest.mark.django_db
def test_a_proxy_secret_file_another_user_owns_is_refused(api, pki, register, tmp_path: Path, settings) -> None:
    import pwd

    register(pki.client)
    path = tmp_path / "proxy-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    settings.CERTAUTH = {"PROXY_SECRET_FILE": str(path), "TRUSTED_PROXIES": ["127.0.0.1"]}
    assert {m.id for m in _secret_file_messages(path)} == {"certauth.E012"}
    _refused(api.get("/api/whoami/", pki.client, **{SECRET_META: SECRET}), Reason.UNTRUSTED_PROXY)


@pytest.mark.django_db
@override_settings(CERTAUTH={"PROXY_SECRET": SECRET})
def test_refusal_view_believes_the_original_request_line_only_with_the_secret(api) -> None:
    headers = {"HTTP_X_CERTAUTH_ORIGINAL_URI": "/api/orders/", "HTTP_X_CERTAUTH_ORIGINAL_METHOD": "DELETE"}
    assert api.get("/-/certauth/refused", verify="NONE", **headers).status_code == 401
    [row] = failures(reason="missing_certificate")
    assert (row.method, row.path) == ("GET", "/-/certauth/refused")  # a neighbour's claims are not audited as fact
    api.get("/-/certauth/refused", verify="NONE", **headers, **{SECRET_META: SECRET})
    assert {(r.method, r.path) for r in failures(reason="missing_certificate")} == {
        ("GET", "/-/certauth/refused"),
        ("DELETE", "/api/orders/"),
    }


# --- the unix socket --------------------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(CERTAUTH={"TRUSTED_PROXIES": ["unix:"]})
def test_unix_socket_peer_is_trusted_and_loopback_tcp_is_not(api, pki, register) -> None:
    register(pki.client)
    # gunicorn on a unix socket: REMOTE_ADDR "" (and its socket says AF_UNIX).
    assert api.get("/api/whoami/", pki.client, remote="").status_code == 200
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert api.get("/api/whoami/", pki.client, remote="", **{"gunicorn.socket": unix}).status_code == 200
    # A TCP connection to the same gunicorn, whatever REMOTE_ADDR claims: not the socket nginx uses.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        _refused(api.get("/api/whoami/", pki.client, remote="", **{"gunicorn.socket": tcp}), Reason.UNTRUSTED_PROXY)
    body = _refused(api.get("/api/whoami/", pki.client, remote="127.0.0.1"), Reason.UNTRUSTED_PROXY)
    assert "127.0.0.1" in body["detail"]
    assert sum(row.count for row in failures(reason="untrusted_proxy")) == 2


def test_peer_address_and_allow_list_are_pure() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix, socket.socket() as tcp:
        assert peer_address({"REMOTE_ADDR": "", "gunicorn.socket": unix}) == UNIX_SOCKET
        assert peer_address({"REMOTE_ADDR": "127.0.0.1", "gunicorn.socket": tcp}) == "127.0.0.1"
        assert peer_address({"REMOTE_ADDR": "", "gunicorn.socket": tcp}) == ""
    assert peer_address({"REMOTE_ADDR": "10.0.0.1"}) == "10.0.0.1"
    assert peer_address({}) == UNIX_SOCKET  # an ASGI server on a unix socket gives no client
    assert UNIX_SOCKET in ProxyAllowList(["unix:", "10.0.0.0/8"])
    assert UNIX_SOCKET not in ProxyAllowList(["127.0.0.1", "::1"])
    assert "" not in ProxyAllowList(["unix:"])
    assert "127.0.0.1" not in ProxyAllowList(["unix:"])
    assert ProxyAllowList(["unix:"]) and ProxyAllowList(["unix:"]).loopback_only


def test_secret_matches_only_the_exact_non_empty_secret() -> None:
    assert secret_matches(SECRET.encode(), SECRET)
    assert not secret_matches(SECRET.encode(), None)
    assert not secret_matches(SECRET.encode(), SECRET + " ")
    assert not secret_matches(b"", "")  # an empty configured secret never matches anything
    assert not secret_matches(SECRET.encode(), "\u20ac" + SECRET)
