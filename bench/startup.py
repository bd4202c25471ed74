"""B8: start-up time to the first 200 from C{/readyz}, and idle memory."""

from __future__ import annotations

import time

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter
from bench.context import Context, Row, parser_ready
from bench.proc import cpu_times, holdings
from bench.stats import Summary, ms


def run(ctx: Context) -> None:
    """B8."""
    runs = 3 if ctx.quick else 10
    base = ctx.workdir / "b8"
    TimedAtomicWriter(base).publish("start-up")
    # One unmeasured start first, so that twistd's plugin cache exists.
    with ctx.app("b8-warm", base / CONFIG_KEY):
        pass
    times: list[float] = []
    cpu: list[float] = []
    parser_ready_after: list[float] = []
    rss: list[tuple[int, ...]] = []
    for i in range(runs):
        server = ctx.app(f"b8-{i}", base / CONFIG_KEY)
        times.append(server.start())
        ready_at = time.perf_counter()
        try:
            cpu.append(cpu_times(server.pid).used)
            client = Client(server.port)
            parser_ready(client)
            client.close()
            parser_ready_after.append(time.perf_counter() - ready_at)
            rss.append(holdings(server.pid).rss_each)
        finally:
            server.stop()
    summary = Summary.of(times)
    rss.sort(key=sum)
    idle_each = [r / (1024 * 1024) for r in rss[len(rss) // 2]]
    idle = sum(idle_each)
    cpu_median = sorted(cpu)[len(cpu) // 2]
    ctx.detail(
        f"B8: start-up {summary.describe_ms()}; CPU used by then (median)"
        f" {ms(cpu_median)} ms, the rest is waiting for a CPU or for I/O;"
        f" the parser process ready (a first `POST /-/reload` answered)"
        f" {Summary.of(parser_ready_after).describe_ms()} after that;"
        f" idle RSS {idle:.1f} MiB"
        f" ({' + '.join(f'{r:.1f}' for r in idle_each)}: server + parser)"
    )
    ctx.row(
        Row(
            "B8",
            f"start-up: process start to first 200 from `/readyz` ({runs} runs);"
            " idle RSS (server and parser process)",
            "start-up <= 1 s; report RSS",
            f"median {ms(summary.p50)} ms, max {ms(summary.max)} ms (CPU used:"
            f" {ms(cpu_median)} ms); idle RSS {idle:.1f} MiB",
            "pass" if summary.p50 <= 1.0 else "miss",
        )
    )
