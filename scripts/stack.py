"""The real stack: nginx terminating mutual TLS in front of gunicorn (WSGI) or uvicorn (ASGI) running the
reference project.

``Stack`` starts both as child processes (each in its own process group, so Ctrl-C in the terminal
reaches only us and we stop them in order), waits until ``/healthz`` answers through TLS, and stops
them on ``stop()``, on leaving a ``with`` block, at interpreter exit, and on SIGTERM/SIGHUP.
Used by ``make run`` (``python -m scripts.stack run``) and the end-to-end tests.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as dt
import fcntl
import http.client
import importlib.util
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Literal

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python scripts/stack.py` as well as `python -m scripts.stack`
    sys.path.insert(0, str(REPO))

from certauth import nginxconf, privatefiles, proxyconf  # noqa: E402  (pure modules: no Django needed here)

DEFAULT_PORT = 8443
STOP_TIMEOUT = 10.0
#: sun_path holds 108 bytes on Linux; a longer socket path cannot be bound.
MAX_SOCKET_PATH = 100
#: uvicorn's --limit-concurrency per worker (connections plus requests in flight; 503 beyond).
UVICORN_LIMIT_CONCURRENCY = 1000
#: The settings that name a proxy's forwarding dialect, passed to the project as ``CERTAUTH_<NAME>``.
DIALECT_SETTINGS = ("CERTIFICATE_HEADER", "FORWARDING_FORMAT", "VERIFY_HEADER", "CLIENT_IP_HEADER", "CHAIN_HEADER")
#: The application servers ``make run SERVER=...`` can start.
SERVERS = ("gunicorn", "uvicorn")


class StackError(RuntimeError):
    """The stack could not start (port taken, nginx missing, a process died, health check timed out)."""


def find_nginx() -> str | None:
    """Path of the nginx binary; it lives in /usr/sbin, which is not on a normal user's PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_proxy(name: str) -> str | None:
    """Path of the program that runs proxy ``name`` (``certauth.proxyconf.PROXIES``), or None."""
    return find_nginx() if name == "nginx" else proxyconf.find_proxy(name)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As nginx does: a port in TIME_WAIT from our previous run is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


try:  # loaded here, not in the forked child, where dlopen could deadlock
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None) if sys.platform == "linux" else None
except OSError:
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the process that started us dies (even by SIGKILL),
    so a killed test run leaves no nginx or gunicorn behind.  Linux only; best effort."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"--- {path}: (none)"
    return f"--- {path} (last {lines} lines):\n" + "\n".join(text.splitlines()[-lines:])


