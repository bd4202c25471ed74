"""
B7: the cost of reading the current config on the request path, which is
one attribute read, C{store.current}, per request.
"""

from __future__ import annotations

import timeit
from types import SimpleNamespace

from bench.context import Context, Row


def per_read_ns(stmt: str, namespace: dict[str, object], quick: bool) -> float:
    """The best of several C{timeit} repeats, in nanoseconds per execution."""
    number = 200_000 if quick else 2_000_000
    best = min(timeit.repeat(stmt, globals=namespace, number=number, repeat=5))
    return best / number * 1e9


def run(ctx: Context) -> None:
    """B7."""
    from twisted_demo.config import parse_config
    from twisted_demo.store import ConfigStore

    config = parse_config(b'message: "Hello World"\n', source="bench", loaded_at=0.0)
    store = ConfigStore(config)
    # The handler holds the store as C{self._store}; time that path too.
    handler = SimpleNamespace(_store=store)
    namespace: dict[str, object] = {"store": store, "self": handler}
    read = per_read_ns("store.current", namespace, ctx.quick)
    via_self = per_read_ns("self._store.current", namespace, ctx.quick)
    empty = per_read_ns("store", namespace, ctx.quick)
    ctx.detail(
        f"B7: `store.current` {read:.1f} ns per read, `self._store.current`"
        f" (as the handler writes it) {via_self:.1f} ns; the timeit loop with a"
        f" bare name load costs {empty:.1f} ns of that"
    )
    ctx.row(
        Row(
            "B7",
            "config read on the request path (`store.current`, timeit)",
            "<= 100 ns per read",
            f"{read:.1f} ns per read (loop included)",
            "pass" if read <= 100 else "miss",
        )
    )
