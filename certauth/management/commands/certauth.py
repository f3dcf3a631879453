"""``python manage.py certauth <subcommand>``: the operator CLI.  See certauth/cli/."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from certauth.cli import load_subcommands


class Command(BaseCommand):
    help = "Manage certauth: register, revoke and list client certificates, make a dev PKI, and more."

    def add_arguments(self, parser: CommandParser) -> None:
        subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        self._subcommands = {}
        for cls in load_subcommands():
            sub = subparsers.add_parser(cls.name, help=cls.help, description=cls.help)
            cls(self.stdout, self.stderr).add_arguments(sub)
            self._subcommands[cls.name] = cls

    def handle(self, *args: Any, **options: Any) -> None:
        cls = self._subcommands[options.pop("subcommand")]
        code = cls(self.stdout, self.stderr).handle(**options)
        if code:
            # Exit codes carry meaning for cron and monitoring (e.g. "expiring" exits 1 when it found some).
            sys.exit(code)


__all__ = ["Command", "CommandError"]
