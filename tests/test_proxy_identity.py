"""Telling certauth's own proxy from a neighbour on the same host: the proxy secret header and the unix
socket (issue 15, class 2).  Every local process reaches 127.0.0.1, so a trusted address alone does not
prove the request came through nginx.  The real stack's version of the attack is
tests/e2e/test_edge.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from django.test import override_settings

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
