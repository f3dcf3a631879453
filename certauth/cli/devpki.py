from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from . import Subcommand


class DevPKI(Subcommand):
    name = "devpki"
    help = "Create a DEVELOPMENT PKI (CA, server and client certificates, PEM and PKCS#12). Never for production."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--out",
            type=Path,
            required=True,
            help="Directory to write into: created 0700, or an existing one of yours nobody else can write to.",
        )
        parser.add_argument("--host", action="append", default=None, help="Server certificate host (repeatable).")
        parser.add_argument("--password", default="dev-password", help="PKCS#12 password for the client bundles.")
        parser.add_argument("--overwrite", action="store_true", help="Make new certificates even if some exist.")

    def handle(self, **options: Any) -> int:
        from ..devpki import UnsafeDirectory, create_dev_pki

        hosts = tuple(options["host"]) if options.get("host") else ("localhost", "127.0.0.1", "::1")
        try:
            pki = create_dev_pki(
                options["out"], hosts=hosts, p12_password=options["password"], overwrite=options["overwrite"]
            )
        except UnsafeDirectory as error:
            raise CommandError(f"refusing to write the dev PKI: {error}") from error
        self.stdout.write(f"dev PKI in {pki.out_dir} (development only, never for production)")
        for name in sorted(pki.manifest.get("certificates", {})):
            self.stdout.write(f"  {name:<18} {pki.thumbprint(name)}  {pki.path(name)}")
        return 0
