"""
B8: what the service costs beside the floor of any twistd web service,
Twisted's own static server (C{twistd -n web --path DIR}) in the same
environment, measured in the same run: start to the first 200, idle
memory of the server and of the whole process tree, and the reload time
of a kubelet update.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attrs import frozen

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter, WriterProcess
from bench.context import Context, Row, serves
from bench.proc import cpu_times, holdings, private_bytes, process_tree
from bench.reload import time_updates
from bench.server import ServerProcess, answers, pinned
from bench.stats import Summary, ms
from twisted_demo.testing import configmapdemo_argv, free_port, twistd_executable

#: What Twisted's static server answers at C{/}: the index file.
_INDEX = b"floor\n"

_MIB = 1024 * 1024

#: The targets, against C{twistd -n web} in the same run.
START_MARGIN = 0.100
SERVER_MARGIN = 3 * _MIB
TREE_MARGIN = 11 * _MIB


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


@frozen
class Start:
    """One start of a server: seconds to the first 200, and CPU by then."""

    seconds: float
    cpu: float


def _start(server: ServerProcess) -> Start:
    seconds = server.start()
    return Start(seconds, cpu_times(server.pid).used)


def _mib(n: float) -> str:
    return f"{n / _MIB:.1f}"


def _signed(n: float) -> str:
    return f"{n / _MIB:+.1f}"


def run(ctx: Context) -> None:
    """B8."""
    runs = 2 if ctx.quick else 5
    updates = 10 if ctx.quick else 100
    base = ctx.workdir / "b8"
    static = ctx.workdir / "b8-static"
    static.mkdir()
    (static / "index.html").write_bytes(_INDEX)
    TimedAtomicWriter(base).publish("start-up")
    config = base / CONFIG_KEY

    def on_port(
        name: str, argv: Callable[[int], list[str]], body: bytes
    ) -> ServerProcess:
        """A server, not started, ready once C{GET /} answers C{body}."""
        port = free_port()
        return ServerProcess(
            pinned(argv(port), ctx.server_cpus),
            port,
            ctx.workdir / f"{name}.log",
            ready=answers("/", body),
        )

    def web(name: str) -> ServerProcess:
        return on_port(name, lambda port: twistd_web_argv(port, static), _INDEX)

    def app(name: str) -> ServerProcess:
        return on_port(name, lambda port: configmapdemo_argv(config, port), b"start-up")

    # One unmeasured start of each first, so that twistd's plugin cache
    # exists and both read their files from the page cache.
    for warm in (web("b8-web-warm"), app("b8-app-warm")):
        with warm:
            pass
    web_starts: list[Start] = []
    app_starts: list[Start] = []
    for i in range(runs):
        # Alternate which starts first, so neither always follows the
        # other's exit.
        pair = [(web(f"b8-web-{i}"), web_starts), (app(f"b8-app-{i}"), app_starts)]
        for server, starts in pair if i % 2 == 0 else pair[::-1]:
            try:
                starts.append(_start(server))
            finally:
                server.stop()

    # Idle memory, with both running at once: the floor after its first
    # 200s, the service once its parser process has parsed a first update
    # (which shows it is up).  Then the reload time of more updates.
    floor = web("b8-web-idle")
    service = app("b8-app-idle")
    with floor, service:
        client = Client(service.port)
        writer = WriterProcess("atomic", base)
        messages = [f"footprint update {n:04d}" for n in range(updates)]
        first, timeouts = time_updates(client, writer, messages[:1], timeout=5.0)
        floor_client = Client(floor.port)
        status, body = floor_client.get("/")
        floor_client.close()
        if (status, body) != (200, _INDEX):
            ctx.fail(f"B8: twistd web answered {status} {body[:50]!r}")
        web_rss = holdings(floor.pid)
        app_rss = holdings(service.pid)
        parser_own = sum(map(private_bytes, process_tree(service.pid)[1:]))
        rest, more = time_updates(client, writer, messages[1:], timeout=5.0)
        writer.close()
        latencies, timeouts = first + rest, timeouts + more
        if timeouts:
            ctx.fail(f"B8: {timeouts} of {updates} updates never served in time")
        if not serves(client, messages[-1], timeout=5):
            ctx.fail("B8: the last update is not served")
        client.close()
    if app_rss.processes != 2:
        ctx.fail(f"B8: the service runs {app_rss.processes} processes, not 2")

    web_start = Summary.of([s.seconds for s in web_starts])
    app_start = Summary.of([s.seconds for s in app_starts])
    start_gap = app_start.p50 - web_start.p50
    server_rss = app_rss.rss_each[0]
    parser = sum(app_rss.rss_each[1:])
    server_gap = server_rss - web_rss.rss_bytes
    # The tree's memory: the parser process's pages shared with the server
    # (the interpreter's, the libraries') are resident once, so it adds
    # its own, not its RSS.
    tree = server_rss + parser_own
    tree_gap = tree - web_rss.rss_bytes
    reload = Summary.of(latencies or [float("inf")])

    def cpu(starts: list[Start]) -> str:
        return ms(sorted(s.cpu for s in starts)[len(starts) // 2])

    ctx.detail(
        f"B8: start to first 200 from `GET /`, twistd web {web_start.describe_ms()}"
        f" (CPU used by then, median, {cpu(web_starts)} ms); configmapdemo"
        f" {app_start.describe_ms()} ({cpu(app_starts)} ms)"
    )
    ctx.detail(
        f"B8: idle RSS, twistd web {_mib(web_rss.rss_bytes)} MiB; configmapdemo"
        f" {_mib(server_rss)} MiB server + {_mib(parser)} MiB parser process"
        f" ({_mib(app_rss.rss_bytes)} MiB together), of which {_mib(parser_own)}"
        " MiB the parser process's own, not shared with the server; reload of"
        f" a kubelet update {reload.describe_ms()}"
    )
    met = (
        start_gap <= START_MARGIN
        and server_gap <= SERVER_MARGIN
        and tree_gap <= TREE_MARGIN
    )
    ctx.row(
        Row(
            "B8",
            f"footprint beside `twistd -n web --path DIR`, in the same run: start"
            f" to first 200 (median of {runs}); idle memory of the server, and of"
            " the tree (the server's RSS and the parser process's own memory);"
            " reload p50 of a kubelet update",
            "start <= twistd web + 100 ms; server RSS <= twistd web + 3 MiB;"
            " tree <= twistd web + 11 MiB; report reload p50 (against other"
            " versions: side by side, see the analysis)",
            f"start {ms(app_start.p50)} vs {ms(web_start.p50)} ms"
            f" ({start_gap * 1000:+.0f} ms; CPU used by then {cpu(app_starts)} vs"
            f" {cpu(web_starts)} ms); server {_mib(server_rss)} vs"
            f" {_mib(web_rss.rss_bytes)} MiB ({_signed(server_gap)}); tree"
            f" {_mib(tree)} MiB ({_signed(tree_gap)}; parser process RSS"
            f" {_mib(parser)}, its own {_mib(parser_own)}); reload p50"
            f" {ms(reload.p50)} ms",
            "pass" if met else "miss",
        )
    )
