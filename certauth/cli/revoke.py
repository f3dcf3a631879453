from __future__ import annotations

import argparse
from typing import Any

from django.core.exceptions import ValidationError

from ..certificates import normalize_thumbprint
from ..models import RegisteredCertificate, RevocationReason
from ..services import revoke
from . import CommandError, Subcommand


class Revoke(Subcommand):
    name = "revoke"
    help = "Revoke a registered certificate by thumbprint (takes effect on every worker within the staleness bound)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--thumbprint", required=True, help="SHA-256 thumbprint in any spelling.")
        parser.add_argument(
            "--reason",
            default=RevocationReason.UNSPECIFIED,
            choices=RevocationReason.values,
            help="Why (default: unspecified).",
        )

    def handle(self, **options: Any) -> int:
        try:
            thumbprint = normalize_thumbprint(options["thumbprint"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        entry = RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint).select_related("identity").first()
        if entry is None:
            raise CommandError(f"No registered certificate has thumbprint {thumbprint}.")
        try:
            changed = revoke(entry, options["reason"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if changed:
            self.stdout.write(f"revoked {thumbprint} ({entry.identity.name}), reason {options['reason']}")
        else:
            self.stdout.write(
                f"already revoked at {entry.revoked_at.isoformat() if entry.revoked_at else '?'}: {thumbprint}"
            )
        return 0
