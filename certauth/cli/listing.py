from __future__ import annotations

import argparse
import json
from typing import Any

from django.db.models import Prefetch
from django.utils import timezone

from ..models import CertificateIdentity, RegisteredCertificate
from . import CommandError, Subcommand


class List(Subcommand):
    name = "list"
    help = "List identities and their certificates with status."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument("--identity", help="Only this identity.")

    def handle(self, **options: Any) -> int:
        now = timezone.now()
        identities = CertificateIdentity.objects.prefetch_related(
            Prefetch("certificates", queryset=RegisteredCertificate.objects.order_by("not_after"))
        )
        if options.get("identity"):
            identities = identities.filter(name=options["identity"])
            if not identities:
                raise CommandError(
                    f"No identity named {options['identity']!r}; `certauth list` shows every identity (names are "
                    "exact, case included)."
                )
        data: list[dict[str, Any]] = [
            {
                "identity": identity.name,
                "active": identity.is_active,
                "scopes": identity.scope_list,
                "certificates": [
                    {
                        "thumbprint": entry.thumbprint_sha256,
                        "status": entry.status(now),
                        "subject": entry.subject,
                        "not_after": entry.not_after.isoformat(timespec="seconds"),
                        "last_used_at": entry.last_used_at.isoformat(timespec="seconds")
                        if entry.last_used_at
                        else None,
                        "label": entry.label,
                    }
                    for entry in identity.certificates.all()
                ],
            }
            for identity in identities
        ]
        if options["format"] == "json":
            self.stdout.write(json.dumps(data, indent=2))
            return 0
        if not data:
            self.stdout.write("No identities registered.")
        for item in data:
            state = "active" if item["active"] else "DISABLED"
            self.stdout.write(f"{item['identity']}  [{state}]  scopes: {' '.join(item['scopes']) or '-'}")
            for cert in item["certificates"]:
                used = f"last used {cert['last_used_at'][:19]}" if cert["last_used_at"] else "never used"
                until = cert["not_after"][:19]
                status = cert["status"]
                self.stdout.write(f"  {cert['thumbprint']}  {status:<13} until {until}  {used}  {cert['subject']}")
        return 0
