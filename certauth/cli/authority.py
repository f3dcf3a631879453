"""``certauth authority add|list|enable|disable|bundle``: trusted authorities (CAs) from the command line;
``bundle`` writes the proxy's CA file from the enabled ones (``certauth.proxybundle``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from .. import privatefiles
from ..authorities import add_authority, enabled_bundle_authorities
from ..certificates import format_thumbprint, thumbprint_of
from ..models import TrustedAuthority
from ..proxybundle import render_bundle
from ..reasons import CertificateRefused
from ..trust import lint_authority, load_authority_certificate
from . import CommandError, Subcommand


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}") from exc


class Authority(Subcommand):
    name = "authority"
    help = "Manage trusted authorities (CAs whose client certificates chain validation accepts)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        add = actions.add_parser("add", help="Trust a CA certificate (PEM or DER), optionally with a CRL.")
        add.add_argument("--name", required=True, help="A name for operators, e.g. 'internal root 2026'.")
        add.add_argument("--cert", required=True, type=Path, help="The CA certificate file (PEM or DER).")
        add.add_argument("--crl", type=Path, help="A CRL file (PEM or DER) signed by this CA.")
        add.add_argument("--crl-url", default="", help="http(s) URL of the CA's CRL, fetched by crl-refresh.")
        add.add_argument(
            "--ocsp-url", default="", help="http(s) URL of the CA's OCSP responder (default: each certificate's AIA)."
        )
        add.add_argument("--notes", default="", help="Free text for operators.")
        add.add_argument("--disabled", action="store_true", help="Add it disabled.")
        actions.add_parser("list", help="List trusted authorities.")
        for action in ("enable", "disable"):
            toggle = actions.add_parser(action, help=f"{action.capitalize()} an authority (takes effect at once).")
            toggle.add_argument("--name", required=True)
        bundle = actions.add_parser(
            "bundle",
            help="Print the PEM CA bundle of the enabled authorities, for the proxy's client CA file "
            "(nginx ssl_client_certificate); re-run it and reload the proxy after adding or disabling one.",
        )
        bundle.add_argument(
            "--output", type=Path, help="Write it to this file (atomically, mode 0644) instead of standard output."
        )

    def handle(self, **options: Any) -> int:
        action = options["action"]
        if action == "add":
            return self._add(options)
        if action == "list":
            return self._list()
        if action == "bundle":
            return self._bundle(options.get("output"))
        return self._toggle(options["name"], enabled=action == "enable")

    def _add(self, options: dict[str, Any]) -> int:
        data = _read(options["cert"])
        try:
            certificate = load_authority_certificate(data)
        except CertificateRefused as refused:
            raise CommandError(f"{options['cert']}: {refused.detail}") from refused
        thumbprint = thumbprint_of(certificate)
        existing = TrustedAuthority.objects.filter(thumbprint_sha256=thumbprint).first()
        if existing is not None:
            # Idempotent, so set-up scripts can run it on every start.
            self.stdout.write(f"already trusted: {existing.name} ({thumbprint})")
            return 0
        # The same check as the admin's authority form (certauth.trust.lint_authority), once it is not already
        # trusted (idempotent): refuse what no chain can ever build through, say what is merely unusual.
        problems = lint_authority(certificate, timezone.now())
        refused_texts = [problem.text for problem in problems if problem.severity == "refuse"]
        if refused_texts:
            raise CommandError(f"{options['cert']}: " + " ".join(refused_texts))
        crl = _read(options["crl"]) if options.get("crl") else None
        try:
            authority = add_authority(
                options["name"],
                data,
                notes=options["notes"],
                crl_data=crl,
                crl_url=options["crl_url"],
                ocsp_url=options["ocsp_url"],
                enabled=not options["disabled"],
            )
        except CertificateRefused as refused:
            raise CommandError(refused.detail) from refused
        except IntegrityError as exc:
            raise CommandError(f"An authority named {options['name']!r} already exists.") from exc
        self.stdout.write(f"trusted authority {authority.name}{'' if authority.is_enabled else ' (disabled)'}")
        self.stdout.write(f"  {authority.subject}")
        self.stdout.write(f"  = {format_thumbprint(authority.thumbprint_sha256)}")
        if authority.crl_last_update is not None:
            self.stdout.write(f"  CRL loaded, next update {authority.crl_next_update or 'never'}")
        for problem in problems:  # accepted, but worth knowing; after the result (scripts read the first line)
            self.stdout.write(f"  warning: {problem.text}")
        return 0

    def _list(self) -> int:
        for authority in TrustedAuthority.objects.order_by("name"):
            state = "enabled " if authority.is_enabled else "disabled"
            crl = f"crl next {authority.crl_next_update:%Y-%m-%d}" if authority.crl_next_update else "no crl"
            self.stdout.write(f"{state} {authority.name}: {authority.subject} [{crl}] {authority.thumbprint_sha256}")
        return 0

    def _toggle(self, name: str, *, enabled: bool) -> int:
        authority = TrustedAuthority.objects.filter(name=name).first()
        if authority is None:
            raise CommandError(f"No authority named {name!r}.")
        if authority.is_enabled != enabled:
            authority.is_enabled = enabled
            authority.save(update_fields=["is_enabled", "updated_at"])
        self.stdout.write(f"{name}: {'enabled' if enabled else 'disabled'}")
        return 0

    def _bundle(self, output: Path | None) -> int:
        authorities = enabled_bundle_authorities()
        if not authorities:
            # An empty client CA file makes nginx refuse to start, and a proxy that trusts nothing is no fix.
            raise CommandError("No enabled trusted authority: add one first (certauth authority add).")
        data = render_bundle(a.certificate for a in authorities)
        if output is None:
            self.stdout.write(data.decode("ascii").rstrip("\n"))  # the wrapper ends the last line
            return 0
        try:
            # Public CA certificates: readable by the proxy's user; replaced atomically, so a proxy reloading
            # meanwhile reads the old file or the new one, never half of it.
            privatefiles.write_file(output, data, mode=0o644)
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror or exc}") from exc
        names = ", ".join(a.name for a in authorities)
        self.stdout.write(f"wrote {len(authorities)} enabled authorities to {output}: {names}")
        self.stdout.write("  reload the proxy (e.g. nginx -s reload) so it trusts exactly these")
        return 0
