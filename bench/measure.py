"""Timing: interleaved rounds (every scenario runs a batch in every round, so background load on a
shared machine hits all rows alike), per-call samples, median and p99."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    samples: int
    median_us: float
    p99_us: float
    mean_us: float

    @classmethod
    def of(cls, samples_ns: list[int]) -> Stats:
        ordered = sorted(samples_ns)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(
            samples=len(ordered),
            median_us=statistics.median(ordered) / 1000,
            p99_us=p99 / 1000,
            mean_us=statistics.fmean(ordered) / 1000,
        )


def interleaved(
    scenarios: Mapping[str, Callable[[], object]], *, rounds: int, per_round: int, warmup: int
) -> dict[str, Stats]:
    """Run every scenario ``warmup`` times, then ``rounds`` x ``per_round`` timed calls each."""
    for call in scenarios.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[int]] = {name: [] for name in scenarios}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, call in scenarios.items():
            gc.collect()
            bucket = samples[name]
            for _ in range(per_round):
                start = clock()
                call()
                bucket.append(clock() - start)
    return {name: Stats.of(values) for name, values in samples.items()}


@dataclass(frozen=True)
class Paired:
    """``alternating``'s result: each side's stats over all samples, and the per-round ratios b/a."""

    a: Stats
    b: Stats
    ratios: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> str:
        return f"{min(self.ratios):.2f} to {max(self.ratios):.2f}"


def alternating(
    a: Callable[[], object], b: Callable[[], object], *, rounds: int, per_round: int, warmup: int
) -> Paired:
    """A and B request by request (A B A B ..., B first in odd rounds), the ratio of their medians per round:
    load that comes and goes hits both sides of each pair, where batches of one scenario then the other can
    each catch a different moment of a shared machine."""
    for _ in range(warmup):
        a()
        b()
    samples_a: list[int] = []
    samples_b: list[int] = []
    ratios = []
    clock = time.perf_counter_ns
    for index in range(rounds):
        gc.collect()
        round_a: list[int] = []
        round_b: list[int] = []
        order = ((a, round_a), (b, round_b)) if index % 2 == 0 else ((b, round_b), (a, round_a))
        for _ in range(per_round):
            for call, bucket in order:
                start = clock()
                call()
                bucket.append(clock() - start)
        ratios.append(statistics.median(round_b) / statistics.median(round_a))
        samples_a += round_a
        samples_b += round_b
    return Paired(Stats.of(samples_a), Stats.of(samples_b), ratios)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
