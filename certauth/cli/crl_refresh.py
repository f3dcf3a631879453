"""``certauth crl-refresh``: fetch the CRLs of trusted authorities from their ``crl_url``.

Run it from cron/systemd every few minutes (it only fetches what is due: every ``CRL_REFRESH_SECONDS`` and
once a CRL's nextUpdate has passed), or as a long-running process with ``--loop``.  Exit code 1 when a
fetch failed (the previous CRL is kept until its nextUpdate; then requests get ``crl_unavailable``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..authorities import refresh_due_crls, seconds_until_next_refresh
from . import Subcommand

MIN_SLEEP_SECONDS = 5.0


class CrlRefresh(Subcommand):
    name = "crl-refresh"
    help = "Fetch due CRLs of trusted authorities from their URLs (cron, or --loop)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--force", action="store_true", help="Fetch every CRL with a URL, due or not.")
        parser.add_argument("--loop", action="store_true", help="Keep running, sleeping until the next CRL is due.")

    def handle(self, **options: Any) -> int:
        failed = self._once(force=options["force"])
        while options["loop"]:
            time.sleep(max(MIN_SLEEP_SECONDS, seconds_until_next_refresh()))
            failed = self._once(force=False)
        return 1 if failed else 0

    def _once(self, *, force: bool) -> bool:
        results = refresh_due_crls(force=force)
        for result in results:
            stream = self.stdout if result.ok else self.stderr
            stream.write(f"{'ok    ' if result.ok else 'FAILED'} {result.authority}: {result.message}")
        if not results:
            self.stdout.write("no CRL is due")
        return any(not result.ok for result in results)
