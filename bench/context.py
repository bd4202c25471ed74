"""What every benchmark shares: settings, the rows it reports, and its servers."""

from __future__ import annotations

import time
from pathlib import Path

from attrs import define, field, frozen

from bench.client import Client, metric, wait_for
from bench.proc import cpu_times, process_tree
from bench.server import ServerProcess, configmapdemo_argv, pinned
from twisted_demo.testing import free_port

RELOADS = "configmapdemo_config_reloads_total"
RELOAD_FAILURES = "configmapdemo_config_reload_failures_total"


@frozen
class Row:
    """One line of the results table."""

    id: str
    what: str
    target: str
    measured: str
    verdict: str  # "pass", "miss", "FAIL" (a correctness failure) or "info"


@define
class Context:
    """Settings of this run and what it has found so far."""

    quick: bool
    workdir: Path
    load_tool: str
    server_cpus: str | None
    client_cpus: str | None
    rows: list[Row] = field(factory=list)
    failures: list[str] = field(factory=list)
    details: list[str] = field(factory=list)

    def row(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.id}: {row.measured} [{row.verdict}]", flush=True)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"  FAILURE: {message}", flush=True)

    def detail(self, message: str) -> None:
        self.details.append(message)
        print(f"  {message}", flush=True)

    def app(
        self,
        name: str,
        config: Path,
        tick: float | None = None,
        max_bytes: int | None = None,
    ) -> ServerProcess:
        """A C{twistd -n configmapdemo} process (not started) pinned as set."""
        port = free_port()
        argv = configmapdemo_argv(config, port, tick=tick, max_bytes=max_bytes)
        return ServerProcess(
            pinned(argv, self.server_cpus), port, self.workdir / f"{name}.log"
        )


def body_of(message: str) -> bytes:
    """What C{GET /} returns while C{message} is the configured message."""
    return message.encode("utf-8")


def reloads(client: Client) -> tuple[int, int]:
    """Successful and failed reloads so far, from C{/metrics}."""
    status, text = client.get("/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    page = text.decode("utf-8")
    return int(metric(page, RELOADS)), int(metric(page, RELOAD_FAILURES))


def parser_ready(server: ServerProcess, timeout: float = 15.0) -> None:
    """
    Wait until the server's parser process has started and waits for its
    first request, blocked reading its stdin (C{/proc/PID/wchan}, or, where
    the kernel does not name it, its CPU time unchanged for 0.1 s), so that
    timings after it do not include that start.  It starts at nice +10, so
    on a busy CPU it can take a while.
    """
    last: float | None = None

    def waiting() -> bool:
        nonlocal last
        children = process_tree(server.pid)[1:]
        if len(children) != 1:
            return False
        [child] = children
        try:
            wchan = Path(f"/proc/{child}/wchan").read_text()
            used = cpu_times(child).used
        except FileNotFoundError:
            return False
        steady, last = used == last, used
        return "pipe" in wchan or steady

    if not wait_for(waiting, time.monotonic() + timeout, interval=0.1):
        raise RuntimeError(f"the parser process was not ready after {timeout} s")


def settle(client: Client, quiet: float, timeout: float = 15.0) -> tuple[int, int]:
    """
    Wait until the reload counters have not moved for C{quiet} seconds,
    so that reloads still pending from trailing events are counted; return
    them.
    """
    deadline = time.monotonic() + timeout
    last = reloads(client)
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = reloads(client)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        time.sleep(0.01)
    return last


def serves(client: Client, message: str, timeout: float) -> bool:
    """Poll C{GET /} until it returns C{message}; whether it did in time."""
    expected = body_of(message)

    def check() -> bool:
        status, body = client.get("/")
        return status == 200 and body == expected

    return wait_for(check, time.monotonic() + timeout, interval=0.0005)
