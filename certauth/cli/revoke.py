from __future__ import annotations

import argparse
import re
from typing import Any

from django.core.exceptions import ValidationError

from ..certificates import normalize_thumbprint
from ..models import RegisteredCertificate, RevocationReason
from ..services import revoke
from . import CommandError, Subcommand

MIN_PREFIX_HEX_DIGITS = 8


def find_entry(text: str) -> RegisteredCertificate:
    """The entry for a full thumbprint in any spelling, or for a unique prefix of at least 8 hex digits
    (as an operator copies it from a list).  An ambiguous or unknown prefix is a ``CommandError``."""
    entries = RegisteredCertificate.objects.select_related("identity")
    try:
        thumbprint = normalize_thumbprint(text)
    except ValueError:
        return _find_by_prefix(entries, text)
    entry = entries.filter(thumbprint_sha256=thumbprint).first()
    if entry is None:
        raise CommandError(f"No registered certificate has thumbprint {thumbprint}.")
    return entry


def _find_by_prefix(entries: Any, text: str) -> RegisteredCertificate:
    prefix = re.sub(r"[\s:\-]", "", text).lower()
    if len(prefix) < MIN_PREFIX_HEX_DIGITS or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise CommandError(
            f"{text!r} is neither a SHA-256 thumbprint (64 hex digits) "
            f"nor its first {MIN_PREFIX_HEX_DIGITS}+ hex digits."
        )
    matches = list(entries.filter(thumbprint_sha256__startswith=prefix)[:5])
    if len(matches) > 1:
        listed = ", ".join(f"{m.thumbprint_sha256} ({m.identity.name})" for m in matches)
        raise CommandError(f"{text!r} matches several certificates: {listed}. Give more digits.")
    if not matches:
        raise CommandError(f"No registered certificate's thumbprint starts with {prefix}.")
    return matches[0]


class Revoke(Subcommand):
    name = "revoke"
    help = "Revoke a registered certificate by thumbprint (takes effect on every worker within the staleness bound)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--thumbprint", required=True,
            help="SHA-256 thumbprint in any spelling, or its first bytes (at least 8 hex digits) when unique.",
        )  # fmt: skip
        parser.add_argument(
            "--reason",
            default=RevocationReason.UNSPECIFIED,
            choices=RevocationReason.values,
            help="Why (default: unspecified).",
        )

    def handle(self, **options: Any) -> int:
        entry = find_entry(options["thumbprint"])
        thumbprint = entry.thumbprint_sha256
        earlier_reason = entry.revocation_reason
        raising = entry.raises_to(options["reason"])
        try:
            changed = revoke(entry, options["reason"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        revoked_at = entry.revoked_at.isoformat() if entry.revoked_at else "?"
        if changed and raising:
            self.stdout.write(
                f"reason raised from {earlier_reason} to {options['reason']} for {thumbprint} ({entry.identity.name}),"
                f" revoked at {revoked_at}: every certificate for its key is refused"
            )
        elif changed:
            self.stdout.write(f"revoked {thumbprint} ({entry.identity.name}), reason {options['reason']}")
        else:
            self.stdout.write(
                f"already revoked at {revoked_at} ({entry.revocation_reason or 'unspecified'}): {thumbprint}"
                f" (only --reason {RevocationReason.KEY_COMPROMISE} changes a revoked entry)"
            )
        return 0
