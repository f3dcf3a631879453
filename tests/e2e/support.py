"""Building blocks for the fault, concurrency and several-host end-to-end tests: stacks on SQLite or on a
PostgreSQL database of their own, a TCP relay that takes a service "down" without touching the real one, a
server that never answers, extra client certificates, a bounded multi-threaded load, and the audit read
back from the stack's database.  Everything listens and connects on loopback only."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import selectors
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from certauth import devpki
from certauth.client import requests_session
from certauth.devpki import DevPKI, create_dev_pki
from scripts.stack import Stack, find_nginx, free_port

from .conftest import E2EStack

#: Where the test PostgreSQL answers (trust auth); the databases created here are dropped afterwards.
POSTGRES_HOST = os.environ.get("CERTAUTH_E2E_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CERTAUTH_E2E_PG_PORT", "5432"))
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: A Redis database number of its own, so flushing it cannot touch anyone else's keys.
REDIS_DB = 8


def require_nginx() -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed: `make test` installs it (scripts/install-system-deps.sh)")


def port_answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def postgres_reachable() -> bool:
    if not port_answers(POSTGRES_HOST, POSTGRES_PORT):
        return False
    try:
        import psycopg

        with psycopg.connect(_admin_dsn(), connect_timeout=3):
            return True
    except Exception:
        return False


def require_postgres() -> None:
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL does not answer on {POSTGRES_HOST}:{POSTGRES_PORT} (user postgres, trust auth)")


def _admin_dsn() -> str:
    return f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"


@contextlib.contextmanager
def postgres_database(prefix: str = "certauth_e2e_h8") -> Iterator[str]:
    """A fresh PostgreSQL database for one stack; yields its name and drops it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(_admin_dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------------
# Taking a service down without touching it: a TCP relay on a loopback port
# --------------------------------------------------------------------------------------------------


class TcpRelay:
    """Forwards ``127.0.0.1:<port>`` to ``target``.  ``close()`` is the service going down: the listening
    socket closes (new connections are refused) and every relayed connection is cut.  ``open()`` is it
    coming back on the same port.  The real service (the machine's PostgreSQL, Redis) is never touched."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port("127.0.0.1")
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accepting = threading.Event()

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> TcpRelay:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._accepting.set()
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True, name="relay-accept").start()
        return self

    def close(self) -> None:
        self._accepting.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> TcpRelay:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._accepting.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._accepting.is_set():
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True, name="relay-pump").start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(True)
                selector.register(sock, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in selector.select(timeout=1.0):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        peers[source].sendall(data)
            except (OSError, ValueError):
                return
            finally:
                with self._lock:
                    self._connections.difference_update(peers)
                for sock in peers:
                    sock.close()


class SilentServer:
    """A loopback TCP server that accepts connections, reads the request and never answers (a CRL
    distribution point that hangs).  ``answer_with(body)`` turns it into an HTTP server returning
    ``body`` (the CRL coming back)."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._body: bytes | None = None
        self._held: list[socket.socket] = []
        self._running = True
        self.connections = 0
        threading.Thread(target=self._loop, daemon=True, name="silent-server").start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer_with(self, body: bytes | None) -> None:
        self._body = body

    def _loop(self) -> None:
        while self._running:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self._body is None:
                self._held.append(sock)  # read nothing, answer nothing: the client must time out
                continue
            with sock:
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    sock.recv(65536)
                    head = (
                        f"HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\n"
                        f"Content-Length: {len(self._body)}\r\nConnection: close\r\n\r\n"
                    ).encode()
                    sock.sendall(head + self._body)

    def close(self) -> None:
        self._running = False
        self._listener.close()
        for sock in self._held:
            sock.close()


# --------------------------------------------------------------------------------------------------
# Certificates and stacks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCert:
    """A client certificate + key on disk."""

    name: str
    cert: Path
    key: Path
    thumbprint: str

    def session(self, ca: Path) -> requests.Session:
        return requests_session(cert=self.cert, key=self.key, ca=ca)


def dev_client(pki: DevPKI, name: str) -> ClientCert:
    return ClientCert(name, pki.path(name), pki.path(name, "key"), pki.thumbprint(name))


def issue_clients(pki: DevPKI, names: list[str]) -> dict[str, ClientCert]:
    """Extra client certificates signed by the dev root CA (its key is in the dev PKI directory)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    root = devpki.Issued(
        x509.load_pem_x509_certificate(pki.path("ca").read_bytes()),
        serialization.load_pem_private_key(pki.path("ca", "key").read_bytes(), password=None),
    )
    directory = pki.out_dir / "extra"
    directory.mkdir(exist_ok=True)
    issued: dict[str, ClientCert] = {}
    for name in names:
        leaf = devpki.issue_client(root, name)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(leaf.cert_pem())
        key.write_bytes(leaf.key_pem())
        key.chmod(0o600)
        issued[name] = ClientCert(name, cert, key, leaf.thumbprint)
    return issued


# One Django start instead of one per authority and registration.
_SETUP_SCRIPT = """
import json, os
from pathlib import Path
from certauth.authorities import add_authority
from certauth.certificates import load_certificate
from certauth.models import TrustedAuthority
from certauth.services import get_or_create_identity, register_certificate
spec = json.loads(os.environ["CERTAUTH_E2E_SETUP"])
for name, path, crl_url in spec["authorities"]:
    data = Path(path).read_bytes()
    if not TrustedAuthority.objects.filter(name=name).exists():
        add_authority(name, data, crl_url=crl_url)
for identity, path, scopes in spec["register"]:
    entity, _ = get_or_create_identity(identity, scopes=scopes)
    register_certificate(entity, load_certificate(Path(path).read_bytes()))
print("ok")
"""


def make_stack(
    base: Path,
    *,
    database_url: str | None = None,
    mode: str = "on",
    workers: int = 2,
    gunicorn_instances: int = 1,
    env: dict[str, str] | None = None,
    upstream: str = "unix",
) -> E2EStack:
    """A migrated, not yet started stack with the dev PKI's root and intermediate CA trusted.  SQLite in
    ``base/var`` unless ``database_url`` is given."""
    require_nginx()
    pki = create_dev_pki(base / "pki")
    var = base / "var"
    var.mkdir(exist_ok=True)
    stack = Stack(
        var,
        pki_dir=pki.out_dir,
        port=0,
        workers=workers,
        gunicorn_instances=gunicorn_instances,
        mode=mode,  # type: ignore[arg-type]
        upstream=upstream,  # type: ignore[arg-type]
        env={
            "DATABASE_URL": database_url or f"sqlite:///{var / 'e2e.sqlite3'}",
            "CERTAUTH_VAR_DIR": str(var),
            "SECRET_KEY": "e2e-not-secret",
            "DEBUG": "false",
            **(env or {}),
        },
    )
    handle = E2EStack(stack=stack, pki=pki, env=stack.env)
    handle.manage("migrate", "--noinput", "--verbosity", "0")
    return handle


def setup_registry(
    e2e: E2EStack,
    register: list[tuple[str, ClientCert, list[str]]],
    *,
    crl_url: str = "",
) -> None:
    """Trust the dev root CA (optionally with ``crl_url``, where its CRL is fetched) and the intermediate
    CA, and register certificates, in one ``manage.py shell``."""
    spec = {
        "authorities": [
            ["dev root CA", str(e2e.pki.path("ca")), crl_url],
            ["dev intermediate CA", str(e2e.pki.path("intermediate-ca")), ""],
        ],
        "register": [[identity, str(cert.cert), scopes] for identity, cert, scopes in register],
    }
    e2e.env["CERTAUTH_E2E_SETUP"] = json.dumps(spec)
    try:
        e2e.manage("shell", "--no-imports", "-c", _SETUP_SCRIPT)
    finally:
        e2e.env.pop("CERTAUTH_E2E_SETUP", None)


_AUDIT_SCRIPT = """
import json
from django.db.models import Sum
from certauth.models import AuthenticationFailure
rows = AuthenticationFailure.objects.values("reason", "thumbprint_sha256").annotate(n=Sum("count"))
print(json.dumps([[r["reason"], r["thumbprint_sha256"], r["n"]] for r in rows]))
"""


def audit_counts(e2e: E2EStack) -> Counter[tuple[str, str]]:
    """Refusals recorded in the stack's database: (reason, thumbprint) -> summed ``count``."""
    output = e2e.manage("shell", "--no-imports", "-c", _AUDIT_SCRIPT).stdout.strip().splitlines()[-1]
    return Counter({(reason, thumbprint): int(count) for reason, thumbprint, count in json.loads(output)})


# --------------------------------------------------------------------------------------------------
# A bounded load: a few threads, each with its own requests session
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    client: str
    cert: str
    sent: float  # time.monotonic() before sending
    status: int  # 0: no HTTP answer (connection error or timeout)
    reason: str


@dataclass
class LoadClient:
    """One thread; ``cert`` can be switched while the load runs (rotation)."""

    name: str
    cert: ClientCert
    path: str = "/api/whoami/"
    switched: threading.Event = field(default_factory=threading.Event)
    _next: ClientCert | None = None

    def switch_to(self, cert: ClientCert) -> None:
        self.switched.clear()
        self._next = cert


class Load:
    """Runs ``clients`` concurrently against the stack until ``stop()``; every answer becomes a ``Sample``.
    ``pause`` between a thread's requests keeps the load small on a shared machine."""

    def __init__(self, e2e: E2EStack, clients: list[LoadClient], *, pause: float = 0.01, timeout: float = 10) -> None:
        self.e2e = e2e
        self.clients = clients
        self.pause = pause
        self.timeout = timeout
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def __enter__(self) -> Load:
        for client in self.clients:
            thread = threading.Thread(target=self._run, args=(client,), daemon=True, name=f"load-{client.name}")
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def wait_until(self, predicate: Callable[[list[Sample]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self.samples):
                    return True
            time.sleep(0.05)
        return False

    def _run(self, client: LoadClient) -> None:
        ca = self.e2e.pki.path("ca")
        session = client.cert.session(ca)
        try:
            while not self._stop.is_set():
                if client._next is not None:
                    session.close()
                    client.cert, client._next = client._next, None
                    session = client.cert.session(ca)
                    client.switched.set()
                sent = time.monotonic()
                status, reason = 0, ""
                try:
                    response = session.get(self.e2e.url(client.path), timeout=self.timeout)
                    status = response.status_code
                    if status != 200:
                        reason = _reason_of(response)
                except requests.RequestException as error:
                    with self._lock:
                        self.errors.append(f"{client.name}: {type(error).__name__}: {error}")
                with self._lock:
                    self.samples.append(Sample(client.name, client.cert.name, sent, status, reason))
                self._stop.wait(self.pause)
        finally:
            session.close()


def _reason_of(response: requests.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except ValueError:
        return f"<non-JSON {response.status_code}>"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Per status and reason, for assertion messages and the report."""
    return dict(Counter(f"{s.cert}:{s.status}:{s.reason}" for s in samples))
