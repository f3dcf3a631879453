"""``certauth metrics``: the Prometheus exposition on stdout, or with ``--textfile PATH`` into a file for
node_exporter's textfile collector (run it from cron).  The registry gauges are read now; the request counters
are every worker's when ``PROMETHEUS_MULTIPROC_DIR`` is set in this command's environment too (docs/metrics.md),
else this process's (zero).  Works whether ``METRICS_ENABLED`` is on or off: running it is the opt-in."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .. import metrics
from . import CommandError, Subcommand


class Metrics(Subcommand):
    name = "metrics"
    help = "Print the Prometheus metrics, or write them for node_exporter's textfile collector (--textfile)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--textfile",
            metavar="PATH",
            help="Write to PATH (replaced at once, never half-written), e.g. "
            "/var/lib/node_exporter/textfile_collector/certauth.prom.",
        )

    def handle(self, **options: Any) -> int:
        if not metrics.available():
            raise CommandError(f"prometheus-client is not installed: {metrics.INSTALL_HINT}.")
        problem = metrics.multiprocess_problem()
        if problem is not None:
            raise CommandError(f"{problem}.")
        path = options.get("textfile")
        if not path:
            self.stdout.write(metrics.exposition().decode().rstrip("\n"))
            return 0
        if not path.endswith(".prom"):
            raise CommandError(f"--textfile {path!r}: node_exporter reads only files ending in .prom.")
        directory = Path(path).parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise CommandError(f"--textfile {path!r}: {directory} is not a directory this user can write to.")
        metrics.write_textfile(path)
        return 0
