"""
B3 C{GET /} throughput beside a bare twisted.web server, and B4 the same
load during a reload storm.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from attrs import frozen

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter
from bench.context import Context, Row, body_of, reloads, serves, settle
from bench.load import LoadResult, run_load, start_load
from bench.proc import CpuTimes, cpu_times
from bench.server import ServerProcess, bare_argv, pinned
from bench.stats import ms
from twisted_demo.testing import free_port

CONNECTIONS = 64
MESSAGE = "Hello World"


def check_load(
    ctx: Context, name: str, result: LoadResult, allowed: set[bytes]
) -> None:
    """Record a failure for any error, non-200 or unexpected body."""
    if result.socket_errors:
        ctx.fail(f"{name}: {result.socket_errors} socket errors")
    if result.non_200:
        ctx.fail(f"{name}: {result.non_200} non-200 responses")
    if result.unrecorded:
        ctx.fail(f"{name}: {result.unrecorded} bodies not checked")
    bad = result.unexpected_bodies(allowed)
    if bad:
        sample = ", ".join(f"{b[:60]!r} x{n}" for b, n in list(bad.items())[:5])
        ctx.fail(f"{name}: {sum(bad.values())} unexpected bodies: {sample}")


def describe(result: LoadResult) -> str:
    return (
        f"{result.rps:,.0f} req/s, p50 {ms(result.p50)} ms,"
        f" p99 {ms(result.p99)} ms ({result.requests:,} requests)"
    )


@frozen
class Measured:
    """A load run and the server's CPU over it."""

    load: LoadResult
    cpu: CpuTimes

    @property
    def cpu_per_request(self) -> float:
        return self.cpu.used / self.load.requests if self.load.requests else 0.0

    def describe(self) -> str:
        return (
            f"{describe(self.load)}; server CPU {self.cpu_per_request * 1e6:.0f} us"
            f" per request, waited for a CPU"
            f" {100 * self.cpu.waited / self.load.duration:.0f}% of the run"
        )


def measure(
    ctx: Context, server: ServerProcess, duration: float, storm: Storm | None = None
) -> Measured:
    """
    Load C{server} for C{duration} seconds, with C{storm} writing updates
    meanwhile if given, and read the server's CPU around the run.
    """
    before = cpu_times(server.pid)
    run = start_load(ctx.load_tool, server.port, duration, CONNECTIONS, ctx.client_cpus)
    if storm is not None:
        storm.start()
    try:
        result = run.result()
    finally:
        if storm is not None:
            storm.stop()
    return Measured(result, cpu_times(server.pid) - before)


class Storm:
    """Publish a new message every C{interval} seconds on a thread."""

    def __init__(self, writer: TimedAtomicWriter, interval: float, size: int = 0):
        self._writer = writer
        self._interval = interval
        self._size = size
        self._stop = threading.Event()
        self.messages: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            message = f"storm {len(self.messages):06d}"
            self._writer.publish(message, self._size)
            self.messages.append(message)
            next_at += self._interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                # Pacing, not synchronisation: the next update is due then.
                self._stop.wait(delay)
            else:
                next_at = time.perf_counter()


