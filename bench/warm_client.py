"""The warm path as an application developer measures it: Django's test client (sync) and ``AsyncClient``
(ASGI), a DRF view with no authentication at all (``authentication_classes = []``, ``AllowAny``) against the
same view with certauth's ``ClientCertificateAuthentication`` and ``IsCertificateAuthenticated``, every
request carrying the headers nginx sends (``certauth.nginxconf.UPSTREAM_HEADERS``, the proxy secret) from the
trusted proxy's address.

The two views alternate request by request (A B A B ..., B A B A ... in the next round), so load from other
processes hits both alike; each round's ratio is the median of B's requests over the median of A's, and the
table gives the median of those per-round ratios with their spread (min to max).
``python -m bench.warm_client [--rounds N] [--per-round N]``; section 1 of ``python -m bench`` runs the same
measurement (``rows``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPEN_PATH = "/bench/open/"
CERTIFICATE_PATH = "/bench/cert/"


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of B's median to A's, and the two medians over all samples (µs)."""

    rounds: list[float]
    base_us: float
    measured_us: float

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def spread(self) -> str:
        return f"{min(self.rounds):.2f} to {max(self.rounds):.2f}"


def nginx_headers(escaped_pem: str, path: str, proxy_secret: str) -> dict[str, str]:
    """What nginx (``certauth nginx-config``, ``ssl_verify_client on``) sends upstream, by header name; the
    test clients connect from 127.0.0.1, the trusted proxy's address."""
    from certauth.nginxconf import ORIGINAL_METHOD_HEADER, ORIGINAL_URI_HEADER

    return {
        "X-SSL-Client-Cert": escaped_pem,
        "X-SSL-Client-Verify": "SUCCESS",
        ORIGINAL_URI_HEADER: path,
        ORIGINAL_METHOD_HEADER: "GET",
        "X-Real-IP": "203.0.113.7",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Certauth-Proxy-Secret": proxy_secret,
    }


def fresh(value: str) -> str:
    """A new string object with ``value``'s content (a server builds new strings for every request: no
    cached hash from the previous one)."""
    return (value + " ")[:-1]


class Setup:
    """A trusted root (``root``, else a new one), one registered certificate, and the proxy secret nginx
    would send."""

    def __init__(self, root: Any = None) -> None:
        from certauth import devpki

        from . import certs
        from .trust_setup import trust_root

        self.root = root or devpki.make_ca("certauth bench root")
        trust_root(self.root)
        issuer = certs.FastIssuer(self.root)
        pinned = issuer.issue("bench-warm-client")
        certs.register_many("bench-warm-client", [pinned])
        self.escaped = certs.escaped(pinned)
        self.proxy_secret = secrets.token_urlsafe(32)

    def headers(self, path: str) -> dict[str, str]:
        return nginx_headers(self.escaped, path, self.proxy_secret)

    def settings(self) -> Any:
        from .inprocess import certauth_settings

        return certauth_settings(PROXY_SECRET=self.proxy_secret)


def _ratio(samples: dict[str, list[list[int]]]) -> Ratio:
    per_round = [
        statistics.median(b) / statistics.median(a) for a, b in zip(samples["open"], samples["cert"], strict=True)
    ]
    flat = {name: [value for batch in batches for value in batch] for name, batches in samples.items()}
    return Ratio(per_round, statistics.median(flat["open"]) / 1000, statistics.median(flat["cert"]) / 1000)


def _order(round_index: int) -> tuple[str, str]:
    return ("open", "cert") if round_index % 2 == 0 else ("cert", "open")


