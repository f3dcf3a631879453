"""``certauth expiring``: certificates about to expire, for cron and monitoring.

Exit status 1 when any live entry of an active identity expires within the window, 0 when none, so
``certauth expiring || notify`` and Nagios-style checks work without parsing the output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from django.conf import settings as django_settings
from django.core.mail import mail_admins
from django.utils import timezone

from ..certificates import format_thumbprint
from ..conf import settings
from ..models import RegisteredCertificate
from . import CommandError, Subcommand


def expiring_entries(days: int, at: dt.datetime | None = None) -> list[RegisteredCertificate]:
    """Live entries of active identities expiring within ``days``, soonest first.  Disabled identities
    are left out: they cannot authenticate whatever their certificates say."""
    return list(
        RegisteredCertificate.objects.expiring_within(days, at)
        .filter(identity__is_active=True)
        .select_related("identity")
        .prefetch_related("successors")
        .order_by("not_after", "identity__name")
    )


def as_dict(entry: RegisteredCertificate, now: dt.datetime) -> dict[str, Any]:
    return {
        "identity": entry.identity.name,
        "thumbprint": entry.thumbprint_sha256,
        "subject": entry.subject,
        "subject_cn": entry.subject_cn,
        "serial_number": entry.serial_number,
        "label": entry.label,
        "not_after": entry.not_after.isoformat(),
        "days_left": (entry.not_after - now).days,
        "last_used_at": entry.last_used_at.isoformat() if entry.last_used_at else None,
        "has_successor": any(
            successor.revoked_at is None and successor.not_after > entry.not_after
            for successor in entry.successors.all()
        ),
    }


def as_text(items: list[dict[str, Any]], days: int) -> str:
    if not items:
        return f"No certificates expire within {days} days."
    lines = [f"{len(items)} certificate(s) expire within {days} days:"]
    for item in items:
        successor = "successor registered" if item["has_successor"] else "NO SUCCESSOR"
        used = f"last used {item['last_used_at'][:19]}" if item["last_used_at"] else "never used"
        lines.append(
            f"  {item['not_after'][:10]}  in {item['days_left']:>3} d  {item['identity']}  "
            f"{format_thumbprint(item['thumbprint'])}  {item['subject_cn'] or '-'}  {used}  {successor}"
        )
    return "\n".join(lines)


class Expiring(Subcommand):
    name = "expiring"
    help = "List registered certificates expiring within N days; exit 1 when there are any (for cron)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--days", type=int, default=None, help="Window in days (default: CERTAUTH['EXPIRY_WARNING_DAYS'])."
        )
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument("--mail", action="store_true", help="Also mail the list to ADMINS when it is not empty.")

    def handle(self, **options: Any) -> int:
        days = settings.EXPIRY_WARNING_DAYS if options.get("days") is None else options["days"]
        if days < 0:
            raise CommandError("--days must be zero or more.")
        now = timezone.now()
        items = [as_dict(entry, now) for entry in expiring_entries(days, now)]
        text = as_text(items, days)
        if options["format"] == "json":
            self.stdout.write(
                json.dumps({"days": days, "generated_at": now.isoformat(), "certificates": items}, indent=2)
            )
        else:
            self.stdout.write(text)
        if options.get("mail") and items:
            if not django_settings.ADMINS:
                self.stderr.write("--mail: ADMINS is empty, no mail sent.")
            else:
                mail_admins(f"{len(items)} client certificate(s) expire within {days} days", text)
        return 1 if items else 0