class Stack:
    """nginx (mTLS, ``ssl_verify_client <mode>``) in front of gunicorn, for one var directory.

    ``server="uvicorn"`` runs ``project.asgi:application`` under uvicorn instead, with the same upstream,
    limits and trust (``_uvicorn_command``); every "gunicorn" below then means that uvicorn.
    ``server_args`` are appended to the server's command line (tests that try another flag).

    ``var_dir/run/`` receives nginx.conf, the pid file and ``logs/``.  ``pki_dir`` holds a dev PKI
    (server.pem/.key, ca.pem, ca-bundle.pem); the proxy verifies client certificates against ``client_ca``
    (default ``pki_dir/ca-bundle.pem``; ``make run`` passes the registry's bundle), which certauth also gets as
    ``CERTAUTH_PROXY_CA_BUNDLE``, and ``reload_proxy()`` makes a running proxy read a rewritten one.  ``env``
    is added to this process's environment for gunicorn (DATABASE_URL, CERTAUTH_VAR_DIR, ...).  ``port=0``
    picks a free port.
    ``gunicorn_instances`` > 1 starts that many gunicorn masters on different loopback ports, all in
    nginx's one upstream (what several application hosts behind one proxy look like; they share the
    database named by DATABASE_URL).

    ``upstream="unix"`` (the default) connects nginx to gunicorn over unix sockets in ``run/gunicorn/``
    (mode 0700, owned by the user running the stack, which nginx's workers run as), and certauth trusts
    only that socket (``CERTAUTH_TRUSTED_PROXIES=unix:``): other local users cannot connect at all.
    ``"tcp"`` uses loopback ports (tests that call a gunicorn instance directly).  Either way nginx sends
    a proxy secret certauth requires (``proxy_secret``, a new one per ``Stack``, kept in
    ``run/proxy-secret``, mode 0600).
    """

    def __init__(
        self,
        var_dir: Path | str,
        *,
        pki_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        gunicorn_port: int = 0,
        mode: nginxconf.Mode = "on",
        workers: int = 2,
        gunicorn_instances: int = 1,
        env: Mapping[str, str] | None = None,
        crl: Path | str | None = None,
        static_root: Path | str | None = None,
        startup_timeout: float = 60.0,
        upstream: Literal["unix", "tcp"] = "unix",
        requests_per_second: int | None = None,
        server: Literal["gunicorn", "uvicorn"] = "gunicorn",
        server_args: Sequence[str] = (),
        proxy: str = "nginx",
        client_ca: Path | str | None = None,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            # Whoever reaches gunicorn or this nginx decides what certauth sees; keep both local.
            raise StackError(f"the dev/test stack listens on loopback only, not {host}")
        self.var_dir = Path(var_dir).absolute()
        self.pki_dir = Path(pki_dir).absolute() if pki_dir else self.var_dir / "pki"
        # The CA file the proxy verifies client certificates against (not in optional_no_ca), and certauth's
        # PROXY_CA_BUNDLE: `make run` gives the registry's (`certauth authority bundle`), tests the dev PKI's.
        self.client_ca = Path(client_ca).absolute() if client_ca else self.pki_dir / "ca-bundle.pem"
        self.host = host
        self.port = port or free_port(host)
        if server not in ("gunicorn", "uvicorn"):
            raise StackError(f"server must be 'gunicorn' or 'uvicorn', not {server!r}")
        self.server = server
        if proxy not in proxyconf.PROXIES:
            raise StackError(f"proxy must be one of {', '.join(proxyconf.PROXIES)}, not {proxy!r}")
        if mode not in proxyconf.renderer(proxy).MODES:
            raise StackError(
                f"{proxy} cannot run mode {mode!r} (it renders {', '.join(proxyconf.renderer(proxy).MODES)})"
            )
        self.proxy = proxy
        self.server_args = list(server_args)
        self.gunicorn_port = gunicorn_port
        self.mode = mode
        self.workers = workers
        if gunicorn_instances < 1:
            raise StackError("gunicorn_instances must be at least 1")
        self.gunicorn_instances = gunicorn_instances
        self.gunicorn_ports: list[int] = []
        self.extra_env = dict(env or {})
        self.crl = Path(crl) if crl else None
        self.static_root = Path(static_root) if static_root else None
        self.startup_timeout = startup_timeout
        self.run_dir = self.var_dir / "run"
        self.log_dir = self.run_dir / "logs"
        self.proxy_conf = self.run_dir / ("nginx.conf" if proxy == "nginx" else f"{proxy}.conf")
        self.nginx_conf = self.proxy_conf  # the name older callers use
        self.access_log = self.log_dir / "gunicorn-access.log"
        if upstream not in ("unix", "tcp"):
            raise StackError(f"upstream must be 'unix' or 'tcp', not {upstream!r}")
        self.upstream = upstream
        # nginx's per-address request rate (None: the shipped configuration's); a benchmark from one
        # address needs more.
        self.requests_per_second = requests_per_second
        self.socket_dir = self.run_dir / server
        if upstream == "unix" and len(str(self.socket_path(gunicorn_instances - 1))) > MAX_SOCKET_PATH:
            raise StackError(f"{self.socket_dir} is too long a path for a unix socket: use a shorter --var-dir")
        # Rotated with every stack (every `make run`): written before anything reads the environment, so
        # manage.py commands run with `env` see the same file gunicorn does.
        self.proxy_secret = secrets.token_urlsafe(32)
        self.proxy_secret_file = self.run_dir / "proxy-secret"
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        privatefiles.write_file(self.proxy_secret_file, (self.proxy_secret + "\n").encode())
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []
        self._previous_handlers: dict[int, Any] = {}

    # --- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://{_host_port(self.host, self.port)}"

    def access_log_of(self, instance: int) -> Path:
        """The access log of gunicorn instance ``instance`` (0 is ``access_log``)."""
        return self.access_log if instance == 0 else self.log_dir / f"gunicorn-access-{instance}.log"

    def socket_path(self, instance: int) -> Path:
        """The unix socket of gunicorn instance ``instance`` (with ``upstream="unix"``)."""
        return self.socket_dir / f"{self._instance_name(instance)}.sock"

    def _bind(self, instance: int) -> str:
        if self.upstream == "unix":
            return f"unix:{self.socket_path(instance)}"
        return f"127.0.0.1:{self.gunicorn_ports[instance]}"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.pem"

    @property
    def env(self) -> dict[str, str]:
        """The environment gunicorn runs with (and manage.py calls should use)."""
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "project.settings",
                "PYTHONUNBUFFERED": "1",
                # nginx only verifies the chain in on/optional; in optional_no_ca certauth does.
                "CERTAUTH_PROXY_VERIFIES_CERTIFICATE": "false" if self.mode == "optional_no_ca" else "true",
                # Only nginx: the socket only the stack's user may open, and the secret only nginx sends.
                "CERTAUTH_TRUSTED_PROXIES": "unix:" if self.upstream == "unix" else "127.0.0.1",
                "CERTAUTH_PROXY_SECRET_FILE": str(self.proxy_secret_file),
            }
        )
        if self.mode != "optional_no_ca":
            # What the proxy verifies against: `certauth doctor` and certauth.W019 compare it with the registry.
            env["CERTAUTH_PROXY_CA_BUNDLE"] = str(self.client_ca)
        if self.proxy != "nginx":
            # The proxy's forwarding dialect, as `certauth proxy-config --proxy NAME` prints it.
            settings = proxyconf.renderer(self.proxy).certauth_settings(self.proxy_options())
            for name in (
                "CERTIFICATE_HEADER",
                "FORWARDING_FORMAT",
                "VERIFY_HEADER",
                "CLIENT_IP_HEADER",
                "CHAIN_HEADER",
            ):
                if name in settings:
                    env[f"CERTAUTH_{name}"] = settings[name] or ""
        # Admin forms posted from the port the browser used (tests pick random ports).
        env.setdefault(
            "CSRF_TRUSTED_ORIGINS",
            ",".join(f"https://{_host_port(name, self.port)}" for name in ("localhost", "127.0.0.1", "::1")),
        )
        env.update(self.extra_env)
        return env

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.poll() is None for p in self._processes.values())

    # --- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Stack:
        """Start gunicorn and nginx and wait for ``/healthz``; raises ``StackError`` (after cleaning
        up) when that does not happen within ``startup_timeout`` seconds."""
        if self._processes:
            raise StackError("already started")
        binary = find_proxy(self.proxy)
        if binary is None:
            raise StackError(
                f"{self.proxy} is not installed: run scripts/install-system-deps.sh (as root) or `make run`"
            )
        # With "on", the health check presents the dev client certificate.
        probe = ("client.pem", "client.key") if self.mode == "on" else ()
        for name in ("server.pem", "server.key", "ca.pem", *probe):
            if not (self.pki_dir / name).is_file():
                raise StackError(
                    f"{self.pki_dir / name} is missing: run `manage.py certauth devpki --out {self.pki_dir}`"
                )
        if not port_is_free(self.host, self.port):
            raise StackError(
                f"port {self.port} on {self.host} is already in use (another `make run`?). "
                f"Stop that process or choose another port (--port)."
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.upstream == "unix":
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            # Only this user (nginx's workers run as it, see _nginx_command) may enter: a neighbour cannot
            # even open the socket.  chmod too: the directory may be left over from an older run.
            self.socket_dir.chmod(0o700)
            for instance in range(self.gunicorn_instances):
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path(instance).unlink()  # a stale socket from a killed run
        if not self.gunicorn_port:
            self.gunicorn_port = free_port("127.0.0.1")
        self.gunicorn_ports = [self.gunicorn_port]
        while len(self.gunicorn_ports) < self.gunicorn_instances:
            candidate = free_port("127.0.0.1")
            if candidate not in self.gunicorn_ports and candidate != self.port:
                self.gunicorn_ports.append(candidate)
        if self._combined_key:  # it holds the server key: private from the first byte
            combined = (self.pki_dir / "server.pem").read_bytes() + (self.pki_dir / "server.key").read_bytes()
            privatefiles.write_file(self.combined_server_file, combined)
        # It holds the proxy secret: private from the first byte.
        privatefiles.write_file(self.proxy_conf, self.render_proxy_conf().encode())

        atexit.register(self.stop)
        self._install_signal_handlers()
        try:
            for instance in range(self.gunicorn_instances):
                self.start_instance(instance, wait=False)
            self._spawn(self.proxy, self._proxy_command(binary), self.log_dir / f"{self.proxy}-stderr.log")
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the proxy, then gunicorn: SIGTERM to each process group, SIGKILL after STOP_TIMEOUT.
        Safe to call more than once."""
        for name in [self.proxy, *self._processes]:
            process = self._processes.pop(name, None)
            if process is not None:
                _terminate_group(process)
        self._processes.clear()
        for handle in self._log_files:
            handle.close()
        self._log_files.clear()
        self._restore_signal_handlers()
        atexit.unregister(self.stop)

    def reload_proxy(self) -> None:
        """Re-render the proxy's configuration and make the running proxy use it, e.g. after ``certauth
        authority bundle --output`` rewrote ``client_ca``.  nginx: ``nginx -s reload`` with the same prefix and
        configuration, then wait until every worker of the old configuration has exited (from then on every
        new connection reaches a worker with the new CA file).  Other proxies: restarted."""
        process = self._processes.get(self.proxy)
        binary = find_proxy(self.proxy)
        if process is None or process.poll() is not None or binary is None:
            raise StackError(f"{self.proxy} is not running")
        privatefiles.write_file(self.proxy_conf, self.render_proxy_conf().encode())
        if self.proxy != "nginx":
            _terminate_group(self._processes.pop(self.proxy))
            self._spawn(self.proxy, self._proxy_command(binary), self.log_dir / f"{self.proxy}-stderr.log")
            self._wait_until_healthy()
            return
        old_workers = _children(process.pid)
        result = subprocess.run(
            [*self._proxy_command(binary), "-s", "reload"], cwd=REPO, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(f"nginx -s reload failed: {result.stdout}{result.stderr}\n{self.logs()}")
        deadline = time.monotonic() + self.startup_timeout
        while (old_workers & _children(process.pid)) or not _children(process.pid):
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"nginx did not take up its new configuration\n{self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        """The tail of every log, for error messages."""
        gunicorn_logs = [f"{self._instance_name(i)}.log" for i in range(self.gunicorn_instances)]
        return "\n".join(
            _tail(self.log_dir / name)
            for name in (*gunicorn_logs, f"{self.proxy}-stderr.log", "error.log", "access.log")
        )

    # --- one application host at a time (several gunicorn instances) --------------------------------
    def _instance_name(self, instance: int) -> str:
        return self.server if instance == 0 else f"{self.server}-{instance}"

    def stop_instance(self, instance: int) -> None:
        """Stop gunicorn instance ``instance`` (a host going down); nginx keeps running."""
        process = self._processes.pop(self._instance_name(instance), None)
        if process is not None:
            _terminate_group(process)

    def start_instance(self, instance: int, *, wait: bool = True) -> None:
        """(Re)start gunicorn instance ``instance`` on its port; with ``wait``, until it accepts connections."""
        name = self._instance_name(instance)
        if name in self._processes:
            raise StackError(f"{name} is already running")
        command = self._gunicorn_command(instance) if self.server == "gunicorn" else self._uvicorn_command(instance)
        self._spawn(name, command + self.server_args, self.log_dir / f"{name}.log")
        if wait and self.upstream == "unix":
            _wait_for_socket(self.socket_path(instance), self._processes[name], self.startup_timeout)
        elif wait:
            _wait_for_port("127.0.0.1", self.gunicorn_ports[instance], self._processes[name], self.startup_timeout)

    # --- pieces ------------------------------------------------------------------------------
    def proxy_options(self) -> proxyconf.ProxyOptions:
        """What the proxy's renderer is told (``certauth.proxyconf``)."""
        verifies = self.mode != "optional_no_ca"
        server_cert, server_key = self.pki_dir / "server.pem", self.pki_dir / "server.key"
        if self._combined_key:
            server_cert = server_key = self.combined_server_file
        return proxyconf.ProxyOptions(
            mode=self.mode,
            server_cert=server_cert,
            server_key=server_key,
            client_ca=self.client_ca if verifies else None,
            crl=self.crl if verifies else None,
            listen=_host_port(self.host, self.port),
            server_name="localhost",
            upstream=tuple(self._upstream_addresses()),
            standalone=True,
            prefix=self.run_dir,
            static_root=self.static_root,
            proxy_secret=self.proxy_secret,
            requests_per_second=self.requests_per_second or nginxconf.DEFAULT_REQUESTS_PER_SECOND,
        )

    @property
    def _combined_key(self) -> bool:
        """Does the proxy want the server certificate and key in one file (HAProxy 2.6's ``crt``)?"""
        return bool(getattr(proxyconf.renderer(self.proxy), "COMBINED_CERTIFICATE_AND_KEY", False))

    @property
    def combined_server_file(self) -> Path:
        """server.pem + server.key in one private file, for a proxy that reads both from one (``start``)."""
        return self.run_dir / "server-combined.pem"

    def render_proxy_conf(self) -> str:
        if self.proxy == "nginx":
            return self.render_nginx_conf()
        return proxyconf.renderer(self.proxy).render(self.proxy_options())

    def render_nginx_conf(self) -> str:
        verifies = self.mode != "optional_no_ca"
        return nginxconf.render(
            mode=self.mode,
            listen=_host_port(self.host, self.port),
            server_name="localhost",
            server_cert=self.pki_dir / "server.pem",
            server_key=self.pki_dir / "server.key",
            client_ca=self.client_ca if verifies else None,
            crl=self.crl if verifies else None,
            upstream=self._upstream_addresses(),
            standalone=True,
            prefix=self.run_dir,
            static_root=self.static_root,
            proxy_secret=self.proxy_secret,
            requests_per_second=self.requests_per_second or nginxconf.DEFAULT_REQUESTS_PER_SECOND,
        )

    def _upstream_addresses(self) -> list[str]:
        if self.upstream == "unix":
            return [f"unix:{self.socket_path(instance)}" for instance in range(self.gunicorn_instances)]
        return [f"127.0.0.1:{port}" for port in self.gunicorn_ports or [self.gunicorn_port]]

    def _gunicorn_command(self, instance: int = 0) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "project.wsgi:application",
            # A unix socket only nginx's user may open (certauth trusts "unix:"), or loopback TCP.
            "--bind", self._bind(instance),
            "--workers", str(self.workers),
            "--access-logfile", str(self.access_log_of(instance)),
            # With the worker's pid, so tests can tell that every worker saw a change.
            "--access-logformat", '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(L)ss pid=%(p)s',
            # Only X-Forwarded-Proto from nginx marks the request https; REMOTE_ADDR stays nginx's
            # address (gunicorn never rewrites it), which is what certauth checks.  The default
            # header_map ("drop") also drops underscore headers like X-SSL_Client_Cert.
            "--forwarded-allow-ips", "127.0.0.1",
            # Chosen with nginx's (certauth.nginxconf): any certificate OpenSSL accepts reaches certauth,
            # which refuses oversized ones itself (audited), never gunicorn's bare 431 / 414.
            "--limit-request-field_size", str(nginxconf.GUNICORN_FIELD_SIZE),
            "--limit-request-line", str(nginxconf.GUNICORN_REQUEST_LINE),
            "--graceful-timeout", "5",
            "--chdir", str(REPO),
        ]  # fmt: skip

    def _uvicorn_command(self, instance: int = 0) -> list[str]:
        """uvicorn as ``_gunicorn_command`` runs gunicorn (docs/deployment.md, "Running under ASGI")."""
        if self.upstream == "unix":
            bind = ["--uds", str(self.socket_path(instance))]
        else:
            bind = ["--host", "127.0.0.1", "--port", str(self.gunicorn_ports[instance])]
        return [
            sys.executable, "-m", "uvicorn", "project.asgi:application",
            # uvicorn chmods its socket 0666: the 0700 directory is what keeps neighbours out.
            *bind,
            "--workers", str(self.workers),
            # certauth decides trust from the real peer (unix: or nginx's address) and reads the client's
            # address from X-Forwarded-For itself: uvicorn must not put that address in REMOTE_ADDR (its
            # default does, for peers in --forwarded-allow-ips / $FORWARDED_ALLOW_IPS).  The scheme comes
            # from Django's SECURE_PROXY_SSL_HEADER instead.
            "--no-proxy-headers",
            # h11 (not httptools, whose header sizes are fixed): its one size limit covers the whole header
            # block, sized so any certificate nginx forwards reaches certauth (as gunicorn's field limit).
            "--http", "h11",
            "--h11-max-incomplete-event-size", str(nginxconf.UVICORN_HEADER_BLOCK),
            # Beyond this many connections and requests in flight per worker: 503 instead of unbounded memory.
            "--limit-concurrency", str(UVICORN_LIMIT_CONCURRENCY),
            # Longer than nginx's upstream keepalive_timeout (60 s): nginx closes idle upstream connections
            # first, so it never sends a request on one uvicorn is closing (a 502).
            "--timeout-keep-alive", "75",
            "--timeout-graceful-shutdown", "5",
            "--lifespan", "off",  # Django has no lifespan handler
            "--app-dir", str(REPO),
        ]  # fmt: skip

    def _proxy_command(self, binary: str) -> list[str]:
        # nginx: as root it would run its workers as "nobody", who cannot enter 0700 directories such as
        # pytest's tmp dirs: certauth.proxyconf.nginx.command runs them as the invoking user.  Loopback only.
        return proxyconf.renderer(self.proxy).command(binary, self.proxy_conf, self.run_dir)

    def _spawn(self, name: str, command: Sequence[str], log: Path) -> None:
        handle = log.open("ab")
        self._log_files.append(handle)
        handle.write(f"\n=== {dt.datetime.now().isoformat()} {' '.join(command)}\n".encode())
        handle.flush()
        self._processes[name] = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C reaches us only, we stop them in order
            preexec_fn=_die_with_parent,  # only prctl(): no locks, no allocation
        )

    def _wait_until_healthy(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.mode == "on":
            # nginx lets nothing through without a client certificate, /healthz included: probe with the
            # dev PKI's client (nginx checks only its chain; /healthz needs no registered identity).
            context.load_cert_chain(self.pki_dir / "client.pem", self.pki_dir / "client.key")
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise StackError(f"{name} exited with status {process.returncode} while starting\n{self.logs()}")
            connection = http.client.HTTPSConnection(self.host, self.port, context=context, timeout=5)
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return
                last_error = f"/healthz answered {response.status}"
            except (OSError, http.client.HTTPException) as error:
                last_error = f"{type(error).__name__}: {error}"
            finally:
                connection.close()
            time.sleep(0.2)
        raise StackError(
            f"{self.base_url}/healthz did not answer 200 within {self.startup_timeout:.0f} s "
            f"({last_error})\n{self.logs()}"
        )

    def _install_signal_handlers(self) -> None:
        """SIGTERM and SIGHUP unwind like Ctrl-C (KeyboardInterrupt), so ``finally`` blocks, ``with``
        and pytest's teardown stop the children.  Only possible from the main thread."""
        if threading_is_not_main():
            return

        def unwind(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(signum)
            if previous in (signal.SIG_DFL, None):
                self._previous_handlers[signum] = previous
                signal.signal(signum, unwind)

    def _restore_signal_handlers(self) -> None:
        if threading_is_not_main():
            return
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers.clear()


def _children(pid: int) -> set[int]:
    """The pids of ``pid``'s live child processes (Linux ``/proc``)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def _wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"gunicorn on {path} exited with status {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            return
        time.sleep(0.1)
    raise StackError(f"gunicorn did not listen on {path} within {timeout:.0f} s")


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"gunicorn on port {port} exited with status {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise StackError(f"gunicorn did not listen on {host}:{port} within {timeout:.0f} s")


def threading_is_not_main() -> bool:
    import threading

    return threading.current_thread() is not threading.main_thread()


def _terminate_group(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Workers that outlived their master (they share its process group).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# `python -m scripts.stack run`: what `make run` does
# --------------------------------------------------------------------------------------------------


def _manage(env: Mapping[str, str], *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "manage.py"), *args]
    result = subprocess.run(command, cwd=REPO, env=dict(env), text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = f"\n{result.stdout}{result.stderr}" if capture else ""
        raise StackError(f"`manage.py {' '.join(args)}` failed with exit status {result.returncode}{detail}")
    return result


def trust_dev_authorities(env: Mapping[str, str], pki_dir: Path) -> str:
    """Make the dev PKI's root and intermediate CA trusted authorities in certauth's registry (idempotent):
    certauth checks chains itself, also behind ``ssl_verify_client on``.  Returns what it did."""
    from certauth.devpki import DevPKI  # pure module

    pki = DevPKI.load(pki_dir)
    lines = []
    for label, name in (("root", "ca"), ("intermediate", "intermediate-ca")):
        # The thumbprint in the name: a renewed dev PKI brings a new CA with the same subject.
        result = _manage(
            env, "certauth", "authority", "add", "--name", f"dev {label} CA {pki.thumbprint(name)[:12]}",
            "--cert", str(pki.path(name)), "--notes", f"development PKI in {pki_dir}", capture=True,
        )  # fmt: skip
        lines.append(result.stdout.strip().splitlines()[0])
    return "\n".join(lines)


_ADMIN_SCRIPT = """
import os
from django.contrib.auth import get_user_model
User = get_user_model()
if User.objects.filter(username="admin").exists():
    print("exists")
else:
    User.objects.create_superuser("admin", "admin@localhost", os.environ["CERTAUTH_ADMIN_PASSWORD"])
    print("created")
"""


def _admin_password(var_dir: Path) -> tuple[str, str]:
    """(password, where it came from): the environment, var/admin-password, or a new random one."""
    if os.environ.get("CERTAUTH_ADMIN_PASSWORD"):
        return os.environ["CERTAUTH_ADMIN_PASSWORD"], "from $CERTAUTH_ADMIN_PASSWORD"
    path = var_dir / "admin-password"
    if path.is_file():
        return path.read_text().strip(), f"kept in {path}"
    password = secrets.token_urlsafe(12)
    if not privatefiles.create_file(path, (password + "\n").encode()):  # 0600 from the first byte, no link followed
        return path.read_text().strip(), f"kept in {path}"
    return password, f"generated, kept in {path}"


def _demo_entry_status(env: Mapping[str, str], pki_dir: Path) -> str | None:
    """The registry's status of the dev PKI's demo client certificate ("valid", "revoked", …), None when it is
    not registered."""
    import json

    from certauth.devpki import DevPKI

    listing = _manage(env, "certauth", "list", "--format", "json", capture=True)
    thumbprint = DevPKI.load(pki_dir).thumbprint("client")
    for identity in json.loads(listing.stdout or "[]"):
        for entry in identity["certificates"]:
            if entry["thumbprint"] == thumbprint:
                return str(entry["status"])
    return None


def _demo_certificate_warning(env: Mapping[str, str], pki_dir: Path) -> str:
    """A note when the demo client's entry no longer authenticates (e.g. retired in a rotation try-out)."""
    status = _demo_entry_status(env, pki_dir)
    if status is not None and status not in {"valid", "expiring"}:
        return (
            f"\n\nNote: the demo certificate {pki_dir.name}/client.pem is {status} in the registry "
            "(you retired or revoked it), so the first curl above answers 401. Use the certificate you "
            "registered as its successor, or start afresh with `make clean && make run`."
        )
    return ""


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


#: What `make run` keeps in var/ that is secret (admin sessions, the signing key, the admin password).
SECRET_FILES = ("certauth.sqlite3", "certauth.sqlite3-wal", "certauth.sqlite3-shm", "secret_key", "admin-password")


@dataclass(frozen=True)
class Prepared:
    env: dict[str, str]
    pki_dir: Path
    #: The registry's CA bundle (``certauth authority bundle``): what the proxy verifies client certificates
    #: against, so it trusts exactly the enabled authorities.
    client_ca: Path
    password: str
    origin: str
    created: str
    demo_warning: str


def private_var_dir(var_dir: Path) -> None:
    """var/ 0700 and its secrets 0600, also when an older `make run` left them readable (0755/0644).
    Everything created later is private from its first byte (the umask and ``certauth.privatefiles``)."""
    try:
        privatefiles.ensure_private_directory(var_dir)
    except privatefiles.UnsafeDirectory as error:
        raise StackError(f"refusing to keep secrets in {var_dir}: {error}") from error
    for name in SECRET_FILES:
        # Safe to follow: nobody else can write to var/ (just checked), so nothing here is a planted link.
        with contextlib.suppress(FileNotFoundError):
            (var_dir / name).chmod(0o600)


def prepare(var_dir: Path) -> Prepared:
    """What `make run` does before starting the servers: a private var/, migrations, static files, the dev
    PKI, the demo identity, the trusted dev CAs and the admin user (idempotent)."""
    pki_dir = var_dir / "pki"
    env = dict(os.environ, CERTAUTH_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="project.settings")
    private_var_dir(var_dir)
    # As gunicorn will run (Stack.env): only nginx's unix socket is a proxy.
    env["CERTAUTH_TRUSTED_PROXIES"] = "unix:"
    _manage(env, "migrate", "--noinput", "--verbosity", "0")
    _manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    # Reuses an existing PKI (renews it when the server or demo certificate is about to expire).
    _manage(env, "certauth", "devpki", "--out", str(pki_dir), capture=True)
    # The dev CAs are trusted before the demo client is registered: registering checks the certificate against
    # the trust policy, and warns (rightly) that it would be refused while no authority is enabled.
    trusted = trust_dev_authorities(env, pki_dir).splitlines()
    registered = ["demo-client: its certificate is revoked (see the note below), left as it is"]
    if _demo_entry_status(env, pki_dir) != "revoked":  # `certauth register` refuses a revoked one (exit 1)
        registered = _manage(
            env, "certauth", "register", "--identity", "demo-client", "--cert", str(pki_dir / "client.pem"),
            "--scope", "orders:read", "--scope", "orders:write", "--scope", METRICS_SCOPE,
            "--label", "make run demo client",
            capture=True,
        ).stdout.strip().splitlines()  # fmt: skip
    for line in [*trusted, *registered]:
        print(f"   {line}", flush=True)
    client_ca = write_proxy_bundle(env, var_dir)
    demo_warning = _demo_certificate_warning(env, pki_dir)
    password, origin = _admin_password(var_dir)
    created = _manage(
        {**env, "CERTAUTH_ADMIN_PASSWORD": password}, "shell", "--no-imports", "-c", _ADMIN_SCRIPT, capture=True
    ).stdout.strip()
    print(f"   admin user: {created}", flush=True)
    return Prepared(env, pki_dir, client_ca, password, origin, created, demo_warning)


#: The scope `make run` serves its Prometheus metrics to (``METRICS_ALLOW = "scope"``; the demo client holds it).
METRICS_SCOPE = "metrics:read"


def metrics_env(var_dir: Path) -> dict[str, str]:
    """What `make run` adds to the server's environment for Prometheus metrics (docs/metrics.md): on, served
    through the proxy to a client certificate holding ``METRICS_SCOPE`` (gunicorn listens on a unix socket
    only, so the loopback default would admit no one), its workers summed through a multiprocess directory
    emptied at every start (prometheus-client's files of earlier processes would otherwise count again)."""
    directory = var_dir / "run" / "prometheus"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    return {
        "CERTAUTH_METRICS_ENABLED": "true",
        "CERTAUTH_METRICS_ALLOW": "scope",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }


#: Where `make run` keeps the registry's CA bundle for the proxy (public certificates; rewritten every start).
PROXY_BUNDLE_NAME = "proxy-ca-bundle.pem"


def write_proxy_bundle(env: Mapping[str, str], var_dir: Path) -> Path:
    """``certauth authority bundle --output var/proxy-ca-bundle.pem``: the proxy of this run trusts exactly the
    enabled authorities (the dev CAs, and whatever `authority add` or the admin trusted since).  Returns it."""
    path = var_dir / PROXY_BUNDLE_NAME
    written = _manage(env, "certauth", "authority", "bundle", "--output", str(path), capture=True)
    print(f"   {written.stdout.strip().splitlines()[0]}", flush=True)
    return path


#: Held for the life of a `make run`: a second one in the same var/ would write a new proxy secret (the
#: first stack's nginx then sends a stale one) and, when it stops, remove the first stack's sockets.
_RUN_LOCK: int | None = None


def hold_run_lock(var_dir: Path) -> int:
    """One `make run` per state folder: an exclusive ``flock`` on ``var/make-run.lock`` held until the process
    exits (the kernel drops it then, also after a crash).  Raises ``StackError`` naming the running one."""
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(var_dir / "make-run.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise StackError(
            f"a stack from {var_dir} is already running (pid {holder}): stop it first (Ctrl-C), or run a second "
            "one from its own folder: make run PORT=8444 CERTAUTH_VAR_DIR=/tmp/certauth-2"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def run(arguments: argparse.Namespace) -> int:
    var_dir = Path(arguments.var_dir or os.environ.get("CERTAUTH_VAR_DIR") or REPO / "var").absolute()
    # Everything this run and its children create (database, logs, static files, nginx's temp files) is
    # private from its first byte; nginx runs as this same user, so it still reads what it needs.
    os.umask(0o077)
    global _RUN_LOCK
    _RUN_LOCK = hold_run_lock(var_dir)
    if not port_is_free(arguments.host, arguments.port):
        raise StackError(
            f"port {arguments.port} on {arguments.host} is already in use (another `make run`?). "
            f"Stop that process or choose another port: make run PORT=8444"
        )
    print(f"== preparing {var_dir}", flush=True)
    if arguments.server == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        raise StackError("uvicorn is not installed: pip install -e '.[server]' (or pip install 'uvicorn>=0.30')")
    prepared = prepare(var_dir)
    pki_dir, password, origin, created = prepared.pki_dir, prepared.password, prepared.origin, prepared.created
    demo_warning = prepared.demo_warning

    stack = Stack(
        var_dir,
        pki_dir=pki_dir,
        host=arguments.host,
        port=arguments.port,
        mode=arguments.mode,
        workers=arguments.workers,
        env={"CERTAUTH_VAR_DIR": str(var_dir), **metrics_env(var_dir)},
        # No ssl_crl here: revocation is certauth's registry, and devpki's ca.crl.pem covers only the
        # root, so OpenSSL would refuse intermediate-issued clients ("unable to get certificate CRL").
        static_root=var_dir / "static",
        server=arguments.server,
        proxy=arguments.proxy,
        client_ca=prepared.client_ca,
    )
    server, proxy = arguments.server, arguments.proxy
    print(f"== starting {proxy} ({arguments.mode}) and {server} ({arguments.workers} workers)", flush=True)
    try:
        stack.start()
    except StackError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    try:
        # The server certificate names localhost too; that is what people type.
        url = f"https://localhost:{stack.port}" if arguments.host == "127.0.0.1" else stack.base_url
        pki = _display(pki_dir)
        if created == "created":
            login = f"admin / {password}   ({origin})"
        else:
            # Never print a password that may no longer be the user's: it may have been changed since.
            login = "admin (existing user, password unchanged; reset: .venv/bin/python manage.py changepassword admin)"
        if arguments.mode == "on":
            # nginx lets nothing through without a certificate, the admin and /healthz included.
            browser_certificate = f"the admin needs a client certificate too: import {pki}/client.p12"
        else:
            browser_certificate = f"no client certificate needed; for the API import {pki}/client.p12"
        print(
            f"""
certauth is running: {proxy} (client certificates: {arguments.mode}) on {stack.base_url}
                     -> {server} on {stack.socket_path(0)} (only this user may open it)
  API     {url}/api/whoami/   {url}/api/orders/
  Admin   {url}/admin/   login: {login}
          browsers: trust {pki}/ca.pem (or accept the warning);
          {browser_certificate} (password dev-password)
  Logs    {_display(stack.log_dir)}/
  CAs     {proxy} trusts the enabled authorities, {_display(prepared.client_ca)}; after trusting another one
          (manage.py certauth authority add, or the admin) restart `make run` (or: manage.py certauth authority
          bundle --output {_display(prepared.client_ca)}, then reload {proxy}); `manage.py certauth doctor` checks

Try it:
  curl --cacert {pki}/ca.pem --cert {pki}/client.pem --key {pki}/client.key {url}/api/whoami/
  # no certificate: 401 missing_certificate (with --mode on the proxy refuses it; certauth still answers)
  curl --cacert {pki}/ca.pem {url}/api/whoami/
  # a valid certificate nobody registered: 401 unknown_certificate
  curl --cacert {pki}/ca.pem --cert {pki}/unregistered.pem --key {pki}/unregistered.key {url}/api/whoami/
  # Prometheus metrics, for a certificate whose identity holds {METRICS_SCOPE} (docs/metrics.md)
  curl --cacert {pki}/ca.pem --cert {pki}/client.pem --key {pki}/client.key {url}/-/certauth/metrics

Ctrl-C stops {proxy} and {server}.{demo_warning}""",
            flush=True,
        )
        while stack.running:
            time.sleep(0.5)
        print(f"make run: a process exited unexpectedly\n{stack.logs()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.stack", description="Run certauth behind nginx with mutual TLS."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = commands.add_parser(
        "run",
        help="migrate, make a dev PKI, register the demo client, create the admin, start nginx + gunicorn/uvicorn",
        description="What `make run` does; Ctrl-C stops everything.",
    )
    run_parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"nginx port (default {DEFAULT_PORT})")
    run_parser.add_argument("--host", default="127.0.0.1", help="loopback address for nginx (default 127.0.0.1)")
    run_parser.add_argument(
        "--mode",
        choices=nginxconf.MODES,
        default="optional",
        help="ssl_verify_client (default optional: nginx verifies a certificate when one comes, the admin "
        "works without one; 'on' requires a certificate for every URL, the admin included)",
    )
    run_parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    run_parser.add_argument(
        "--server",
        choices=SERVERS,
        default="gunicorn",
        help="the application server behind nginx: gunicorn (WSGI, default) or uvicorn (ASGI, project.asgi; "
        "pip install uvicorn, in the server extra)",
    )
    run_parser.add_argument(
        "--proxy",
        choices=proxyconf.PROXIES,
        default="nginx",
        help="the TLS proxy in front: nginx (default), haproxy, apache or caddy (certauth.proxyconf renders its "
        "configuration; scripts/install-system-deps.sh installs it)",
    )
    run_parser.add_argument("--var-dir", help="state directory (default $CERTAUTH_VAR_DIR or ./var)")
    arguments = parser.parse_args(argv)
    # Ctrl-C must stop the stack even when started from a shell that set SIGINT to "ignore" (as
    # non-interactive shells do for background jobs), which Python would otherwise inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(arguments)
    except StackError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmake run: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
