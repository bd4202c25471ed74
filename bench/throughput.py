"""
B3 C{GET /} throughput beside a bare twisted.web server, and B4 the same
load during a reload storm.
"""

from __future__ import annotations

import statistics
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

#: Rounds of B3 and B4, each one run of the bare server, the app and the
#: app under a storm: single runs on this shared machine differ by up to
#: 35% from the next, so ratios are medians over rounds.
ROUNDS = 6
ROUNDS_QUICK = 1

#: Runs that load the app and the bare server at the same time (B3's
#: ratio): these agree within about 2%.
CONCURRENT_RUNS = 5
CONCURRENT_RUNS_QUICK = 1
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


def load_together(
    ctx: Context,
    first: ServerProcess,
    second: ServerProcess,
    duration: float,
    storm: Storm | None = None,
) -> tuple[LoadResult, LoadResult]:
    """
    Load C{first} and C{second} at the same time, each with half the
    connections, with C{storm} writing updates meanwhile if given.  Both
    share CPU 0, so whatever else slows the machine slows both alike, and
    the ratio of their throughputs is the inverse ratio of their CPU per
    request.
    """
    runs = [
        start_load(
            ctx.load_tool, server.port, duration, CONNECTIONS // 2, ctx.client_cpus
        )
        for server in (first, second)
    ]
    if storm is not None:
        storm.start()
    try:
        first_load, second_load = (run.result() for run in runs)
    finally:
        if storm is not None:
            storm.stop()
    return first_load, second_load


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
    # A second app that no storm touches, loaded at the same time as the
    # first during its storms: B4's ratio.
    calm_base = ctx.workdir / "b4-calm"
    TimedAtomicWriter(calm_base).publish(MESSAGE)
    calm = ctx.app("b4-calm", calm_base / CONFIG_KEY)
    rounds: list[dict[str, Measured]] = []
    storms: list[Storm] = []
    with bare, app, calm:
        client = Client(app.port)
        if not serves(client, MESSAGE, timeout=5):
            ctx.fail("B3: GET / does not serve the configured message")
        for server in (bare, app, calm):
            run_load(ctx.load_tool, server.port, 1.0, CONNECTIONS, ctx.client_cpus)
        before, failed_before = reloads(client)
        # Rounds of one run of each kind, in an order that rotates from
        # round to round, so that drift in what else the machine runs falls
        # on the bare server, the app and the app under a storm alike; each
        # ratio is taken within a round, between runs seconds apart.
        kinds = ["bare", "app", "storm"]
        # Every body ever published may be served.
        allowed = {body}

        def stormed(storm: Storm) -> None:
            storms.append(storm)
            allowed.update(body_of(message) for message in storm.messages)
            if not storm.messages or not serves(client, storm.messages[-1], timeout=5):
                ctx.fail("B4: the last message written is not served")

        for number in range(ROUNDS_QUICK if ctx.quick else ROUNDS):
            measured: dict[str, Measured] = {}
            for kind in kinds[number % 3 :] + kinds[: number % 3]:
                if kind == "storm":
                    storm = Storm(writer, 0.010)
                    m = measure(ctx, app, storm_duration, storm)
                    stormed(storm)
                else:
                    m = measure(ctx, bare if kind == "bare" else app, duration)
                check_load(ctx, f"B3/B4 {kind} run", m.load, allowed)
                measured[kind] = m
                ctx.detail(f"B3/B4 round {number + 1} {kind}: {m.describe()}")
            rounds.append(measured)
        together: list[tuple[LoadResult, LoadResult]] = []
        for _ in range(CONCURRENT_RUNS_QUICK if ctx.quick else CONCURRENT_RUNS):
            app_load, bare_load = load_together(ctx, app, bare, duration)
            check_load(ctx, "B3 concurrent app run", app_load, allowed)
            check_load(ctx, "B3 concurrent bare run", bare_load, {body})
            together.append((app_load, bare_load))
        stormed_together: list[tuple[LoadResult, LoadResult]] = []
        for _ in range(CONCURRENT_RUNS_QUICK if ctx.quick else CONCURRENT_RUNS):
            storm = Storm(writer, 0.010)
            stormed_load, calm_load = load_together(
                ctx, app, calm, storm_duration, storm
            )
            stormed(storm)
            check_load(ctx, "B4 concurrent storm run", stormed_load, allowed)
            check_load(ctx, "B4 concurrent calm run", calm_load, {body})
            stormed_together.append((stormed_load, calm_load))
        after, failed_after = settle(client, quiet=0.5)
        client.close()

    def median(of: Callable[[dict[str, Measured]], float]) -> float:
        return statistics.median(of(r) for r in rounds)

    app_rps = median(lambda r: r["app"].load.rps)
    bare_rps = median(lambda r: r["bare"].load.rps)
    storm_rps = median(lambda r: r["storm"].load.rps)
    ratio = statistics.median(a.rps / b.rps for a, b in together)
    rounds_ratio = median(lambda r: r["app"].load.rps / r["bare"].load.rps)
    storm_ratio = statistics.median(s.rps / c.rps for s, c in stormed_together)
    storm_rounds_ratio = median(lambda r: r["storm"].load.rps / r["app"].load.rps)
    app_cpu = median(lambda r: r["app"].cpu_per_request)
    bare_cpu = median(lambda r: r["bare"].cpu_per_request)
    storm_cpu = median(lambda r: r["storm"].cpu_per_request)

    def each(of: Callable[[dict[str, Measured]], float]) -> str:
        return ", ".join(f"{of(r):.2f}" for r in rounds)

    ctx.detail(
        f"B3 loaded together ({CONNECTIONS // 2} connections each, on the one"
        " CPU): app/bare "
        + ", ".join(f"{a.rps / b.rps:.3f}" for a, b in together)
        + f"; median {ratio:.2f}"
    )
    ctx.detail(
        f"B3 ratio in separate runs, round by round (median {rounds_ratio:.2f}): "
        + each(lambda r: r["app"].load.rps / r["bare"].load.rps)
    )
    ctx.detail(
        f"B4 stormed and calm app loaded together ({CONNECTIONS // 2}"
        " connections each, on the one CPU): "
        + ", ".join(f"{s.rps / c.rps:.3f}" for s, c in stormed_together)
        + f"; median {storm_ratio:.2f}"
    )
    ctx.detail(
        f"B4 ratio in separate runs, round by round (median"
        f" {storm_rounds_ratio:.2f}): "
        + each(lambda r: r["storm"].load.rps / r["app"].load.rps)
    )
    ctx.row(
        Row(
            "B3",
            f"`GET /` throughput, {duration:g} s x {CONNECTIONS} connections,"
            f" vs bare twisted.web: {len(rounds)} interleaved rounds, and"
            f" {len(together)} runs loading both at once for the ratio",
            "ratio >= 0.90",
            f"configmapdemo {app_rps:,.0f} req/s p99"
            f" {ms(median(lambda r: r['app'].load.p99))} ms; bare"
            f" {bare_rps:,.0f} req/s p99"
            f" {ms(median(lambda r: r['bare'].load.p99))} ms; ratio {ratio:.2f}"
            f" loaded together ({rounds_ratio:.2f} in separate runs; server CPU"
            f" per request {app_cpu * 1e6:.0f} vs {bare_cpu * 1e6:.0f} us)",
            "pass" if ratio >= 0.90 else "miss",
        )
    )

    updates = sum(len(storm.messages) for storm in storms)
    storm_loads = [r["storm"].load for r in rounds] + [s for s, _ in stormed_together]
    non_200 = sum(load.non_200 for load in storm_loads)
    bad = sum(len(load.unexpected_bodies(allowed)) for load in storm_loads)
    ctx.detail(
        f"B4: {updates} updates in {len(storms)} storms, {after - before}"
        f" reloads, {failed_after - failed_before} failed reloads,"
        f" {len(set().union(*(load.bodies for load in storm_loads)))} distinct"
        f" bodies seen; median {storm_rps:,.0f} req/s vs {app_rps:,.0f}"
        " without the storm"
    )
    ctx.row(
        Row(
            "B4",
            f"reload storm: B3 load + AtomicWriter update every 10 ms,"
            f" {storm_duration:g} s in each of B3's rounds, and"
            f" {len(stormed_together)} runs beside a second, calm app for"
            " the ratio",
            "0 non-200, 0 bad bodies, throughput >= 0.90 of B3",
            f"{non_200} non-200, {bad} bad bodies, {updates} updates;"
            f" {storm_rps:,.0f} req/s; {storm_ratio:.2f} of the calm app loaded"
            f" together ({storm_rounds_ratio:.2f} in separate runs); p99"
            f" {ms(median(lambda r: r['storm'].load.p99))}"
            " ms; server CPU per"
            f" request {storm_cpu * 1e6:.0f} us",
            "FAIL" if non_200 or bad else ("pass" if storm_ratio >= 0.90 else "miss"),
        )
    )
