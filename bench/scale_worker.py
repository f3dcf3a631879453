"""Runs one scale or memory measurement in a process of its own (its own database file, a clean RSS)
and prints one JSON line.  Started by ``bench.scale``; ``python -m bench.scale_worker --help``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any


def setup() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


SCALE_LABEL = "bench-scale"
PER_IDENTITY = 100


def populate(entries: int) -> float:
    """Make the registry hold exactly ``entries`` synthetic rows (reused when already there); returns the
    build time in seconds (0 when reused)."""
    from django.db import connection
    from django.utils import timezone

    from certauth.models import CertificateIdentity, RegisteredCertificate

    from .certs import synthetic_thumbprint
    from .registry_rows import EntryWriter

    if RegisteredCertificate.objects.filter(label=SCALE_LABEL).count() == entries:
        return 0.0
    started = time.monotonic()
    RegisteredCertificate.objects.filter(label=SCALE_LABEL).delete()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-100000")
    identities = (entries + PER_IDENTITY - 1) // PER_IDENTITY
    CertificateIdentity.objects.bulk_create(
        [CertificateIdentity(name=f"bench-scale-{n:07d}", scopes="orders:read") for n in range(identities)],
        batch_size=5000,
        ignore_conflicts=True,
    )
    ids = dict(
        CertificateIdentity.objects.filter(name__startswith="bench-scale-").values_list("name", "id")
    )
    now = timezone.now()
    not_after = now + dt.timedelta(days=365)
    not_before = now - dt.timedelta(days=1)
    base = now - dt.timedelta(days=400)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for index in range(entries):
            yield (
                ids[f"bench-scale-{index // PER_IDENTITY:07d}"],
                {
                    "thumbprint_sha256": synthetic_thumbprint(index),
                    "subject": f"CN=bench-scale-{index}",
                    "subject_cn": f"bench-scale-{index}",
                    "issuer": "CN=certauth bench root",
                    "serial_number": f"{index + 1:x}",
                    "not_before": not_before,
                    "not_after": not_after,
                    "created_at": base + dt.timedelta(seconds=index * 30),
                    "label": SCALE_LABEL,
                },
            )

    EntryWriter().write_facts(rows())
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("ANALYZE")
            cursor.execute("PRAGMA synchronous=NORMAL")
        else:
            cursor.execute("ANALYZE")
    return time.monotonic() - started


def trusted_root(name: str) -> Any:
    """A fresh dev CA, made the enabled trusted authority (the default policy is "chained")."""
    from certauth import devpki

    from .inprocess import trust_available

    root = devpki.make_ca(name)
    if trust_available():
        from .trust_setup import trust_root

        trust_root(root)
    return root


def lookup(entries: int, samples: int, admin: bool) -> dict[str, Any]:
    from certauth.registry import load_entry

    from .certs import FastIssuer, escaped, register_many, synthetic_thumbprint
    from .driver import Driver, certificate_headers, environ
    from .measure import interleaved

    build_seconds = populate(entries)
    issuer = FastIssuer(trusted_root("certauth bench scale root"))
    pinned = issuer.issue("bench-scale-pinned")
    from certauth.models import RegisteredCertificate

    RegisteredCertificate.objects.filter(identity__name="bench-scale-pinned").delete()
    register_many("bench-scale-pinned", [pinned])
    driver = Driver()
    headers = certificate_headers(escaped(pinned))
    stats = interleaved(
        {
            "ping": driver.caller(environ("/api/ping/", headers)),
            "warm": driver.caller(environ("/bench/certificate/", headers)),
        },
        rounds=max(1, samples // 250),
        per_round=min(samples, 250),
        warmup=min(samples, 200),
    )
    rng = random.Random(7)
    thumbprints = [synthetic_thumbprint(rng.randrange(entries)) for _ in range(samples)]
    timings = []
    for thumbprint in thumbprints:
        start = time.perf_counter_ns()
        entry = load_entry(thumbprint)
        timings.append(time.perf_counter_ns() - start)
        if entry is None:
            raise SystemExit(f"synthetic entry {thumbprint} missing")
    result: dict[str, Any] = {
        "entries": entries,
        "build_seconds": build_seconds,
        "ping_us": stats["ping"].median_us,
        "warm_us": stats["warm"].median_us,
        "warm_p99_us": stats["warm"].p99_us,
        "db_lookup_us": statistics.median(timings) / 1000,
        "db_lookup_p99_us": sorted(timings)[int(0.99 * (len(timings) - 1))] / 1000,
    }
    if admin:
        result.update(changelist())
    return result


def changelist(repeats: int = 5) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-admin").first() or user_model.objects.create_superuser(
        "bench-admin", "bench@localhost", None
    )
    client = Client()
    client.force_login(user)
    url = "/admin/certauth/registeredcertificate/"
    timings = []
    queries: list[dict[str, Any]] = []
    for attempt in range(repeats + 1):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url, secure=True)
            elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"changelist answered {response.status_code}")
        if attempt:  # the first request warms templates and the page cache
            timings.append(elapsed * 1000)
            queries = [{"ms": float(q["time"]) * 1000, "sql": q["sql"][:300]} for q in captured.captured_queries]
    queries.sort(key=lambda q: -q["ms"])
    return {"changelist_ms": statistics.median(timings), "changelist_queries": queries[:4]}


def memory(requests: int, certificates: int) -> dict[str, Any]:
    from certauth import authenticator
    from certauth.conf import settings
    from certauth.registry import registry

    from .certs import FastIssuer, escaped, register_many
    from .driver import Driver, certificate_headers, environ
    from .measure import rss_bytes

    issuer = FastIssuer(trusted_root("certauth bench memory root"))
    issued = issuer.issue_many("bench-memory", certificates)
    register_many("bench-memory", issued)
    envs = [environ("/bench/certificate/", certificate_headers(escaped(c))) for c in issued]
    del issued
    driver = Driver()
    order = list(range(certificates))
    rng = random.Random(11)
    for index in order[: min(1000, certificates)]:
        driver.call(envs[index])
    before = rss_bytes()
    started = time.monotonic()
    done = 0
    ok = 0
    while done < requests:
        rng.shuffle(order)
        for index in order[: requests - done]:
            driver.call(envs[index])
            ok += driver.status.startswith("200")
        done += min(certificates, requests - done)
    after = rss_bytes()
    cfg = authenticator.config()
    return {
        "requests": requests,
        "certificates": certificates,
        "ok": ok,
        "rss_before": before,
        "rss_after": after,
        "seconds": time.monotonic() - started,
        "cache_size": settings.CACHE_SIZE,
        "parsed_cached": len(cfg.parsed),
        "registry_cached": len(registry._entries),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    look = sub.add_parser("lookup")
    look.add_argument("--entries", type=int, required=True)
    look.add_argument("--samples", type=int, default=2000)
    look.add_argument("--admin", action="store_true")
    mem = sub.add_parser("memory")
    mem.add_argument("--requests", type=int, default=100_000)
    mem.add_argument("--certificates", type=int, default=10_000)
    arguments = parser.parse_args(argv)
    setup()
    if arguments.command == "lookup":
        result = lookup(arguments.entries, arguments.samples, arguments.admin)
    else:
        result = memory(arguments.requests, arguments.certificates)
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
