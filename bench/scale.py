"""Section 3: scale (1,000 vs 1,000,000 registered entries, CRL size, admin changelist, audit rows
under a flood of identical failures) and memory (RSS over many requests with many certificates).

Lookup and memory rows run in child processes (``bench.scale_worker``), each with its own database
file under the bench directory; the 1,000,000-entry database is kept and reused by later runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .driver import BenchFailure, Driver, certificate_headers, environ
from .report import Row, ratio_verdict, us

SECTION = "3 scale"
REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def worker(var_dir: Path, database: str, *args: str, timeout: float = 1800) -> dict[str, Any]:
    env = dict(os.environ, BENCH_DB=str(var_dir / database), BENCH_VAR_DIR=str(var_dir))
    env.pop("BENCH_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale_worker", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            return dict(json.loads(line.removeprefix("BENCH-RESULT ")))
    raise BenchFailure(f"bench.scale_worker {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")


def run(var_dir: Path, *, quick: bool, notes: list[str]) -> list[Row]:
    small, large = (100, 10_000) if quick else (1_000, 1_000_000)
    samples = "200" if quick else "3000"
    rows: list[Row] = []
    print(f"   lookup with {small:,} entries", flush=True)
    few = worker(var_dir, f"scale-{small}.sqlite3", "lookup", "--entries", str(small), "--samples", samples)
    print(f"   lookup with {large:,} entries (built once, then reused)", flush=True)
    many = worker(
        var_dir, f"scale-{large}.sqlite3", "lookup", "--entries", str(large), "--samples", samples, "--admin"
    )
    if many["build_seconds"]:
        notes.append(f"built the {large:,}-entry registry in {many['build_seconds']:,.0f} s (reused by later runs)")
    warm_ratio = (many["warm_us"] / many["ping_us"]) / (few["warm_us"] / few["ping_us"])
    db_ratio = many["db_lookup_us"] / few["db_lookup_us"]
    rows += [
        Row(
            SECTION,
            f"warm request, {large:,} vs {small:,} entries",
            f"{us(many['warm_us'])} vs {us(few['warm_us'])}",
            us(many["warm_p99_us"]),
            f"{warm_ratio:.2f}x",
            "≤ 1.10x",
            ratio_verdict(warm_ratio, 1.10),
            "each normalised to its process's no-auth baseline",
        ),
        Row(
            SECTION,
            f"registry DB lookup (cache miss), {large:,} vs {small:,} entries",
            f"{us(many['db_lookup_us'])} vs {us(few['db_lookup_us'])}",
            us(many["db_lookup_p99_us"]),
            f"{db_ratio:.2f}x",
            "≤ 1.10x",
            ratio_verdict(db_ratio, 1.10),
            "indexed thumbprint; B-tree depth grows by about one level",
        ),
        Row(
            SECTION,
            f"admin changelist, {large:,} entries",
            f"{many['changelist_ms']:,.0f} ms",
            target="< 500 ms",
            verdict="PASS" if many["changelist_ms"] < 500 else "MISS",
        ),
    ]
    slowest = "; ".join(f"{q['ms']:.0f} ms: {q['sql'][:160]}" for q in many["changelist_queries"][:3])
    notes.append(f"changelist slowest queries at {large:,} entries: {slowest}")
    rows.append(_crl_row(quick))
    rows.append(_failures(quick))
    print("   memory", flush=True)
    requests, certificates = (2_000, 500) if quick else (100_000, 10_000)
    memory = worker(
        var_dir,
        "memory.sqlite3",
        "memory",
        "--requests",
        str(requests),
        "--certificates",
        str(certificates),
        timeout=3600,
    )
    growth = (memory["rss_after"] - memory["rss_before"]) / MB
    rows.append(
        Row(
            SECTION,
            f"RSS growth over {requests:,} requests, {certificates:,} distinct certificates",
            f"{growth:+.1f} MB",
            target="< 20 MB",
            verdict="PASS" if growth < 20 else "MISS",
            note=(
                f"{memory['ok']:,} answered 200 in {memory['seconds']:.0f} s; caches hold "
                f"{memory['parsed_cached']:,} parsed / {memory['registry_cached']:,} registry entries "
                f"(CACHE_SIZE {memory['cache_size']:,}); RSS {memory['rss_before'] / MB:.0f}→"
                f"{memory['rss_after'] / MB:.0f} MB"
            ),
        )
    )
    Path(var_dir / "memory.sqlite3").unlink(missing_ok=True)
    return rows


def _crl_row(quick: bool) -> Row:
    from .inprocess import trust_available

    name = "CRL check, 100,000 vs 100 revoked serials (warm request)"
    if not trust_available():
        return Row(SECTION, name, "n/a (trust policy not available)", target="independent of size", verdict="n/a")
    from . import trust_setup

    return trust_setup.crl_scale_row(SECTION, name, quick=quick)


def _failures(quick: bool) -> Row:
    """A flood of identical refusals (one unregistered certificate, one client address)."""
    from certauth import devpki
    from certauth.models import AuthenticationFailure

    from .certs import FastIssuer, escaped

    count = 500 if quick else 10_000
    stranger = FastIssuer(devpki.make_ca("certauth bench failures root")).issue("bench-stranger")
    env = environ("/bench/certificate/", certificate_headers(escaped(stranger)))
    driver = Driver()
    before = AuthenticationFailure.objects.count()
    started = time.perf_counter()
    for _ in range(count):
        driver.call(env)
        if not driver.status.startswith("401"):
            raise BenchFailure(f"an unregistered certificate answered {driver.status}")
    elapsed = time.perf_counter() - started
    written = AuthenticationFailure.objects.count() - before
    rows = AuthenticationFailure.objects.filter(thumbprint_sha256=_thumb(stranger))
    counted = sum(rows.values_list("count", flat=True))
    return Row(
        SECTION,
        f"audit rows written by {count:,} identical failures",
        f"{written} row(s)",
        target="constant (1 per audit window)",
        verdict="PASS" if written <= 2 and counted == count else "MISS",
        note=f"counts sum to {counted:,}; {elapsed / count * 1e6:,.0f} µs per refused request",
    )


def _thumb(certificate: Any) -> str:
    from certauth.certificates import thumbprint_of

    return thumbprint_of(certificate)
