"""Summaries of timing samples."""

from __future__ import annotations

import math
from collections.abc import Sequence

from attrs import frozen


def percentile(samples: Sequence[float], pct: float) -> float:
    """
    The nearest-rank C{pct} percentile of C{samples}: the smallest sample
    that at least C{pct} per cent of the samples do not exceed.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@frozen
class Summary:
    """Percentiles of a set of durations, in seconds."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(
            count=len(samples),
            p50=percentile(samples, 50),
            p99=percentile(samples, 99),
            max=max(samples),
        )

    def describe_ms(self) -> str:
        """C{p50/p99/max} in milliseconds, as the report shows them."""
        return (
            f"p50 {ms(self.p50)} / p99 {ms(self.p99)} / max {ms(self.max)} ms"
            f" (n={self.count})"
        )


def ms(seconds: float) -> str:
    """Format a duration in seconds as milliseconds with sensible precision."""
    value = seconds * 1000
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
