"""
B8: what the service costs beside the floor of any twistd web service,
Twisted's own static server (C{twistd -n web --path DIR}) in the same
environment, and beside earlier versions of itself, all measured in the
same run: start to the first 200, idle memory of the server and of the
whole process tree, and the reload time of a kubelet update.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from attrs import frozen

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter, WriterProcess
from bench.context import Context, Row, parser_ready, serves
from bench.proc import cpu_times, private_bytes, process_tree, rss_bytes
from bench.reload import time_updates
from bench.server import (
    REPO_ROOT,
    SOURCES,
    ServerProcess,
    answers,
    pinned,
    write_bytecode,
)
from bench.stats import Summary, ms
from twisted_demo.testing import configmapdemo_argv, free_port, twistd_executable

#: What Twisted's static server answers at C{/}: the index file.
_INDEX = b"floor\n"

_MIB = 1024 * 1024

#: The targets, against C{twistd -n web} in the same run.
START_MARGIN = 0.100
SERVER_MARGIN = 3 * _MIB
TREE_MARGIN = 11 * _MIB
#: The parser process's own memory, idle: the pages it adds to the tree.
PARSER_OWN = 8 * _MIB

#: Earlier versions run beside this one, from their commits in this
#: checkout's history: main before the footprint work, and the version
#: whose reload p50 is the target.
BEFORE = "8dcb6b3"
RELOAD_TARGET = "720cd79"
VERSIONS = (BEFORE, RELOAD_TARGET)

#: This checkout's service, as the rows name it.
NOW = "now"


def twistd_web_argv(port: int, path: Path) -> list[str]:
    """The command line of C{twistd -n web} serving C{path} on 127.0.0.1."""
    return [
        twistd_executable(),
        "-n",
        "--pidfile=",
        "web",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--path",
        str(path),
    ]


def checkout(revision: str, into: Path) -> Path | None:
    """
    The service's code at C{revision}, from this checkout's history, in a
    directory under C{into} with its bytecode written; L{None} when the
    history does not have it (a shallow clone, an unpacked archive).
    """
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", revision, *SOURCES],
        capture_output=True,
    )
    if archive.returncode != 0:
        return None
    tree = into / revision
    tree.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    if not write_bytecode(tree):
        raise RuntimeError(f"{revision}'s modules do not compile")
    return tree


@frozen
class Start:
    """One start of a server: seconds to the first 200, and CPU by then."""

    seconds: float
    cpu: float


@frozen
class Idle:
    """A server's memory once up and idle."""

    server: int
    #: The parser process's RSS and the pages only it maps; 0 for none.
    parser: int
    parser_own: int

    @property
    def tree(self) -> int:
        # The parser process's pages shared with the server (the
        # interpreter's, the libraries') are resident once, so the tree
        # adds its own, not its RSS.
        return self.server + self.parser_own


@frozen
class Subject:
    """A server B8 measures: the floor, this version or an earlier one."""

    name: str
    argv: Callable[[int], list[str]]
    body: bytes
    tree: Path = REPO_ROOT
    #: The directory of its ConfigMap (none for the floor).
    config: Path | None = None


def _mib(n: float) -> str:
    return f"{n / _MIB:.1f}"


def _signed(n: float) -> str:
    return f"{n / _MIB:+.1f}"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def bare_interpreter() -> tuple[int, int]:
    """
    The RSS and own memory of an interpreter that imports nothing (C{python
    -S}, as the parser process runs): the least a parser process can hold.
    """
    bare = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys; sys.stdout.write('up\\n');"
            " sys.stdout.flush(); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert bare.stdout is not None and bare.stdout.readline() == b"up\n"
        return rss_bytes(bare.pid), private_bytes(bare.pid)
    finally:
        bare.communicate(b"")


