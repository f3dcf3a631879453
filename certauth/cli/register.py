from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError

from .. import services
from ..certificates import describe, format_thumbprint, load_certificate, load_pkcs12_certificate
from ..reasons import CertificateRefused
from . import CommandError, Subcommand


def parse_datetime(text: str, option: str = "") -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        where = f"{option}: " if option else ""
        raise CommandError(f"{where}Not an ISO date/time: {text!r} (e.g. 2027-01-31 or 2027-01-31T12:00:00Z).") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


#: The option each of ``services.FIELDS`` stands for here (none: the certificate itself, in the admin's words).
OPTIONS = {"identity": "--identity", "scopes": "--scope", "thumbprint": "--thumbprint", "not_after": "--not-after",
           "not_before": "--not-before"}  # fmt: skip


def refusal_text(error: ValidationError) -> str:
    """``services.register``'s refusals, one a line, each as the admin form words it."""
    lines = []
    for where, errors in (error.message_dict if hasattr(error, "error_dict") else {"": error.messages}).items():
        prefix = f"{OPTIONS[where]}: " if where in OPTIONS else ""
        lines += [prefix + message for message in errors]
    return "\n".join(lines)


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
        """Through ``services.register``, as the admin form: the same checks and words, one transaction (a
        refusal creates nothing, not even the identity), no override (the admin has none).  Running it again
        for the same identity is a no-op (set-up scripts run it on every start); scopes are still added."""
        info, thumbprint = None, options.get("thumbprint")
        if options["cert"] is not None:
            info = self._read_certificate(options["cert"], self._password(options))
        dates: dict[str, dt.datetime | None] = {}
        unreadable = []
        for option, key in (("--not-after", "not_after"), ("--not-before", "not_before")):
            try:
                dates[key] = parse_datetime(options[key], option) if options.get(key) else None
            except CommandError as exc:
                unreadable.append(str(exc))
        if unreadable:  # the thumbprint's own problem first, as the admin form orders them
            spelling = services.thumbprint_problem(thumbprint) if thumbprint else None
            raise CommandError("\n".join(([f"--thumbprint: {spelling}"] if spelling else []) + unreadable))
        try:
            registration = services.register(
                options["identity"],
                info,
                thumbprint=None if info else thumbprint,
                not_after=dates["not_after"],
                not_before=dates["not_before"],
                scopes=options["scope"],
                label=options["label"],
                existing_ok=True,
            )
        except ValidationError as exc:
            raise CommandError(refusal_text(exc)) from exc
        entry, identity = registration.entry, registration.identity
        if not registration.created:
            self.stdout.write(f"already registered: {entry.thumbprint_sha256} ({identity.name}), nothing changed")
            return 0
        if registration.identity_created:
            self.stdout.write(f"created identity {identity.name} (scopes: {identity.scopes or '-'})")
        self.stdout.write(f"registered {entry.thumbprint_sha256}")
        self.stdout.write(f"  = {format_thumbprint(entry.thumbprint_sha256)}")
        self.stdout.write(f"  identity {identity.name}, valid until {entry.not_after.isoformat()}")
        for warning in registration.warnings:
            self.stdout.write(f"  warning: {warning}")
        return 0

    def _password(self, options: dict[str, Any]) -> str | None:
        if options.get("password_file") is None:
            return options.get("password")
        try:
            return str(options["password_file"].read_text().splitlines()[0])
        except (OSError, IndexError) as exc:
            raise CommandError(f"Cannot read a password from {options['password_file']}.") from exc

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
