"""
B7: the cost of reading the current config on the request path, which is
one attribute read, C{store.current}, per request.
"""

from __future__ import annotations

import timeit

from bench.context import Context, Row


class _Handler:
    """Holds the store as the web app does, as C{self._store}."""

    def __init__(self, store: object) -> None:
        self._store = store


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
    from twisted_demo.config import parse_config
    from twisted_demo.store import ConfigStore

    config = parse_config(b'message: "Hello World"\n', source="bench", loaded_at=0.0)
    namespace: dict[str, object] = {"the_store": ConfigStore(config)}
    namespace["the_handler"] = _Handler(namespace["the_store"])
    n = 200_000 if ctx.quick else 2_000_000
    read = per_run_ns("store.current", "store = the_store", namespace, n)
    via_self = per_run_ns("self._store.current", "self = the_handler", namespace, n)
    loop = per_run_ns("store", "store = the_store", namespace, n)
    ctx.detail(
        f"B7: `store.current` {read:.1f} ns per read; `self._store.current`,"
        f" as the handler writes it, {via_self:.1f} ns; the timing loop alone"
        f" (a bare local load) {loop:.1f} ns of each"
    )
    ctx.row(
        Row(
            "B7",
            "config read on the request path (`store.current`, timeit)",
            "<= 100 ns per read",
            f"{read:.1f} ns per read ({via_self:.1f} ns as `self._store.current`;"
            f" timing loop included)",
            "pass" if read <= 100 else "miss",
        )
    )
