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
