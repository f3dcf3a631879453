"""Section 2: end to end through nginx (mutual TLS, keep-alive) + gunicorn (2 workers), driven by
ApacheBench presenting a real client certificate (``ab -k -E cert+key.pem``) on the same kind of
connection to three endpoints: ``/api/whoami/`` (certauth), ``/bench/open-whoami/`` (the same view code
and the very same JSON, unauthenticated: the baseline the target is measured against) and ``/api/ping/``
(unauthenticated, a smaller JSON; shown for reference).  Then the ASGI path: the same two views through
nginx -> uvicorn (2 workers, ``make run SERVER=uvicorn``'s flags), certauth against its unauthenticated twin,
interleaved in the same way (skipped, with a note, when uvicorn is not installed).

Loopback only; every run is bounded by a request count and a timeout.  ``ab`` keeps connections alive
only when responses carry Content-Length: the run checks that they do and reports ab's keep-alive
count."""

from __future__ import annotations

import csv
import http.client
import importlib.util
import os
import re
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .driver import BenchFailure
from .report import Row
from .views import WHOAMI_CERTIFICATE_ENV

if TYPE_CHECKING:
    from scripts.stack import Stack

SECTION = "2 end to end"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class AbResult:
    rps: float
    p50_ms: float
    p99_ms: float
    complete: int
    failed: int
    non_2xx: int
    keep_alive: int


def _number(pattern: str, text: str, default: float = 0.0) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else default


