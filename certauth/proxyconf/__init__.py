"""Configurations for the TLS proxies that terminate mutual TLS in front of certauth: one renderer module per
proxy (``certauth.proxyconf.nginx``, ``.haproxy``, ``.apache``, ``.caddy``).  Pure Python: no Django imports,
so ``scripts/stack.py`` and the tests use them without settings.

Every renderer module provides the same interface (``Renderer``):

* ``MODES``: the verification modes it can render, a subset of ``"on"`` (the proxy verifies and lets nothing
  through without a certificate), ``"optional"`` (the proxy verifies a certificate when one comes) and
  ``"optional_no_ca"`` (the proxy forwards any certificate; certauth verifies the chain).
* ``render(options) -> str``: the configuration.  Whatever the proxy, it terminates TLS with
  ``server_cert``/``server_key``, asks for a client certificate and verifies it against ``client_ca`` (not in
  ``optional_no_ca``), sets the certificate header, the verdict header, the client-address header and the proxy
  secret itself, removes any client-sent copy of them and of the other dialects' certificate headers (spelt with
  dashes or underscores), and where the proxy can, routes its own refusals to certauth's JSON 401
  (``REFUSED_PATH``).
* ``certauth_settings(options) -> dict``: the ``CERTAUTH`` settings that match the rendered configuration.
* ``BINARIES``: the program names to look for; ``command(binary, config, prefix) -> list[str]``: the command
  that runs a ``standalone`` configuration in the foreground, unprivileged, with ``prefix`` for its pid, logs
  and temporary files (the dev stack and the end-to-end tests).

``renderer(name)`` returns the module for a proxy name.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from ..nginxconf import (  # the one definition of each; nginx was the first renderer
    FOREIGN_CERTIFICATE_HEADERS,
    ORIGINAL_METHOD_HEADER,
    ORIGINAL_URI_HEADER,
    PROXY_SECRET_HEADER,
    REFUSED_PATH,
)

#: The proxies certauth renders configurations for, tested end to end through the real programs.
PROXIES: tuple[str, ...] = ("nginx", "haproxy", "apache", "caddy")
Mode = Literal["on", "optional", "optional_no_ca"]
MODES: tuple[str, ...] = ("on", "optional", "optional_no_ca")


#: The headers every rendered configuration sets (certauth's defaults, ``certauth.conf``).
CERTIFICATE_HEADER = "X-SSL-Client-Cert"
VERIFY_HEADER = "X-SSL-Client-Verify"
CLIENT_IP_HEADER = "X-Real-IP"


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """What every renderer is told.  Paths should be absolute (proxies resolve relative ones against their own
    directories, not the operator's)."""

    mode: Mode = "on"
    server_cert: Path = Path("server.pem")
    server_key: Path = Path("server.key")
    client_ca: Path | None = None
    crl: Path | None = None
    listen: str = "127.0.0.1:8443"
    server_name: str = "localhost"
    #: ``127.0.0.1:8000`` or ``unix:/run/certauth/gunicorn.sock``, one or more.
    upstream: tuple[str, ...] = ("127.0.0.1:8000",)
    verify_depth: int = 3
    #: A complete configuration that runs unprivileged in the foreground with ``prefix`` for its state; else
    #: the part an operator includes in the proxy's own configuration.
    standalone: bool = False
    prefix: Path | None = None
    static_root: Path | None = None
    proxy_secret: str | None = None
    proxy_secret_header: str = PROXY_SECRET_HEADER
    requests_per_second: int = 500
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode != "optional_no_ca" and self.client_ca is None:
            raise ValueError(f"mode {self.mode} needs client_ca (the CA bundle the proxy verifies against)")
        if self.standalone and self.prefix is None:
            raise ValueError("a standalone configuration needs a prefix (its pid, logs and temporary files)")
        if not self.upstream:
            raise ValueError("at least one upstream address is needed")


class Renderer(Protocol):
    MODES: tuple[str, ...]
    BINARIES: tuple[str, ...]

    def render(self, options: ProxyOptions) -> str: ...

    def certauth_settings(self, options: ProxyOptions) -> dict[str, Any]: ...

    def command(self, binary: str, config: Path, prefix: Path) -> list[str]: ...


def renderer(name: str) -> Renderer:
    """The renderer module of proxy ``name``; ``ValueError`` for an unknown one."""
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}: choose one of {', '.join(PROXIES)}")
    module: ModuleType = importlib.import_module(f"{__name__}.{name}")
    return module  # type: ignore[return-value]


def find_binary(names: Sequence[str]) -> str | None:
    """The first of ``names`` found on PATH or in the sbin directories (not on a normal user's PATH)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for directory in ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def find_proxy(name: str) -> str | None:
    """The program that runs proxy ``name`` on this machine, or None."""
    return find_binary(renderer(name).BINARIES)


def trusted_proxies_for(upstream: Sequence[str]) -> list[str]:
    """``TRUSTED_PROXIES`` for a proxy that reaches certauth at ``upstream``: ``unix:`` for unix sockets (their
    permissions decide who connects), else loopback (a proxy on the same host connects from there)."""
    if all(address.startswith("unix:") for address in upstream):
        return ["unix:"]
    return ["127.0.0.1", "::1"]


def common_settings(options: ProxyOptions) -> dict[str, Any]:
    """The settings every rendered configuration shares (a renderer adds or overrides its dialect's)."""
    settings: dict[str, Any] = {
        "TRUSTED_PROXIES": trusted_proxies_for(options.upstream),
        "CERTIFICATE_HEADER": CERTIFICATE_HEADER,
        "PROXY_VERIFIES_CERTIFICATE": options.mode != "optional_no_ca",
        "VERIFY_HEADER": VERIFY_HEADER,
        "CLIENT_IP_HEADER": CLIENT_IP_HEADER,
        "PROXY_SECRET_FILE": "<the file holding the proxy secret the configuration sends>",
    }
    if options.proxy_secret_header != PROXY_SECRET_HEADER:
        settings["PROXY_SECRET_HEADER"] = options.proxy_secret_header
    return settings


__all__ = [
    "CERTIFICATE_HEADER",
    "CLIENT_IP_HEADER",
    "FOREIGN_CERTIFICATE_HEADERS",
    "MODES",
    "ORIGINAL_METHOD_HEADER",
    "ORIGINAL_URI_HEADER",
    "PROXIES",
    "PROXY_SECRET_HEADER",
    "REFUSED_PATH",
    "VERIFY_HEADER",
    "ProxyOptions",
    "Renderer",
    "common_settings",
    "find_binary",
    "find_proxy",
    "renderer",
    "trusted_proxies_for",
]
