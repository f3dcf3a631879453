"""A second, noise-free check of ``bench.warm_client``'s sync figure: CPU instructions per request, counted
by ``valgrind --tool=callgrind`` (immune to other processes on a shared machine), for the same two DRF views
through Django's test client with nginx's headers.

``python -m bench.warm_count [--requests N]``: prepares a database (a trusted root, one registered
certificate), then runs one process per view under callgrind, counting only the measured requests (the loop
runs inside ``math.fsum``, which nothing else calls: ``--collect-atstart=no --toggle-collect=math_fsum``), and
prints instructions per request and their ratio.  The cyclic garbage collector is off while counting (see
``run``).  Needs ``valgrind`` on PATH."""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def prepare(directory: Path) -> None:
    from .__main__ import prepare_django
    from .warm_client import Setup

    prepare_django(directory)
    setup = Setup()
    (directory / "setup.json").write_text(json.dumps({"escaped": setup.escaped, "secret": setup.proxy_secret}))


def run(directory: Path, kind: str, requests: int) -> None:
    """One process's measured loop (what callgrind counts): ``requests`` warm requests to one view."""
    os.environ["BENCH_VAR_DIR"] = str(directory)
    os.environ["BENCH_DB"] = str(directory / "bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.test import Client

    from .inprocess import certauth_settings
    from .warm_client import CERTIFICATE_PATH, OPEN_PATH, fresh, nginx_headers

    facts = json.loads((directory / "setup.json").read_text())
    path = OPEN_PATH if kind == "open" else CERTIFICATE_PATH
    headers = nginx_headers(facts["escaped"], path, facts["secret"])
    client = Client()

    def call() -> float:
        response = client.get(path, headers={**headers, "X-SSL-Client-Cert": fresh(facts["escaped"])})
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.content[:300]!r}")
        return 0.0

    # Under callgrind the code runs ~50-100x slower, so the time-based refreshes (the registry generation read
    # once per REGISTRY_MAX_STALENESS_SECONDS, last_used_at written once per LAST_USED_RESOLUTION_SECONDS)
    # would come that many times more often per request than in real time: their periods are scaled to match.
    scaled = {"REGISTRY_MAX_STALENESS_SECONDS": 60.0, "LAST_USED_RESOLUTION_SECONDS": 3600}
    with certauth_settings(PROXY_SECRET=facts["secret"], **scaled):
        for _ in range(50):
            call()
        # The cyclic collector off while counting: when its full collections fall (one is tens of millions of
        # instructions, by heap size) would decide the figure; both views leave about the same garbage.
        gc.collect()
        gc.disable()
        math.fsum(call() for _ in range(requests))  # the only math.fsum call: callgrind counts inside it
        gc.enable()


def count(directory: Path, kind: str, requests: int) -> int:
    """Instructions executed by ``requests`` requests to the ``kind`` view, counted by callgrind."""
    out = directory / f"callgrind.{kind}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=math_fsum",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.warm_count",
        "--run",
        kind,
        "--requests",
        str(requests),
        "--dir",
        str(directory),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
    subprocess.run(command, check=True, cwd=REPO, env=environment, capture_output=True)
    match = re.search(r"^summary:\s*(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no summary line in {out}")
    return int(match.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm_count", description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--run", choices=["open", "cert"], help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.run:
        run(arguments.dir, arguments.run, arguments.requests)
        return 0
    if shutil.which("valgrind") is None:
        print("warm_count: valgrind is not installed; nothing counted")
        return 0
    with tempfile.TemporaryDirectory(prefix="certauth-warm-count-") as temporary:
        directory = arguments.dir or Path(temporary)
        prepare(directory)
        counts = {kind: count(directory, kind, arguments.requests) / arguments.requests for kind in ("open", "cert")}
    print(
        f"instructions per request: open {counts['open']:,.0f}  certauth {counts['cert']:,.0f}  "
        f"(+{counts['cert'] - counts['open']:,.0f})  ratio {counts['cert'] / counts['open']:.3f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