def run(ctx: Context) -> None:
    """B8."""
    runs = 2 if ctx.quick else 9
    updates = 10 if ctx.quick else 100
    static = ctx.workdir / "b8-static"
    static.mkdir()
    (static / "index.html").write_bytes(_INDEX)

    def service(name: str, tree: Path) -> Subject:
        base = ctx.workdir / f"b8-{name}"
        TimedAtomicWriter(base).publish("start-up")
        config = base / CONFIG_KEY
        return Subject(
            name, lambda port: configmapdemo_argv(config, port), b"start-up", tree, base
        )

    floor = Subject("twistd web", lambda port: twistd_web_argv(port, static), _INDEX)
    services = [service(NOW, REPO_ROOT)]
    missing = []
    for revision in VERSIONS:
        tree = checkout(revision, ctx.workdir / "b8-versions")
        if tree is None:
            missing.append(revision)
        else:
            services.append(service(revision, tree))
    subjects = [floor, *services]

    def server(subject: Subject, label: str) -> ServerProcess:
        """A server, not started, ready once C{GET /} answers its body."""
        port = free_port()
        slug = subject.name.replace(" ", "-")
        return ServerProcess(
            pinned(subject.argv(port), ctx.server_cpus),
            port,
            ctx.workdir / f"b8-{slug}-{label}.log",
            ready=answers("/", subject.body),
            checkout=subject.tree,
        )

    # One unmeasured start of each first, so that twistd's plugin cache
    # exists and all read their files from the page cache.
    for subject in subjects:
        with server(subject, "warm"):
            pass
    starts: dict[str, list[Start]] = {s.name: [] for s in subjects}
    for i in range(runs):
        # Rotate the order, so that none always follows another's exit.
        for subject in subjects[i % len(subjects) :] + subjects[: i % len(subjects)]:
            started = server(subject, f"start-{i}")
            try:
                seconds = started.start()
                starts[subject.name].append(Start(seconds, cpu_times(started.pid).used))
            finally:
                started.stop()

    # Idle memory, with all running at once: the floor after its first
    # 200s, each service once its parser process has parsed a first update
    # (which shows it is up).  Then the reload times of more updates, one
    # service after another for each update.
    idle: dict[str, Idle] = {}
    latencies: dict[str, list[float]] = {s.name: [] for s in services}
    running = [server(subject, "idle") for subject in subjects]
    writers: list[WriterProcess] = []
    clients: list[Client] = []
    try:
        for process in running:
            process.start()
        for process in running[1:]:
            parser_ready(process)
        clients = [Client(process.port) for process in running]
        status, body = clients[0].get("/")
        if (status, body) != (200, _INDEX):
            ctx.fail(f"B8: twistd web answered {status} {body[:50]!r}")
        writers = [WriterProcess("atomic", s.config) for s in services if s.config]
        messages = [f"footprint update {n:04d}" for n in range(updates)]
        timeouts = 0

        def update(message: str) -> None:
            nonlocal timeouts
            serving = zip(services, clients[1:], writers, strict=True)
            for subject, client, writer in serving:
                taken, missed = time_updates(client, writer, [message], timeout=5.0)
                latencies[subject.name] += taken
                timeouts += missed

        update(messages[0])
        idle[floor.name] = Idle(rss_bytes(running[0].pid), 0, 0)
        for subject, process in zip(services, running[1:], strict=True):
            pids = process_tree(process.pid)
            if len(pids) != 2:
                ctx.fail(f"B8: {subject.name} runs {len(pids)} processes, not 2")
            idle[subject.name] = Idle(
                rss_bytes(pids[0]),
                sum(map(rss_bytes, pids[1:])),
                sum(map(private_bytes, pids[1:])),
            )
        for message in messages[1:]:
            update(message)
        if timeouts:
            ctx.fail(f"B8: {timeouts} updates never served in time")
        for subject, client in zip(services, clients[1:], strict=True):
            if not serves(client, messages[-1], timeout=5):
                ctx.fail(f"B8: {subject.name} does not serve the last update")
    finally:
        for writer in writers:
            writer.close()
        for client in clients:
            client.close()
        for process in running:
            process.stop()
    bare_rss, bare_own = bare_interpreter()

    start = {n: Summary.of([s.seconds for s in each]) for n, each in starts.items()}
    cpu = {name: _median([s.cpu for s in each]) for name, each in starts.items()}
    reload = {
        name: Summary.of(each or [float("inf")]) for name, each in latencies.items()
    }
    web, now = idle[floor.name], idle[NOW]
    start_gap = start[NOW].p50 - start[floor.name].p50
    server_gap = now.server - web.server
    tree_gap = now.tree - web.server

    for subject in subjects:
        name = subject.name
        line = (
            f"B8, {name}: start to first 200 {start[name].describe_ms()} (CPU used"
            f" by then, median, {ms(cpu[name])} ms); idle RSS {_mib(idle[name].server)}"
            " MiB"
        )
        if name in reload:
            line += (
                f", parser process {_mib(idle[name].parser)} MiB (its own"
                f" {_mib(idle[name].parser_own)}); reload of a kubelet update"
                f" {reload[name].describe_ms()}"
            )
        ctx.detail(line)
    ctx.detail(
        f"B8: an interpreter that imports nothing (`python -S`) holds"
        f" {_mib(bare_rss)} MiB RSS, {_mib(bare_own)} MiB of it its own"
    )
    if missing:
        ctx.detail(f"B8: not in this checkout's history: {', '.join(missing)}")

    met = (
        start_gap <= START_MARGIN
        and server_gap <= SERVER_MARGIN
        and tree_gap <= TREE_MARGIN
        and now.parser_own <= PARSER_OWN
        and RELOAD_TARGET in reload
        and reload[NOW].p50 <= reload[RELOAD_TARGET].p50
    )

    def version(name: str) -> str:
        if name not in reload:
            return f"{name}: not in this checkout's history"
        return (
            f"{name}: start {ms(start[name].p50)} ms, server"
            f" {_mib(idle[name].server)} MiB, parser process RSS"
            f" {_mib(idle[name].parser)} (own {_mib(idle[name].parser_own)}),"
            f" reload p50 {ms(reload[name].p50)} ms"
        )

    ctx.row(
        Row(
            "B8",
            f"footprint beside `twistd -n web --path DIR` and beside {BEFORE}"
            f" and {RELOAD_TARGET}, in the same run: start to first 200"
            f" (median of {runs}); idle memory of the server, of the parser"
            " process, and of the tree (the server's RSS and the parser"
            f" process's own memory); reload p50 of {updates} kubelet updates",
            "start <= twistd web + 100 ms; server RSS <= twistd web + 3 MiB;"
            " tree <= twistd web + 11 MiB; parser process's own memory <= 8 MiB;"
            f" reload p50 <= {RELOAD_TARGET}'s",
            f"start {ms(start[NOW].p50)} vs {ms(start[floor.name].p50)} ms"
            f" ({start_gap * 1000:+.0f} ms; CPU used by then {ms(cpu[NOW])} vs"
            f" {ms(cpu[floor.name])} ms); server {_mib(now.server)} vs"
            f" {_mib(web.server)} MiB ({_signed(server_gap)}); tree"
            f" {_mib(now.tree)} MiB ({_signed(tree_gap)}); parser process's own"
            f" {_mib(now.parser_own)} MiB (RSS {_mib(now.parser)}; `python -S`"
            f" alone {_mib(bare_rss)}); reload p50 {ms(reload[NOW].p50)} ms."
            f" Before, {version(BEFORE)}; {version(RELOAD_TARGET)}",
            "pass" if met else "miss",
        )
    )
