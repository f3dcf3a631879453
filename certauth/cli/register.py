from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from ..certificates import describe, format_thumbprint, load_certificate, load_pkcs12_certificate, normalize_thumbprint
from ..forms import policy_options, registration_trust_store
from ..models import RegisteredCertificate
from ..reasons import CertificateRefused
from ..services import get_or_create_identity, register_certificate, register_thumbprint
from ..trust import registration_problems
from . import CommandError, Subcommand


def parse_datetime(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"Not an ISO date/time: {text!r} (e.g. 2027-01-31 or 2027-01-31T12:00:00Z).") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class Register(Subcommand):
    name = "register"
    help = "Register a client certificate (PEM, DER or PKCS#12 file) or a thumbprint for an identity."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--identity", required=True, help="Identity name; created when it does not exist.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--cert", type=Path, help="Certificate file: PEM, DER, or .p12/.pfx (see --password).")
        source.add_argument("--thumbprint", help="SHA-256 thumbprint in any spelling (colons, spaces, any case).")
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument(
            "--password", help="PKCS#12 password (visible in `ps` and shell history: prefer --password-file)."
        )
        secret.add_argument("--password-file", type=Path, help="File whose first line is the PKCS#12 password.")
        parser.add_argument("--not-after", help="With --thumbprint: when the certificate expires (ISO 8601).")
        parser.add_argument("--not-before", help="With --thumbprint: when it becomes valid (ISO 8601).")
        parser.add_argument("--scope", action="append", default=[], help="Scope to grant the identity (repeatable).")
        parser.add_argument("--label", default="", help="A note for operators, e.g. 'issued 2026-11 by vault'.")

    def handle(self, **options: Any) -> int:
        if options["cert"] is not None:
            password = options.get("password")
            if options.get("password_file") is not None:
                try:
                    password = options["password_file"].read_text().splitlines()[0] if options["password_file"] else ""
                except (OSError, IndexError) as exc:
                    raise CommandError(f"Cannot read a password from {options['password_file']}.") from exc
            info = self._read_certificate(options["cert"], password)
            thumbprint = info.thumbprint_sha256
        else:
            if not options.get("not_after"):
                raise CommandError("--thumbprint needs --not-after (when the certificate expires).")
            try:
                thumbprint = normalize_thumbprint(options["thumbprint"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            info = None
        existing = RegisteredCertificate.objects.filter(thumbprint_sha256=thumbprint).select_related("identity").first()
        if existing is not None:
            if existing.identity.name != options["identity"]:
                raise CommandError(f"Already registered for identity {existing.identity.name!r}.")
            get_or_create_identity(options["identity"], scopes=options["scope"])
            self.stdout.write(f"already registered: {thumbprint} ({existing.identity.name})")
            return 0
        # Once it is not already registered (idempotent, as set-up scripts need).
        warnings = self._check_can_authenticate(info) if info is not None else []
        try:
            identity, created = get_or_create_identity(options["identity"], scopes=options["scope"])
            if info is not None:
                entry = register_certificate(identity, info, label=options["label"])
            else:
                entry = register_thumbprint(
                    identity,
                    thumbprint,
                    not_after=parse_datetime(options["not_after"]),
                    not_before=parse_datetime(options["not_before"]) if options.get("not_before") else None,
                    label=options["label"],
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if created:
            self.stdout.write(f"created identity {identity.name} (scopes: {identity.scopes or '-'})")
        self.stdout.write(f"registered {entry.thumbprint_sha256}")
        self.stdout.write(f"  = {format_thumbprint(entry.thumbprint_sha256)}")
        self.stdout.write(f"  identity {identity.name}, valid until {entry.not_after.isoformat()}")
        for warning in warnings:
            self.stdout.write(f"  warning: {warning}")
        return 0

    def _check_can_authenticate(self, info: Any) -> list[str]:
        """The admin registration form's check, in its words (``certauth.trust.registration_problems``): what
        could never authenticate is refused (exit 1); what only the current trust policy refuses (no enabled
        authority issued it yet, self-signed not allowed) is registered, and the warning returned, as the admin
        does: set-up scripts register certificates before trusting their CA."""
        problems = registration_problems(info, registration_trust_store(), timezone.now(), policy_options())
        refused = [problem.text for problem in problems if problem.severity == "refuse"]
        if refused:
            raise CommandError(" ".join(refused))
        return [problem.text for problem in problems]

    def _read_certificate(self, path: Path, password: str | None) -> Any:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}") from exc
        try:
            if path.suffix.lower() in {".p12", ".pfx"}:
                certificate, _ = load_pkcs12_certificate(data, password)
            else:
                certificate = load_certificate(data)
            return describe(certificate)
        except CertificateRefused as exc:
            raise CommandError(f"{path}: {exc.detail}") from exc
