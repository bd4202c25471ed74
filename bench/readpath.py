"""
B7: the cost of reading the current config on the request path, which is
one attribute read, C{live.current}, per request.
"""

from __future__ import annotations

import timeit

from bench.context import Context, Row


class _Handler:
    """Holds the live config as the web app does, as C{self._live}."""

    def __init__(self, live: object) -> None:
        self._live = live


def per_run_ns(stmt: str, setup: str, namespace: dict[str, object], n: int) -> float:
    """
    The best of five C{timeit} repeats of C{stmt}, in nanoseconds per run.
    Names bound in C{setup} are locals of the timing loop, as C{self} and
    C{request} are in a handler.
    """
    best = min(timeit.repeat(stmt, setup, globals=namespace, number=n, repeat=5))
    return best / n * 1e9


def run(ctx: Context) -> None:
    """B7."""
    import tempfile
    from pathlib import Path

    from twisted.internet.task import Clock

    from twisted_demo.config import parse_message
    from twisted_demo.live import LiveConfigService, inline

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_bytes(b'message: "Hello World"\n')
        live = LiveConfigService(path, parse_message, reactor=Clock(), runner=inline)
        live.load_blocking()
    namespace: dict[str, object] = {"the_live": live}
    namespace["the_handler"] = _Handler(live)
    n = 200_000 if ctx.quick else 2_000_000
    read = per_run_ns("live.current", "live = the_live", namespace, n)
    via_self = per_run_ns("self._live.current", "self = the_handler", namespace, n)
    loop = per_run_ns("live", "live = the_live", namespace, n)
    ctx.detail(
        f"B7: `live.current` {read:.1f} ns per read; `self._live.current`,"
        f" as the handler writes it, {via_self:.1f} ns; the timing loop alone"
        f" (a bare local load) {loop:.1f} ns of each"
    )
    ctx.row(
        Row(
            "B7",
            "config read on the request path (`live.current`, timeit)",
            "<= 100 ns per read",
            f"{read:.1f} ns per read ({via_self:.1f} ns as `self._live.current`;"
            f" timing loop included)",
            "pass" if read <= 100 else "miss",
        )
    )
