"""
Run the benchmarks: C{python -m bench [--quick] [--output BENCHMARKS.md]}.

Exits non-zero only on correctness failures (errors, non-200 or torn
responses, wrong reload counts, a last update never served), never because
a timing target was missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from string import ascii_lowercase

from bench import (
    bigconfig,
    connections,
    footprint,
    forced,
    parsecost,
    readpath,
    reload,
    soak,
    throughput,
    treepeak,
    webhook,
)
from bench.context import Context, Row
from bench.load import wrk_available, wrk_version
from bench.report import QUICK_DURATION
from bench.server import write_bytecode

BENCHMARKS: list[tuple[str, Callable[[Context], None]]] = [
    ("B7", readpath.run),
    ("B9", parsecost.run),
    ("B10", treepeak.run),
    ("B8", footprint.run),
    ("B1", reload.run),
    ("B3", throughput.run),
    ("B4f", forced.run),
    ("B5", bigconfig.run),
    ("B6", soak.run),
    ("B6C", connections.run),
    ("B11", webhook.run),
]


def _pinning(enabled: bool) -> tuple[str | None, str | None]:
    """
    The CPUs for the servers and for everything else: the server gets a
    CPU of its own, so the load generator does not steal its time.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    server, rest = cpus[0], cpus[1:]
    os.sched_setaffinity(0, rest)
    return str(server), ",".join(map(str, rest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the reduced run for CI ({QUICK_DURATION})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the report (default: BENCHMARKS.md, not in --quick)",
    )
    parser.add_argument("--load", choices=["auto", "wrk", "builtin"], default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument(
        "--only", help="comma-separated benchmarks to run, e.g. B1,B3 (B2 is B1's)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    output: Path | None = args.output
    if output is None and not args.quick:
        output = Path("BENCHMARKS.md")
    tool = args.load
    if tool == "auto":
        tool = "wrk" if wrk_available() else "builtin"
    why = "chosen with --load builtin" if wrk_available() else "wrk is not installed"
    load_description = (
        f"{wrk_version()}, 1 thread, 64 connections, bench/check.lua checks every body"
        if tool == "wrk"
        else f"the suite's own generator (bench/loadgen.py, {why}),"
        " 64 connections, one process"
    )
    if tool == "wrk" and not wrk_available():
        parser.error("--load wrk: wrk is not installed")
    if not write_bytecode():
        parser.error("the service's modules do not compile")
    server_cpus, client_cpus = _pinning(not args.no_pin)
    workdir = Path(tempfile.mkdtemp(prefix="configmapdemo-bench-"))
    ctx = Context(
        quick=args.quick,
        workdir=workdir,
        load_tool=tool,
        server_cpus=server_cpus,
        client_cpus=client_cpus,
    )
    from bench.report import environment, markdown

    env = environment(ctx, load_description)
    print(f"configmapdemo benchmarks ({'quick' if args.quick else 'full'})")
    for key, value in env:
        print(f"  {key}: {value}")
    wanted = None if args.only is None else set(args.only.upper().split(","))
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        for name, bench in BENCHMARKS:
            if wanted is not None and name.upper() not in wanted:
                continue
            print(f"{name} ...", flush=True)
            try:
                bench(ctx)
            except Exception as e:
                traceback.print_exc()
                ctx.fail(f"{name} could not run: {e}")
                ctx.rows.append(Row(name, "(crashed)", "", str(e), "FAIL"))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}")
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()[0]
    env.append(
        (
            "Other load",
            f"1-minute load average {load_before:.2f} before the run and"
            f" {load_after:.2f} after it; the machine is shared with other jobs,"
            " so figures from runs at different times are not comparable",
        )
    )
    # By number (B10 after B9), then a row's letter (B1e after B1).
    ctx.rows.sort(key=lambda r: (int(r.id[1:].rstrip(ascii_lowercase)), r.id))

    print()
    print(f"{'id':5} {'result':6} measured")
    for row in ctx.rows:
        print(f"{row.id:5} {row.verdict:6} {row.measured}")
    if output is not None:
        output.write_text(markdown(ctx, env, elapsed))
        print(f"wrote {output}")
    print(f"{len(ctx.failures)} correctness failures in {elapsed:.0f} s")
    for failure in ctx.failures:
        print(f"  {failure}")
    return 1 if ctx.failures else 0