def measure_sync(setup: Setup, *, rounds: int, per_round: int, warmup: int) -> Ratio:
    from django.test import Client

    client = Client()
    headers = {"open": setup.headers(OPEN_PATH), "cert": setup.headers(CERTIFICATE_PATH)}
    paths = {"open": OPEN_PATH, "cert": CERTIFICATE_PATH}

    def call(name: str) -> None:
        response = client.get(paths[name], headers={**headers[name], "X-SSL-Client-Cert": fresh(setup.escaped)})
        if response.status_code != 200:
            raise RuntimeError(f"{paths[name]} answered {response.status_code}: {response.content[:300]!r}")

    with setup.settings():
        for _ in range(warmup):
            call("open")
            call("cert")
        samples: dict[str, list[list[int]]] = {"open": [], "cert": []}
        clock = time.perf_counter_ns
        for index in range(rounds):
            gc.collect()
            batches: dict[str, list[int]] = {"open": [], "cert": []}
            for _ in range(per_round):
                for name in _order(index):
                    start = clock()
                    call(name)
                    batches[name].append(clock() - start)
            for name, batch in batches.items():
                samples[name].append(batch)
    return _ratio(samples)


def measure_asgi(setup: Setup, *, rounds: int, per_round: int, warmup: int) -> Ratio:
    from django.test import AsyncClient

    client = AsyncClient()
    headers = {"open": setup.headers(OPEN_PATH), "cert": setup.headers(CERTIFICATE_PATH)}
    paths = {"open": OPEN_PATH, "cert": CERTIFICATE_PATH}

    async def call(name: str) -> None:
        response = await client.get(paths[name], headers={**headers[name], "X-SSL-Client-Cert": fresh(setup.escaped)})
        if response.status_code != 200:
            raise RuntimeError(f"{paths[name]} answered {response.status_code}: {response.content[:300]!r}")

    async def run() -> Ratio:
        for _ in range(warmup):
            await call("open")
            await call("cert")
        samples: dict[str, list[list[int]]] = {"open": [], "cert": []}
        clock = time.perf_counter_ns
        for index in range(rounds):
            gc.collect()
            batches: dict[str, list[int]] = {"open": [], "cert": []}
            for _ in range(per_round):
                for name in _order(index):
                    start = clock()
                    await call(name)
                    batches[name].append(clock() - start)
            for name, batch in batches.items():
                samples[name].append(batch)
        return _ratio(samples)

    with setup.settings():
        return asyncio.run(run())


MEASUREMENTS: dict[str, Callable[..., Ratio]] = {"sync": measure_sync, "asgi": measure_asgi}


def rows(*, rounds: int, per_round: int, warmup: int, section: str = "1 in-process", root: Any = None) -> list[Any]:
    """The harness's rows for ``python -m bench`` (section 1; ``root``: its trusted root, kept trusted)."""
    from .report import Row, ratio_verdict, us

    setup = Setup(root)
    result = []
    for mode, measure in MEASUREMENTS.items():
        ratio = measure(setup, rounds=rounds, per_round=per_round, warmup=warmup)
        label = "WSGI test client" if mode == "sync" else "ASGI AsyncClient (DRF in a thread on both sides)"
        result.append(
            Row(
                section,
                f"certauth warm vs a DRF view without authentication, {label}",
                f"{us(ratio.measured_us)} vs {us(ratio.base_us)}",
                "",
                f"{ratio.median:.2f}x",
                "≤ 1.05x no-auth",
                ratio_verdict(ratio.median, 1.05),
                f"median of {rounds} interleaved per-round ratios, spread {ratio.spread}; nginx's headers on both",
            )
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm_client", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--modes", default="sync,asgi", help="comma-separated: sync, asgi")
    parser.add_argument("--var-dir", type=Path, default=Path("var/bench-warm"))
    arguments = parser.parse_args(argv)
    from .__main__ import prepare_django

    prepare_django(arguments.var_dir.absolute())
    setup = Setup()
    for mode in arguments.modes.split(","):
        measure = MEASUREMENTS[mode.strip()]
        ratio = measure(setup, rounds=arguments.rounds, per_round=arguments.per_round, warmup=arguments.warmup)
        print(
            f"{mode:5} open {ratio.base_us:7.1f} µs  certauth {ratio.measured_us:7.1f} µs  "
            f"(+{ratio.measured_us - ratio.base_us:5.1f} µs)  ratio {ratio.median:.3f}x  "
            f"spread {ratio.spread} over {len(ratio.rounds)} rounds",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
