"""nginx: ``certauth.nginxconf`` behind the common renderer interface (``certauth.proxyconf``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import nginxconf
from . import ProxyOptions, common_settings

MODES: tuple[str, ...] = nginxconf.MODES
BINARIES: tuple[str, ...] = ("nginx",)


def render(options: ProxyOptions) -> str:
    return nginxconf.render(
        mode=options.mode,
        listen=options.listen,
        server_name=options.server_name,
        server_cert=options.server_cert,
        server_key=options.server_key,
        # Also in optional_no_ca when given: nginx then offers the CAs' names (`certauth nginx-config` always did).
        client_ca=options.client_ca,
        crl=options.crl,
        upstream=list(options.upstream),
        verify_depth=options.verify_depth,
        standalone=options.standalone,
        prefix=options.prefix,
        static_root=options.static_root,
        proxy_secret=options.proxy_secret,
        proxy_secret_header=options.proxy_secret_header,
        requests_per_second=options.requests_per_second,
    )


def certauth_settings(options: ProxyOptions) -> dict[str, Any]:
    return {**common_settings(options), "FORWARDING_FORMAT": "nginx_escaped"}


def command(binary: str, config: Path, prefix: Path) -> list[str]:
    command = [binary, "-p", str(prefix), "-c", str(config), "-e", "stderr"]
    if os.geteuid() == 0:
        # As root nginx would run its workers as "nobody", who cannot enter 0700 directories such as pytest's
        # tmp dirs (static files, body buffers).  Run them as the invoking user, exactly as for a developer
        # without root.  Loopback only.
        command += ["-g", "user root;"]
    return command
