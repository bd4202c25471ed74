"""B5: a 1 MiB config, the ConfigMap size limit: reload time and request latency."""

from __future__ import annotations

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter, WriterProcess
from bench.context import (
    Context,
    Row,
    body_of,
    parser_ready,
    reloads,
    serves,
    settle,
)
from bench.load import run_load
from bench.reload import time_updates
from bench.stats import Summary, ms
from bench.throughput import CONNECTIONS, Storm, check_load, measure

#: Just under 1 MiB, so that the default C{--max-bytes} accepts it.
SIZE = 1024 * 1024 - 1024


def run(ctx: Context) -> None:
    """B5."""
    updates = 5 if ctx.quick else 20
    duration = 3.0 if ctx.quick else 10.0
    base = ctx.workdir / "b5"
    writer = TimedAtomicWriter(base)
    writer.publish("big initial", SIZE)
    size = (base / CONFIG_KEY).stat().st_size
    app = ctx.app("b5", base / CONFIG_KEY)
    with app:
        client = Client(app.port)
        if not serves(client, "big initial", timeout=10):
            ctx.fail("B5: GET / does not serve the 1 MiB config's message")
        parser_ready(app)
        before, failed_before = reloads(client)
        messages = [f"big update {i:04d}" for i in range(updates)]
        publisher = WriterProcess("atomic", base, SIZE)
        latencies, timeouts = time_updates(client, publisher, messages, timeout=10)
        publisher.close()
        if timeouts:
            ctx.fail(f"B5: {timeouts} updates of the 1 MiB config never served")
        reload_time = Summary.of(latencies or [float("inf")])

        run_load(ctx.load_tool, app.port, 1.0, CONNECTIONS, ctx.client_cpus)
        calm = measure(ctx, app, duration)
        quiet = calm.load
        check_load(ctx, "B5 without reloads", quiet, {body_of(messages[-1])})

        storm = Storm(writer, 0.5, SIZE)
        stormy = measure(ctx, app, duration, storm)
        busy = stormy.load
        allowed = {body_of(m) for m in [messages[-1], *storm.messages]}
        check_load(ctx, "B5 during reloads", busy, allowed)
        if not serves(client, storm.messages[-1], timeout=10):
            ctx.fail("B5: the last message written is not served")
        after, failed_after = settle(client, quiet=0.5)
        client.close()

    ratio = busy.p99 / quiet.p99 if quiet.p99 else float("inf")
    ctx.detail(
        f"B5 config size {size:,} bytes; reload time {reload_time.describe_ms()}"
    )
    ctx.detail(f"B5 without reloads: {calm.describe()}")
    ctx.detail(
        f"B5 during reloads ({len(storm.messages)} updates, every 500 ms):"
        f" {stormy.describe()}; reloads {after - before},"
        f" failed {failed_after - failed_before}"
    )
    ctx.row(
        Row(
            "B5",
            "1 MiB config: reload time; `GET /` p99 while it reloads every 500 ms",
            "p99 during reloads <= 2x p99 without",
            f"reload p50 {ms(reload_time.p50)} / p99 {ms(reload_time.p99)} ms;"
            f" p99 {ms(busy.p99)} ms during vs {ms(quiet.p99)} ms without"
            f" = {ratio:.2f}x",
            "pass" if ratio <= 2.0 else "miss",
        )
    )
