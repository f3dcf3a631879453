"""``certauth doctor``: what disagrees between certauth and the proxy in front of it, each with its fix.

Today it compares the proxy's CA bundle (``PROXY_CA_BUNDLE``, or ``--ca-bundle``) with the enabled trusted
authorities (``certauth.proxybundle``): an enabled authority the bundle lacks (the proxy refuses its clients,
which certauth would only ever see as ``untrusted_issuer`` from the proxy's verdict), a certificate in the
bundle that is no enabled authority (the proxy accepts at TLS a CA certauth does not trust, e.g. one disabled
in the admin), an unreadable bundle.  Exit status 1 when anything is wrong, 0 when nothing is, so cron and
deployment scripts can run it after every change of the registry.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.db import DatabaseError

from ..authorities import enabled_bundle_authorities
from ..conf import settings
from ..proxybundle import compare, describe_report
from . import CommandError, Subcommand


class Doctor(Subcommand):
    name = "doctor"
    help = (
        "Check that the proxy trusts exactly the enabled authorities (PROXY_CA_BUNDLE); exit 1 and say how to "
        "fix it when not."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--ca-bundle",
            type=Path,
            help="The proxy's CA file to check (default: the PROXY_CA_BUNDLE setting).",
        )

    def handle(self, **options: Any) -> int:
        path = options.get("ca_bundle") or settings.PROXY_CA_BUNDLE
        if not path:
            self.stdout.write(
                "proxy CA bundle: not checked (set CERTAUTH['PROXY_CA_BUNDLE'] to the CA file your proxy verifies "
                "client certificates against, or pass --ca-bundle)"
            )
            return 0
        try:
            authorities = enabled_bundle_authorities()
        except DatabaseError as exc:
            raise CommandError(f"Cannot read the trusted authorities: {exc}") from exc
        report = compare(path, authorities)
        if report.ok:
            count = len(authorities)
            self.stdout.write(f"ok: the proxy's CA bundle {path} holds exactly the {count} enabled authorities")
            return 0
        for line in describe_report(report):
            self.stdout.write(f"problem: {line}")
        return 1
