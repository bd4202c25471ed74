"""
B1 reload latency and B2 reloads per update: how soon after an update
C{GET /} serves the new message, and how many reloads each update costs.
"""

from __future__ import annotations

import time

from attrs import frozen

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter, WriterProcess, config_yaml
from bench.context import (
    Context,
    Row,
    body_of,
    parser_ready,
    reloads,
    serves,
    settle,
)
from bench.stats import Summary


@frozen
class ReloadRun:
    """The latencies of one series of updates, and the reloads they caused."""

    label: str
    tick: float
    latencies: list[float]
    round_trips: list[float]
    updates: int
    timeouts: int
    reloads: int
    failures: int

    @property
    def summary(self) -> Summary:
        return Summary.of(self.latencies or [float("inf")])


def time_updates(
    client: Client,
    writer: WriterProcess,
    messages: list[str],
    timeout: float,
    budget: float = float("inf"),
) -> tuple[list[float], int]:
    """
    Have C{writer} publish each message while polling C{GET /} back to back
    until it returns the new one; the latency runs from the commit point
    (taken by the writer right after the rename or write) to the arrival of
    the first response carrying the new message.  No update starts once
    C{budget} seconds have passed, so a slow service cannot stall the run.
    """
    latencies: list[float] = []
    timeouts = 0
    give_up = time.perf_counter() + budget
    for message in messages:
        if time.perf_counter() >= give_up:
            break
        expected = body_of(message)
        deadline = time.perf_counter() + timeout
        writer.start(message)
        seen: float | None = None
        while True:
            status, body = client.get("/")
            now = time.perf_counter()
            if status == 200 and body == expected:
                seen = now
                break
            if now >= deadline:
                timeouts += 1
                break
        committed = writer.committed()
        if seen is not None:
            latencies.append(seen - committed)
    return latencies, timeouts


def reload_series(
    ctx: Context, label: str, writer: str, tick: float, count: int
) -> ReloadRun:
    """
    Start a server at C{tick} on a fresh config and time C{count} updates
    made by C{writer}: C{atomic} (the kubelet's AtomicWriter on a ConfigMap
    directory), C{in-place} or C{rename} (editors on a plain file).
    """
    budget = 8.0 if ctx.quick else 60.0
    base = ctx.workdir / f"b1-{label}"
    base.mkdir()
    initial = f"{label} initial"
    if writer == "atomic":
        TimedAtomicWriter(base).publish(initial)
        config = base / CONFIG_KEY
        target = base
    else:
        config = base / "config.yaml"
        config.write_bytes(config_yaml(initial))
        target = config
    updates = WriterProcess(writer, target)
    server = ctx.app(f"b1-{label}", config, tick=tick)
    with server:
        client = Client(server.port)
        if not serves(client, initial, timeout=5):
            ctx.fail(f"B1 {label}: GET / does not serve the initial message")
        parser_ready(server)
        round_trips = []
        for _ in range(count * 2):
            started = time.perf_counter()
            client.get("/")
            round_trips.append(time.perf_counter() - started)
        before, failed_before = reloads(client)
        messages = [f"{label} update {i:05d}" for i in range(count)]
        latencies, timeouts = time_updates(
            client, updates, messages, timeout=max(2.0, 5 * tick), budget=budget
        )
        updates.close()
        made = len(latencies) + timeouts
        after, failed_after = settle(client, quiet=2 * tick + 0.2)
        if not serves(client, messages[made - 1], timeout=5):
            ctx.fail(f"B1 {label}: last message written is not served")
        client.close()
    return ReloadRun(
        label=label,
        tick=tick,
        latencies=latencies,
        round_trips=round_trips,
        updates=made,
        timeouts=timeouts,
        reloads=after - before,
        failures=failed_after - failed_before,
    )


def run(ctx: Context) -> None:
    """B1 and B2."""
    n = 50 if ctx.quick else 200
    slow_tick = 1.0
    atomic_runs = [
        reload_series(ctx, "atomic-tick0.1", "atomic", 0.1, n),
        reload_series(ctx, f"atomic-tick{slow_tick:g}", "atomic", slow_tick, n),
    ]
    in_place = reload_series(ctx, "in-place-tick0.1", "in-place", 0.1, n // 2)
    by_rename = reload_series(ctx, "rename-tick0.1", "rename", 0.1, n // 2)

    for r in [*atomic_runs, in_place, by_rename]:
        ctx.detail(
            f"B1 {r.label}: {r.summary.describe_ms()}; timeouts {r.timeouts};"
            f" reloads {r.reloads} for {r.updates} updates;"
            f" failed reloads {r.failures}; for scale, a plain `GET /` round"
            f" trip on this server before the updates:"
            f" {Summary.of(r.round_trips).describe_ms()}"
        )
        if r.timeouts:
            ctx.fail(f"B1 {r.label}: {r.timeouts} updates never served in time")

    worst = max(r.summary.p99 for r in atomic_runs)
    ctx.row(
        Row(
            "B1",
            "reload latency, AtomicWriter `..data` rename to first new `GET /`",
            "p99 <= 10 ms at any `--tick`",
            "; ".join(
                f"tick {r.tick:g} s: {r.summary.describe_ms()}" for r in atomic_runs
            ),
            "pass" if worst <= 0.010 else "miss",
        )
    )
    ctx.row(
        Row(
            "B1e",
            "reload latency, in-place editor write on a plain file",
            "p99 <= tick + 20 ms (120 ms)",
            f"tick 0.1 s: {in_place.summary.describe_ms()}",
            "pass" if in_place.summary.p99 <= in_place.tick + 0.020 else "miss",
        )
    )

    per_update = [r.reloads / r.updates for r in atomic_runs]
    exact = all(r.reloads == r.updates for r in atomic_runs)
    if not exact:
        ctx.fail(
            "B2: reloads per AtomicWriter update "
            + ", ".join(f"{r.label} {r.reloads}/{r.updates}" for r in atomic_runs)
        )
    ctx.row(
        Row(
            "B2",
            "reloads per update (`/metrics` after B1)",
            "exactly 1.00",
            ", ".join(
                f"tick {r.tick:g} s: {p:.2f} ({r.reloads}/{r.updates})"
                for r, p in zip(atomic_runs, per_update, strict=True)
            ),
            "pass" if exact else "FAIL",
        )
    )
