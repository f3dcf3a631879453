"""certauth.client against a real mutual-TLS server on 127.0.0.1."""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from certauth.client import build_ssl_context, httpx_client, requests_session
from certauth.devpki import DevPKI, create_dev_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("client-pki") / "dev")


class _CNHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        subject = dict(item for rdn in peer["subject"] for item in rdn)
        body = subject["commonName"].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _MutualTLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.handshake_errors: list[BaseException] = []
        super().__init__(("127.0.0.1", 0), _CNHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Handshake in the per-connection thread so a refused client cannot stall the accept loop.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(exc)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused clients are expected here; keep pytest output clean


@pytest.fixture(scope="module")
def server(pki: DevPKI) -> Iterator[_MutualTLSServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.path("server"), pki.path("server", "key"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=pki.path("ca"))
    httpd = _MutualTLSServer(context)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def url(server: _MutualTLSServer) -> str:
    return f"https://127.0.0.1:{server.server_address[1]}/whoami"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make tempfile use a directory we can inspect afterwards."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _pem_args(pki: DevPKI, name: str = "client") -> dict[str, Any]:
    return {"cert": pki.path(name), "key": pki.path(name, "key"), "ca": pki.path("ca")}


def _p12_args(pki: DevPKI, name: str = "client") -> dict[str, Any]:
    return {"pkcs12": pki.path(name, "p12"), "password": pki.p12_password, "ca": pki.path("ca")}


# --- requests ------------------------------------------------------------------------------------------


def test_requests_with_pem_files(pki: DevPKI, url: str) -> None:
    with requests_session(**_pem_args(pki)) as session:
        response = session.get(url, timeout=10)
        assert response.status_code == 200
        assert response.text == "demo-client"
        assert session.verify == os.fspath(pki.path("ca"))
        # Connection reuse and a second identity in another session.
        assert session.get(url, timeout=10).text == "demo-client"
    with requests_session(**_pem_args(pki, "client2")) as session:
        assert session.get(url, timeout=10).text == "demo-client-next"


def test_requests_with_pkcs12(pki: DevPKI, url: str, private_tmp: Path) -> None:
    with requests_session(**_p12_args(pki)) as session:
        response = session.get(url, timeout=10)
    assert response.status_code == 200
    assert response.text == "demo-client"
    assert list(private_tmp.iterdir()) == []


def test_requests_with_combined_bundle_file(pki: DevPKI, url: str) -> None:
    with requests_session(cert=pki.path("client", "bundle"), ca=pki.path("ca")) as session:
        assert session.get(url, timeout=10).text == "demo-client"


def test_requests_without_certificate_fails_the_handshake(pki: DevPKI, url: str) -> None:
    with requests_session(ca=pki.path("ca")) as session, pytest.raises(requests.exceptions.ConnectionError):
        session.get(url, timeout=10)


def test_requests_ignores_environment_ca_bundle(
    pki: DevPKI, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # REQUESTS_CA_BUNDLE normally overrides verify= and would be loaded into the context: trusting
    # only the unrelated CA, the server must stay untrusted even though the env names the right CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", os.fspath(pki.path("ca")))
    args = {**_pem_args(pki), "ca": pki.path("other-root-ca")}
    with requests_session(**args) as session, pytest.raises(requests.exceptions.SSLError):
        session.get(url, timeout=10)
    with requests_session(**args) as session, pytest.raises(requests.exceptions.SSLError):
        session.get(url, timeout=10, verify=os.fspath(pki.path("ca")))


def test_requests_refuses_a_per_request_cert(pki: DevPKI, url: str) -> None:
    with requests_session(**_pem_args(pki)) as session, pytest.raises(ValueError):
        session.get(url, cert=(os.fspath(pki.path("client2")), os.fspath(pki.path("client2", "key"))))


def test_requests_rejects_an_untrusted_server(pki: DevPKI, url: str) -> None:
    # Trusting only the unrelated CA, the dev server certificate must not verify.
    with (
        requests_session(
            cert=pki.path("client"), key=pki.path("client", "key"), ca=pki.path("other-root-ca")
        ) as session,
        pytest.raises(requests.exceptions.SSLError),
    ):
        session.get(url, timeout=10)


# --- httpx ---------------------------------------------------------------------------------------------


def test_httpx_with_pem_files(pki: DevPKI, url: str) -> None:
    with httpx_client(**_pem_args(pki), timeout=10) as client:
        response = client.get(url)
    assert response.status_code == 200
    assert response.text == "demo-client"


def test_httpx_with_pkcs12_and_base_url(pki: DevPKI, url: str, private_tmp: Path) -> None:
    base = url.rsplit("/", 1)[0]
    with httpx_client(**_p12_args(pki, "via-intermediate"), base_url=base, timeout=10) as client:
        response = client.get("/whoami")
    # The server trusts only the root: the intermediate from the .p12 must have been sent along.
    assert response.status_code == 200
    assert response.text == "via-intermediate-client"
    assert list(private_tmp.iterdir()) == []


def test_httpx_without_certificate_fails_the_handshake(pki: DevPKI, url: str) -> None:
    with httpx_client(ca=pki.path("ca"), timeout=10) as client, pytest.raises(httpx.TransportError):
        client.get(url)


def test_httpx_refuses_a_verify_override(pki: DevPKI) -> None:
    with pytest.raises(ValueError):
        httpx_client(**_pem_args(pki), verify=False)


# --- the SSL context -----------------------------------------------------------------------------------


def test_pkcs12_key_is_only_written_encrypted_and_removed(
    pki: DevPKI, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, bytes]] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        path = Path(certfile)
        seen.append((path, path.read_bytes()))
        assert (path.stat().st_mode & 0o777) == 0o600
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        original(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    build_ssl_context(**_p12_args(pki))
    [(path, data)] = seen
    assert path.is_relative_to(private_tmp)
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    assert b"-----BEGIN PRIVATE KEY-----" not in data
    assert not path.exists() and not path.parent.exists()
    assert list(private_tmp.iterdir()) == []


def test_temp_dir_removed_even_when_loading_fails(
    pki: DevPKI, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        raise ssl.SSLError("simulated")

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", boom)
    with pytest.raises(ssl.SSLError):
        build_ssl_context(**_p12_args(pki))
    assert list(private_tmp.iterdir()) == []


def test_context_settings(pki: DevPKI) -> None:
    context = build_ssl_context(**_pem_args(pki))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    insecure = build_ssl_context(ca=False)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    system = build_ssl_context()
    assert system.verify_mode == ssl.CERT_REQUIRED


def test_bad_argument_combinations(pki: DevPKI) -> None:
    with pytest.raises(ValueError, match="key="):
        build_ssl_context(cert=pki.path("client"))  # certificate only, no key inside
    with pytest.raises(ValueError, match="cert="):
        build_ssl_context(key=pki.path("client", "key"))
    with pytest.raises(ValueError, match="pkcs12"):
        build_ssl_context(pkcs12=pki.path("client", "p12"), cert=pki.path("client"), password="x")
    with pytest.raises(ValueError, match="password"):
        build_ssl_context(password="orphan")
    with pytest.raises(ValueError, match="wrong password"):
        build_ssl_context(pkcs12=pki.path("client", "p12"), password="wrong")
    with pytest.raises(ValueError, match="does not match"):
        build_ssl_context(cert=pki.path("client"), key=pki.path("client2", "key"))


def test_server_refuses_a_certificate_from_another_ca(pki: DevPKI, url: str) -> None:
    with (
        requests_session(**_pem_args(pki, "other-ca")) as session,
        pytest.raises(requests.exceptions.ConnectionError),
    ):
        session.get(url, timeout=10)
