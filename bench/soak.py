"""B6: many updates in a row must leave no descriptors, watches or memory behind."""

from __future__ import annotations

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter
from bench.context import Context, Row, reloads, serves, settle
from bench.proc import Holdings, holdings

MiB = 1024 * 1024


def steady_holdings(pid: int) -> Holdings:
    """
    The fewest fds and watches seen over a few reads: a reload in flight
    holds a descriptor for a moment, which is not a leak.
    """
    reads = [holdings(pid) for _ in range(5)]
    return Holdings(
        processes=min(r.processes for r in reads),
        fds=min(r.fds for r in reads),
        inotify_watches=min(r.inotify_watches for r in reads),
        rss_bytes=reads[-1].rss_bytes,
        rss_each=reads[-1].rss_each,
    )


def run(ctx: Context) -> None:
    """B6."""
    count = 1000 if ctx.quick else 10_000
    warmup = 100
    base = ctx.workdir / "b6"
    writer = TimedAtomicWriter(base)
    writer.publish("soak initial")
    app = ctx.app("b6", base / CONFIG_KEY)
    with app:
        client = Client(app.port)
        for i in range(warmup):
            writer.publish(f"soak warm-up {i:03d}")
        if not serves(client, f"soak warm-up {warmup - 1:03d}", timeout=10):
            ctx.fail("B6: warm-up updates not served")
        settle(client, quiet=0.3)
        start = steady_holdings(app.pid)
        before, failed_before = reloads(client)
        last = ""
        for i in range(count):
            last = f"soak {i:05d}"
            writer.publish(last)
        served = serves(client, last, timeout=30)
        if not served:
            ctx.fail("B6: the last message written is not served")
        after, failed_after = settle(client, quiet=0.3)
        end = steady_holdings(app.pid)
        client.close()

    growth = end.rss_bytes - start.rss_bytes
    ok = (
        served
        and end.processes <= start.processes
        and end.fds <= start.fds
        and end.inotify_watches <= start.inotify_watches
        and growth < 5 * MiB
    )
    ctx.detail(
        f"B6: {count} updates, {after - before} reloads,"
        f" {failed_after - failed_before} failed; processes (the server and"
        f" its parser) {start.processes} -> {end.processes};"
        f" fds {start.fds} -> {end.fds},"
        f" inotify watches {start.inotify_watches} -> {end.inotify_watches},"
        f" RSS {start.rss_bytes / MiB:.1f} -> {end.rss_bytes / MiB:.1f} MiB"
        f" ({' + '.join(f'{r / MiB:.1f}' for r in end.rss_each)})"
    )
    ctx.row(
        Row(
            "B6",
            f"soak: {count:,} AtomicWriter updates",
            "no fd/watch growth, RSS growth < 5 MB, last message served",
            f"processes {start.processes} -> {end.processes},"
            f" fds {start.fds} -> {end.fds}, watches {start.inotify_watches} ->"
            f" {end.inotify_watches}, RSS +{growth / MiB:.2f} MiB;"
            f" last message {'served' if served else 'NOT served'}",
            "pass" if ok else ("FAIL" if not served else "miss"),
        )
    )
