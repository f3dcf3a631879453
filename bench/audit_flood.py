"""``python -m bench.audit_flood [--count 10000]``: what a flood of distinct certificates from one address
costs the audit (issue 16, class 7).  Runnable alone; prints figures, asserts no timing.

Two floods through the real request handler (URL routing, middleware, DRF, the certauth exception handler),
each request with a new certificate (a new thumbprint every time) from the same client address:

* self-made certificates (``self_signed_not_allowed``: refused before the registry step);
* certificates from a trusted authority that are not registered (``unknown_certificate``: the one refusal
  whose PEM an operator can use, kept for ``AUDIT_CAPTURE_PER_ADDRESS`` of them per address and window).

For each: audit rows, stored bytes (every text column of every row), whether the counts add up exactly to
the refusals sent, and what one row per certificate (the audit before this change) would have cost.
Exits non-zero only when a count is wrong."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

CLIENT_IP = "198.51.100.200"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_flood", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000, help="distinct certificates per flood (10,000)")
    parser.add_argument("--var-dir", type=Path, help="state directory (default var/bench-audit-flood)")
    return parser.parse_args(argv)


def stored_bytes(rows: Sequence[object]) -> int:
    from certauth.models import AuthenticationFailure

    fields = [f.attname for f in AuthenticationFailure._meta.concrete_fields]
    return sum(len(str(getattr(row, name) or "")) for row in rows for name in fields)


def flood(name: str, count: int, make: Callable[[int], bytes]) -> bool:
    from django.db.models import Sum
    from django.test import Client

    from certauth.models import AuthenticationFailure

    AuthenticationFailure.objects.all().delete()
    client = Client()
    reasons: set[str] = set()
    pem_bytes = 0
    started = time.monotonic()
    for index in range(count):
        pem = make(index)
        pem_bytes += len(pem)
        response = client.get(
            "/api/whoami/",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_SSL_CLIENT_CERT=quote(pem.decode("ascii"), safe=""),
            HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
            HTTP_X_REAL_IP=CLIENT_IP,
        )
        reasons.add(response.json()["reason"])
    elapsed = time.monotonic() - started
    rows = list(AuthenticationFailure.objects.all())
    counted = AuthenticationFailure.objects.aggregate(n=Sum("count"))["n"] or 0
    windows = len({row.window_start for row in rows})
    size = stored_bytes(rows)
    with_pem = sum(1 for row in rows if row.certificate_pem)
    print(f"\n{name}: {count:,} refusals, each with a new certificate, from {CLIENT_IP}")
    print(f"  reason                {', '.join(sorted(reasons))}")
    print(f"  audit rows            {len(rows):>12,}   ({windows} audit window(s) spanned)")
    print(f"  rows with a PEM       {with_pem:>12,}")
    print(f"  stored bytes          {size:>12,}   ({size / count:.1f} per refusal)")
    print(f"  counts add up to      {counted:>12,}   ({'exact' if counted == count else 'WRONG'})")
    # Before this change: one row per certificate, each with its PEM (and the same request line).
    print(f"  one row per cert      {count:>12,}   rows, >= {pem_bytes:,} bytes of PEM alone")
    rows_ratio, bytes_ratio = count / max(1, len(rows)), pem_bytes / max(1, size)
    print(f"  ratio                 {rows_ratio:>12,.0f}x  fewer rows, {bytes_ratio:,.0f}x fewer bytes")
    print(f"  ({elapsed:.1f} s, {count / elapsed:,.0f} refusals/s; not a target, context only)")
    return counted == count


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    repo = Path(__file__).resolve().parent.parent
    from .__main__ import prepare_django

    prepare_django((arguments.var_dir or repo / "var" / "bench-audit-flood").absolute())
    from certauth import devpki
    from certauth.authorities import add_authority
    from certauth.conf import settings

    root = devpki.make_ca("audit flood root")
    add_authority("audit flood root", root.cert_pem())
    print(f"AUDIT_WINDOW_SECONDS={settings.AUDIT_WINDOW_SECONDS}")
    print(f"AUDIT_CAPTURE_PER_ADDRESS={settings.AUDIT_CAPTURE_PER_ADDRESS}")
    ok = flood("self-made certificates", arguments.count, lambda i: devpki.self_signed_client(f"flood-{i}").cert_pem())
    ok &= flood(
        "unregistered certificates from a trusted authority",
        arguments.count,
        lambda i: devpki.issue_client(root, f"unknown-{i}").cert_pem(),
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
