"""``certauth prune-audit``: delete refusal audit rows older than the retention period."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from typing import Any

from django.utils import timezone

from .. import audit
from ..conf import settings
from . import CommandError, Subcommand

_AGE = re.compile(r"\A\s*(\d{1,9})\s*([dhm])\s*\Z", re.IGNORECASE)
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> dt.timedelta:
    """``"90d"`` / ``"12h"`` / ``"30m"`` -> a positive ``timedelta``.  Raises ``ValueError`` otherwise."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an age: use a whole number with d, h or m, e.g. 90d, 12h, 30m.")
    amount, unit = int(match.group(1)), match.group(2).lower()
    if amount == 0:
        raise ValueError("The age must be greater than zero.")
    try:
        return dt.timedelta(**{_UNITS[unit]: amount})
    except OverflowError as exc:
        raise ValueError(f"{text!r} is too long ago.") from exc


class PruneAudit(Subcommand):
    name = "prune-audit"
    help = "Delete refusal audit rows last seen longer ago than --older-than (default: AUDIT_RETENTION_DAYS)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            metavar="AGE",
            help="Age such as 90d, 12h or 30m (default: CERTAUTH['AUDIT_RETENTION_DAYS'] days).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument(
            "--batch-size", type=int, default=5000, help="Rows deleted per statement (default: 5000)."
        )

    def handle(self, **options: Any) -> int:
        if options.get("older_than"):
            try:
                age = parse_age(options["older_than"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        elif settings.AUDIT_RETENTION_DAYS is None:
            raise CommandError("CERTAUTH['AUDIT_RETENTION_DAYS'] is None (keep forever): pass --older-than.")
        else:
            age = dt.timedelta(days=int(settings.AUDIT_RETENTION_DAYS))
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            cutoff = timezone.now() - age
        except OverflowError as exc:
            raise CommandError("The age reaches before the year 1.") from exc
        count = audit.prune(cutoff, batch_size=options["batch_size"], dry_run=options["dry_run"])
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {count} audit row(s) last seen before {cutoff.isoformat(timespec='seconds')}")
        return 0
