"""Subcommands of ``python manage.py certauth``.  Each lives in its own module as a ``Subcommand``
subclass and is listed in ``SUBCOMMANDS``; the management command only dispatches."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from django.core.management.base import CommandError, OutputWrapper
from django.utils.module_loading import import_string

SUBCOMMANDS = [
    "certauth.cli.register.Register",
    "certauth.cli.revoke.Revoke",
    "certauth.cli.listing.List",
    "certauth.cli.devpki.DevPKI",
    "certauth.cli.expiring.Expiring",
    "certauth.cli.nginx_config.NginxConfig",
    "certauth.cli.proxy_config.ProxyConfig",
    "certauth.cli.prune_audit.PruneAudit",
    "certauth.cli.authority.Authority",
    "certauth.cli.crl_refresh.CrlRefresh",
    "certauth.cli.doctor.Doctor",
    "certauth.cli.metrics.Metrics",
]


class Subcommand:
    """One ``certauth <name>`` subcommand.  ``handle`` returns the process exit code; raise
    ``CommandError`` for bad input (printed without a traceback, non-zero exit code)."""

    name: str = ""
    help: str = ""

    def __init__(self, stdout: OutputWrapper | TextIO, stderr: OutputWrapper | TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def handle(self, **options: Any) -> int:
        raise NotImplementedError


def load_subcommands() -> list[type[Subcommand]]:
    classes = []
    for path in SUBCOMMANDS:
        try:
            classes.append(import_string(path))
        except ImportError:
            # A subcommand module not written yet must not break the others.
            continue
    return classes


__all__ = ["CommandError", "Subcommand", "load_subcommands"]