def ab(url: str, bundle: Path, *, requests: int, concurrency: int, csv_path: Path, timeout: float) -> AbResult:
    command = ["ab", "-q", "-k", "-E", str(bundle), "-c", str(concurrency), "-n", str(requests)]
    command += ["-s", "30", "-e", str(csv_path), url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    out = result.stdout
    if result.returncode != 0 or "Requests per second" not in out:
        raise BenchFailure(f"ab failed ({result.returncode}): {result.stderr[-1000:]}{out[-1000:]}")
    percentiles: dict[int, float] = {}
    with csv_path.open() as handle:
        for line in csv.reader(handle):
            if line and line[0].isdigit():
                percentiles[int(line[0])] = float(line[1])
    return AbResult(
        rps=_number(r"Requests per second:\s+([\d.]+)", out),
        p50_ms=percentiles.get(50, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        complete=int(_number(r"Complete requests:\s+(\d+)", out)),
        failed=int(_number(r"Failed requests:\s+(\d+)", out)),
        non_2xx=int(_number(r"Non-2xx responses:\s+(\d+)", out)),
        keep_alive=int(_number(r"Keep-Alive requests:\s+(\d+)", out)),
    )


# The shipped default policy is "chained": certauth trusts the dev CA as nginx does.
TRUST_DEV_CA = """
import importlib.util
from pathlib import Path
if importlib.util.find_spec("certauth.trust"):
    from certauth.authorities import add_authority
    add_authority("bench dev CA", Path(r"{ca}").read_bytes())
"""


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BenchFailure(f"manage.py {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


PING, OPEN_WHOAMI, WHOAMI = "/api/ping/", "/bench/open-whoami/", "/api/whoami/"


def _content_length(host: str, port: int, path: str, pki: Path) -> str | None:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise BenchFailure(f"{path} answered {response.status} through nginx")
        return response.getheader("Content-Length")
    finally:
        connection.close()


def run(var_dir: Path, *, quick: bool, notes: list[str]) -> list[Row]:
    from certauth.devpki import create_dev_pki
    from scripts.stack import Stack, StackError, find_nginx

    name = "/api/whoami/ vs its unauthenticated twin (keep-alive mTLS)"
    if shutil.which("ab") is None or find_nginx() is None:
        return [Row(SECTION, name, "n/a (ab or nginx not installed)", target="≥ 0.90x rps", verdict="n/a")]
    stack_dir = var_dir / "stack"
    pki_dir = stack_dir / "pki"
    stack_dir.mkdir(parents=True, exist_ok=True)
    create_dev_pki(pki_dir)
    bundle = stack_dir / "client-bundle.pem"
    bundle.write_bytes((pki_dir / "client.pem").read_bytes() + (pki_dir / "client.key").read_bytes())
    bundle.chmod(0o600)
    database = stack_dir / "e2e.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    extra = {"DATABASE_URL": f"sqlite:///{database}", "CERTAUTH_VAR_DIR": str(stack_dir)}
    # gunicorn serves the project plus the bench-only URLs (the unauthenticated twin of /api/whoami/).
    stack_extra = {
        **extra,
        "DJANGO_SETTINGS_MODULE": "bench.stack_settings",
        WHOAMI_CERTIFICATE_ENV: str(pki_dir / "client.pem"),
    }
    env = {**os.environ, **extra, "DJANGO_SETTINGS_MODULE": "project.settings"}
    _manage(env, "migrate", "--noinput", "--verbosity", "0")
    _manage(env, "certauth", "register", "--identity", "bench-e2e", "--cert", str(pki_dir / "client.pem"))
    _manage(env, "shell", "--no-imports", "-c", TRUST_DEV_CA.format(ca=pki_dir / "ca.pem"))

    requests, concurrency, rounds = (200, 2, 1) if quick else (5000, 8, 3)
    # One address sends everything here: lift nginx's per-address rate limit (500 r/s) above ab's rate.
    stack = Stack(stack_dir, pki_dir=pki_dir, port=0, workers=2, env=stack_extra, requests_per_second=100_000)
    try:
        stack.start()
    except StackError as error:
        note = str(error)[:200]
        return [Row(SECTION, name, "n/a (stack did not start)", target="≥ 0.90x rps", verdict="n/a", note=note)]
    paths = (PING, OPEN_WHOAMI, WHOAMI)
    try:
        best, lengths = _measure(stack, paths, pki_dir, bundle, requests, concurrency, rounds, notes)
    finally:
        stack.stop()
    ping, twin, whoami = best[PING], best[OPEN_WHOAMI], best[WHOAMI]
    ratio = whoami.rps / twin.rps
    notes.append(
        f"end to end: ab -k -c {concurrency} -n {requests}, {rounds} interleaved round(s) per endpoint, median round "
        f"shown; keep-alive requests "
        + ", ".join(f"{path} {best[path].keep_alive}/{best[path].complete}" for path in paths)
        + f"; response sizes (Content-Length) {', '.join(f'{path} {lengths[path]}' for path in paths)}"
    )
    rows = [
        Row(
            SECTION,
            f"{PING} (no auth, smaller JSON; reference)",
            f"{ping.rps:,.0f} req/s",
            f"{ping.p99_ms:.1f} ms",
            f"{ping.rps / twin.rps:.2f}x",
            note=f"p50 {ping.p50_ms:.1f} ms",
        ),
        Row(
            SECTION,
            f"{OPEN_WHOAMI} (no auth, whoami's view and JSON; baseline)",
            f"{twin.rps:,.0f} req/s",
            f"{twin.p99_ms:.1f} ms",
            "1.00x",
            note=f"p50 {twin.p50_ms:.1f} ms",
        ),
        Row(
            SECTION,
            f"{WHOAMI} (certauth)",
            f"{whoami.rps:,.0f} req/s",
            f"{whoami.p99_ms:.1f} ms",
            f"{ratio:.2f}x",
            "≥ 0.90x rps of the baseline",
            "PASS" if ratio >= 0.9 else "MISS",
            f"p50 {whoami.p50_ms:.1f} ms; {whoami.rps / ping.rps:.2f}x of {PING}",
        ),
    ]
    asgi = Stack(
        stack_dir, pki_dir=pki_dir, port=0, workers=2, env=stack_extra, requests_per_second=100_000, server="uvicorn"
    )
    return rows + _asgi_rows(asgi, pki_dir, bundle, requests, concurrency, rounds, notes)


ASGI_TARGET = "≥ 0.91x rps of the baseline (within 1.10x)"


def _asgi_rows(
    stack: Stack, pki_dir: Path, bundle: Path, requests: int, concurrency: int, rounds: int, notes: list[str]
) -> list[Row]:
    """nginx -> uvicorn: /api/whoami/ (certauth) against its unauthenticated twin, interleaved."""
    from scripts.stack import StackError

    name = f"ASGI (uvicorn): {WHOAMI} (certauth)"
    if importlib.util.find_spec("uvicorn") is None:
        return [Row(SECTION, name, "n/a (uvicorn not installed)", target=ASGI_TARGET, verdict="n/a")]
    try:
        stack.start()
    except StackError as error:
        note = str(error)[:200]
        return [Row(SECTION, name, "n/a (stack did not start)", target=ASGI_TARGET, verdict="n/a", note=note)]
    try:
        best, _lengths = _measure(stack, (OPEN_WHOAMI, WHOAMI), pki_dir, bundle, requests, concurrency, rounds, notes)
    finally:
        stack.stop()
    twin, whoami = best[OPEN_WHOAMI], best[WHOAMI]
    ratio = whoami.rps / twin.rps
    notes.append(
        "ASGI: nginx -> uvicorn, 2 workers, `make run SERVER=uvicorn`'s flags (scripts/stack.py), the same ab runs "
        f"and rounds, baseline measured in the same run: time per request {twin.rps / whoami.rps:.3f}x of the "
        "baseline's"
    )
    return [
        Row(
            SECTION,
            f"ASGI (uvicorn): {OPEN_WHOAMI} (no auth; baseline)",
            f"{twin.rps:,.0f} req/s",
            f"{twin.p99_ms:.1f} ms",
            "1.00x",
            note=f"p50 {twin.p50_ms:.1f} ms",
        ),
        Row(
            SECTION,
            name,
            f"{whoami.rps:,.0f} req/s",
            f"{whoami.p99_ms:.1f} ms",
            f"{ratio:.2f}x",
            ASGI_TARGET,
            "PASS" if whoami.rps * 1.10 >= twin.rps else "MISS",
            f"p50 {whoami.p50_ms:.1f} ms; time per request {twin.rps / whoami.rps:.2f}x of the baseline's",
        ),
    ]


def _measure(
    stack: Stack,
    paths: tuple[str, ...],
    pki_dir: Path,
    bundle: Path,
    requests: int,
    concurrency: int,
    rounds: int,
    notes: list[str],
) -> tuple[dict[str, AbResult], dict[str, str | None]]:
    """Warm every path, then ``rounds`` interleaved ab runs per path; the median round of each, and the
    responses' Content-Length (ab keeps connections alive only with one)."""
    lengths = {path: _content_length(stack.host, stack.port, path, pki_dir) for path in paths}
    if not all(lengths.values()):
        notes.append(f"responses without Content-Length (ab cannot keep alive): {lengths}")
    if lengths[OPEN_WHOAMI] != lengths[WHOAMI]:
        raise BenchFailure(f"{OPEN_WHOAMI} and {WHOAMI} answer different sizes: {lengths}")
    results: dict[str, list[AbResult]] = {path: [] for path in paths}
    csv_path = stack.var_dir / "ab.csv"
    for path in results:  # warm-up: both workers, all caches
        ab(stack.base_url + path, bundle, requests=min(500, requests), concurrency=concurrency,
           csv_path=csv_path, timeout=120)  # fmt: skip
    for _ in range(rounds):
        for path, bucket in results.items():
            bucket.append(ab(stack.base_url + path, bundle, requests=requests, concurrency=concurrency,
                             csv_path=csv_path, timeout=300))  # fmt: skip
    best = {path: _best(bucket) for path, bucket in results.items()}
    for path, result in best.items():
        if result.non_2xx or result.failed:
            raise BenchFailure(f"{path}: {result.non_2xx} non-2xx, {result.failed} failed responses through nginx")
    return best, lengths


def _best(results: list[AbResult]) -> AbResult:
    """The median round by throughput (robust to one disturbed round on a shared machine)."""
    ordered = sorted(results, key=lambda result: result.rps)
    return ordered[len(ordered) // 2]
