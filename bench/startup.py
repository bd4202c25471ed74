"""B8: start-up time to the first 200 from C{/readyz}, and idle memory."""

from __future__ import annotations

from bench.configs import CONFIG_KEY, TimedAtomicWriter
from bench.context import Context, Row
from bench.proc import cpu_times, rss_bytes
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
    rss: list[int] = []
    for i in range(runs):
        server = ctx.app(f"b8-{i}", base / CONFIG_KEY)
        times.append(server.start())
        try:
            cpu.append(cpu_times(server.pid).used)
            rss.append(rss_bytes(server.pid))
        finally:
            server.stop()
    summary = Summary.of(times)
    idle = sorted(rss)[len(rss) // 2] / (1024 * 1024)
    cpu_median = sorted(cpu)[len(cpu) // 2]
    ctx.detail(
        f"B8: start-up {summary.describe_ms()}; CPU used by then (median)"
        f" {ms(cpu_median)} ms, the rest is waiting for a CPU or for I/O"
    )
    ctx.row(
        Row(
            "B8",
            f"start-up: process start to first 200 from `/readyz` ({runs} runs);"
            " idle RSS",
            "start-up <= 1 s; report RSS",
            f"median {ms(summary.p50)} ms, max {ms(summary.max)} ms (CPU used:"
            f" {ms(cpu_median)} ms); idle RSS {idle:.1f} MiB",
            "pass" if summary.p50 <= 1.0 else "miss",
        )
    )
