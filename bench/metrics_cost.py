"""What counting for Prometheus (``CERTAUTH["METRICS_ENABLED"]``) costs a warm request:
``python -m bench.metrics_cost [--quick]``.

Through Django's WSGI handler (``bench.driver``), the pinned certificate's DRF view, remembered (the warm path):
metrics off and on, request by request (``measure.alternating``: A B A B ..., the ratio of medians per round),
and the unauthenticated twin view as a baseline measured in the same run.  Off and on switch the process's
instruments directly (``certauth.metrics._active``), not the setting: a settings change would also drop the
remembered acceptance.  Then the same in a child process with ``PROMETHEUS_MULTIPROC_DIR`` set
(prometheus-client picks its file-backed values at import, so that mode needs a process of its own).  Prints
medians and ratios; never fails on timing.  ``--callgrind``: the hook's CPU instructions per decision instead,
counted by valgrind (noise-free on a shared machine; compare with a warm request's ~1.44 million,
docs/performance.md)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .measure import alternating, interleaved

REPO = Path(__file__).resolve().parent.parent


def measure(quick: bool) -> list[str]:
    from certauth import devpki, metrics

    from . import certs
    from .driver import Driver, certificate_headers, environ
    from .trust_setup import trust_root
    from .views import PINNED_IDENTITY

    root = devpki.make_ca("certauth bench root")
    trust_root(root)
    pinned = certs.FastIssuer(root).issue(PINNED_IDENTITY)
    certs.register_many(PINNED_IDENTITY, [pinned])
    headers = certificate_headers(certs.escaped(pinned))
    driver = Driver()
    warm = driver.caller(environ("/bench/certificate/", headers))
    open_view = driver.caller(environ("/bench/open-certificate/", headers))
    instruments = metrics.instruments()
    metrics.active()  # settings read once: from here on the switch below decides

    def with_metrics(active: object) -> Callable[[], object]:
        def call() -> object:
            metrics._active = active  # type: ignore[assignment]
            return warm()

        return call

    off, on = with_metrics(None), with_metrics(instruments)
    rounds, per_round, warmup = (2, 20, 10) if quick else (20, 500, 500)
    before = instruments.accepted._value.get()
    stats = interleaved({"no auth": open_view, "off": off, "on": on}, rounds=rounds, per_round=per_round, warmup=warmup)
    if instruments.accepted._value.get() <= before:
        raise SystemExit("the 'on' scenario counted nothing: the benchmark would measure the wrong thing")
    paired = alternating(off, on, rounds=rounds, per_round=per_round, warmup=warmup)
    hook_on, hook_off = hook_cost(instruments, quick), hook_cost(None, quick)
    base = stats["no auth"].median_us
    mode = "multiprocess (PROMETHEUS_MULTIPROC_DIR)" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "single process"
    return [
        f"{mode}:",
        f"  no auth (baseline)         median {base:7.1f} us",
        f"  certauth warm, metrics off median {stats['off'].median_us:7.1f} us  {stats['off'].median_us / base:.3f}x",
        f"  certauth warm, metrics on  median {stats['on'].median_us:7.1f} us  {stats['on'].median_us / base:.3f}x",
        f"  on / off, alternating request by request: {paired.ratio:.3f}x (per-round spread {paired.spread}), "
        f"{paired.b.median_us - paired.a.median_us:+.2f} us per request",
        f"  the hook alone (what evaluate() adds, best of 5): {hook_on:.2f} us on, {hook_off:.3f} us off",
    ]


def hook_cost(active: object, quick: bool) -> float:
    """Microseconds per decision of exactly what ``evaluate`` adds: ``metrics.active()``, two clock reads, and
    with metrics on the counter and the histogram.  Less noisy than the request figures (no handler around)."""
    import time
    import timeit

    from certauth import metrics

    metrics._active = active  # type: ignore[assignment]
    clock = time.perf_counter

    def hook() -> None:
        meter = metrics.active()
        started = clock() if meter is not None else 0.0
        if meter is not None:
            meter.decided(True, clock() - started)

    number = 2_000 if quick else 200_000
    return min(timeit.repeat(hook, number=number, repeat=5)) / number * 1e6


HOOK_CALLS = 10_000


def hook_loop(enabled: bool) -> None:
    """What ``--callgrind`` counts: ``HOOK_CALLS`` runs of the hook inside ``math.fsum`` (nothing else calls it)."""
    import math
    import time

    from django.test import override_settings

    from certauth import metrics

    with override_settings(CERTAUTH={"METRICS_ENABLED": enabled}):
        clock = time.perf_counter

        def hook() -> float:
            meter = metrics.active()
            started = clock() if meter is not None else 0.0
            if meter is not None:
                meter.decided(True, clock() - started)
            return 0.0

        for _ in range(1000):
            hook()
        math.fsum(hook() for _ in range(HOOK_CALLS))


def callgrind() -> list[str]:
    """CPU instructions per decision that the hook adds, counted by valgrind's callgrind (immune to other
    processes on a shared machine), single process and multiprocess; the loop itself is the 'off' count."""
    import re
    import shutil

    if shutil.which("valgrind") is None:
        return ["callgrind: valgrind not installed, skipped"]
    counts: dict[tuple[str, bool], int] = {}
    with tempfile.TemporaryDirectory(prefix="certauth-bench-callgrind-") as folder:
        for mode in ("single process", "multiprocess"):
            for enabled in (False, True):
                environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
                environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
                if mode == "multiprocess":
                    environment["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(dir=folder)
                out = Path(folder) / f"callgrind.{len(counts)}.out"
                command = [
                    "valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=math_fsum",
                    f"--callgrind-out-file={out}", sys.executable, "-m", "bench.metrics_cost",
                    "--hook-loop", "on" if enabled else "off",
                ]  # fmt: skip
                result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, check=False)
                found = re.search(r"Collected : (\d+)", result.stderr)
                if result.returncode != 0 or found is None:
                    return [f"callgrind failed: {result.stderr[-500:]}"]
                counts[(mode, enabled)] = int(found.group(1))
    return [
        f"callgrind, {mode}: +{(counts[(mode, True)] - counts[(mode, False)]) / HOOK_CALLS:,.0f} instructions per "
        f"decision with metrics on (the off loop: {counts[(mode, False)] / HOOK_CALLS:,.0f} per call)"
        for mode in ("single process", "multiprocess")
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (figures meaningless)")
    parser.add_argument("--callgrind", action="store_true", help="count the hook's CPU instructions (valgrind)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hook-loop", choices=["on", "off"], help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.hook_loop:
        import django

        django.setup()
        hook_loop(arguments.hook_loop == "on")
        return 0
    if arguments.callgrind:
        print("\n".join(callgrind()))
        return 0
    from .__main__ import prepare_django

    with tempfile.TemporaryDirectory(prefix="certauth-bench-metrics-") as folder:
        if not arguments.child:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        prepare_django(Path(folder))
        from django.test import override_settings

        with override_settings(CERTAUTH={"METRICS_ENABLED": True, "REGISTRY_MAX_STALENESS_SECONDS": 60.0}):
            print("\n".join(measure(arguments.quick)), flush=True)
    if arguments.child:
        return 0
    with tempfile.TemporaryDirectory(prefix="certauth-bench-multiproc-") as directory:
        command = [sys.executable, "-m", "bench.metrics_cost", "--child", *(["--quick"] if arguments.quick else [])]
        environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        environment.pop("BENCH_DB", None)
        return subprocess.run(command, cwd=REPO, env=environment, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