def run(ctx: Context) -> None:
    """B3 and B4."""
    duration = 2.0 if ctx.quick else 10.0
    storm_duration = 3.0 if ctx.quick else 10.0
    base = ctx.workdir / "b3"
    writer = TimedAtomicWriter(base)
    writer.publish(MESSAGE)
    body = body_of(MESSAGE)
    body_file = ctx.workdir / "bare-body"
    body_file.write_bytes(body)

    bare_port = free_port()
    bare = ServerProcess(
        pinned(bare_argv(bare_port, body_file), ctx.server_cpus),
        bare_port,
        ctx.workdir / "bare.log",
    )
    app = ctx.app("b3", base / CONFIG_KEY)
    results: dict[str, list[Measured]] = {"bare": [], "app": [], "storm": []}
    storms: list[Storm] = []
    with bare, app:
        client = Client(app.port)
        if not serves(client, MESSAGE, timeout=5):
            ctx.fail("B3: GET / does not serve the configured message")
        for server in (bare, app):
            run_load(ctx.load_tool, server.port, 1.0, CONNECTIONS, ctx.client_cpus)
        before, failed_before = reloads(client)
        # Interleaved, so that drift in what else the machine runs falls on
        # the bare server, the app and the app under a reload storm alike.
        order = ["bare", "app", "storm"]
        if not ctx.quick:
            order += ["storm", "app", "bare", "bare", "app", "storm"]
        # Every body ever published may be served, in the order written.
        allowed = {body}
        for kind in order:
            if kind == "storm":
                storm = Storm(writer, 0.010)
                m = measure(ctx, app, storm_duration, storm)
                storms.append(storm)
                allowed |= {body_of(message) for message in storm.messages}
                if not storm.messages or not serves(
                    client, storm.messages[-1], timeout=5
                ):
                    ctx.fail("B4: the last message written is not served")
            else:
                m = measure(ctx, bare if kind == "bare" else app, duration)
            check_load(ctx, f"B3/B4 {kind} run", m.load, allowed)
            results[kind].append(m)
            ctx.detail(f"B3/B4 {kind} run: {m.describe()}")
        after, failed_after = settle(client, quiet=0.5)
        client.close()

    def mean(kind: str, of: Callable[[Measured], float]) -> float:
        return sum(of(m) for m in results[kind]) / len(results[kind])

    app_rps = mean("app", lambda m: m.load.rps)
    bare_rps = mean("bare", lambda m: m.load.rps)
    storm_rps = mean("storm", lambda m: m.load.rps)
    app_cpu = mean("app", lambda m: m.cpu_per_request)
    bare_cpu = mean("bare", lambda m: m.cpu_per_request)
    storm_cpu = mean("storm", lambda m: m.cpu_per_request)
    ratio = app_rps / bare_rps
    ctx.row(
        Row(
            "B3",
            f"`GET /` throughput, {duration:g} s x {CONNECTIONS} connections,"
            f" vs bare twisted.web ({len(results['app'])} runs each, interleaved)",
            "ratio >= 0.90",
            f"configmapdemo {app_rps:,.0f} req/s p99"
            f" {ms(mean('app', lambda m: m.load.p99))} ms; bare"
            f" {bare_rps:,.0f} req/s p99"
            f" {ms(mean('bare', lambda m: m.load.p99))} ms; ratio {ratio:.2f}"
            f" (server CPU per request: {app_cpu * 1e6:.0f} vs"
            f" {bare_cpu * 1e6:.0f} us, ratio {bare_cpu / app_cpu:.2f})",
            "pass" if ratio >= 0.90 else "miss",
        )
    )

    updates = sum(len(storm.messages) for storm in storms)
    storm_loads = [m.load for m in results["storm"]]
    non_200 = sum(load.non_200 for load in storm_loads)
    bad = sum(len(load.unexpected_bodies(allowed)) for load in storm_loads)
    storm_ratio = storm_rps / app_rps
    ctx.detail(
        f"B4: {updates} updates in {len(storms)} storms, {after - before}"
        f" reloads, {failed_after - failed_before} failed reloads,"
        f" {len(set().union(*(load.bodies for load in storm_loads)))} distinct"
        f" bodies seen; {storm_rps:,.0f} req/s vs {app_rps:,.0f} without the"
        f" storm, run by run: "
        + ", ".join(f"{m.load.rps:,.0f}" for m in results["storm"])
        + " vs "
        + ", ".join(f"{m.load.rps:,.0f}" for m in results["app"])
    )
    ctx.row(
        Row(
            "B4",
            f"reload storm: B3 load + AtomicWriter update every 10 ms,"
            f" {len(storms)} x {storm_duration:g} s, interleaved with B3's runs",
            "0 non-200, 0 bad bodies, throughput >= 0.90 of B3",
            f"{non_200} non-200, {bad} bad bodies, {updates} updates;"
            f" {storm_rps:,.0f} req/s = {storm_ratio:.2f} of B3; p99"
            f" {ms(mean('storm', lambda m: m.load.p99))} ms; server CPU per"
            f" request {storm_cpu * 1e6:.0f} us",
            "FAIL" if non_200 or bad else ("pass" if storm_ratio >= 0.90 else "miss"),
        )
    )
