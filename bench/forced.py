"""
B4f: a flood of forced reloads (C{POST /-/reload} in a loop over many
connections, with a 1 MiB config) beside C{GET /}: the latency of C{GET /}
against its baseline, the reloads the flood cost, and the server's CPU.

C{python -m bench.forced --port P --duration S --connections N} is the
flood itself, run as a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.client import Client
from bench.context import Context, Row, body_of
from bench.proc import cpu_times
from bench.server import pinned
from bench.stats import Summary, ms

MESSAGE = "flooded"
#: The config's size: the ConfigMap limit, the most a reload reads.
CONFIG_BYTES = 1024 * 1024
#: As many as an attacker's loop of 640 requests a second needs, each
#: answered within a tick.
CONNECTIONS = 64
#: The service's default tick: at most one forced reload per tick.
TICK = 0.1

_FORCED = re.compile(
    r"Forced reload \(POST /-/reload\)(?:[^\n]* \(repeated (\d+) times in )?"
)


def _config(path: Path) -> Path:
    head = f"message: {MESSAGE}\n# ".encode()
    path.write_bytes(head + b"x" * (CONFIG_BYTES - len(head) - 1) + b"\n")
    return path


def _get_latencies(
    client: Client, count: int, until: float | None = None
) -> tuple[list[float], int]:
    """
    C{count} sequential C{GET /}, or as many as fit until C{until} (a
    C{time.monotonic} value): their latencies, and how many were wrong.
    """
    latencies: list[float] = []
    wrong = 0
    while len(latencies) < count if until is None else time.monotonic() < until:
        started = time.perf_counter()
        status, body = client.get("/")
        latencies.append(time.perf_counter() - started)
        if status != 200 or body != body_of(MESSAGE):
            wrong += 1
    return latencies, wrong


def forced_reloads_logged(log: str) -> int:
    """
    The forced reloads C{POST /-/reload} caused, from the server's log,
    counting those a rationed line sums up.
    """
    return sum(int(count) if count else 1 for count in _FORCED.findall(log))


def run(ctx: Context) -> None:
    """B4f."""
    gets = 300 if ctx.quick else 2000
    duration = 3.0 if ctx.quick else 10.0
    base = ctx.workdir / "b4f"
    base.mkdir()
    server = ctx.app("b4f", _config(base / "config.yaml"), tick=TICK)
    server.start()
    try:
        client = Client(server.port)
        _get_latencies(client, 50)  # warm up
        calm, calm_wrong = _get_latencies(client, gets)
        flood = subprocess.Popen(
            pinned(
                [
                    sys.executable,
                    "-m",
                    "bench.forced",
                    "--port",
                    str(server.port),
                    "--duration",
                    str(duration),
                    "--connections",
                    str(CONNECTIONS),
                ],
                ctx.client_cpus,
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        cpu_before, started = cpu_times(server.pid).used, time.monotonic()
        # Measured while the flood runs, after its connections are open.
        time.sleep(0.2)
        flooded, flooded_wrong = _get_latencies(
            client, 0, until=started + duration - 0.2
        )
        out, _ = flood.communicate(timeout=duration + 60)
        elapsed = time.monotonic() - started
        cpu = (cpu_times(server.pid).used - cpu_before) / elapsed
        client.close()
    finally:
        server.stop()
    answers = Counter(
        {
            int(status): int(count)
            for status, count in (line.split() for line in out.split("\n") if line)
        }
    )
    posts = sum(answers.values())
    reloads = forced_reloads_logged(server.log_path.read_text(errors="replace"))
    most = elapsed / TICK + 2
    if calm_wrong or flooded_wrong:
        ctx.fail(f"B4f: {calm_wrong + flooded_wrong} wrong answers to GET /")
    if set(answers) != {200}:
        ctx.fail(f"B4f: POST /-/reload answered {dict(answers)}")
    if not 0 < reloads <= most:
        ctx.fail(f"B4f: {reloads} forced reloads in {elapsed:.1f}s, past one a tick")
    calm_summary, flooded_summary = Summary.of(calm), Summary.of(flooded)
    ratio = flooded_summary.p50 / calm_summary.p50
    ctx.detail(
        f"B4f: GET / alone {calm_summary.describe_ms()}; during {posts} POST"
        f" /-/reload in {elapsed:.1f}s ({posts / elapsed:.0f}/s, {CONNECTIONS}"
        f" connections, 1 MiB config) {flooded_summary.describe_ms()}; the"
        f" flood cost {reloads} reloads ({reloads / elapsed:.1f}/s, at most one"
        f" per {TICK:g}s tick) and the server {cpu:.0%} of a CPU"
    )
    ctx.row(
        Row(
            "B4f",
            f"a flood of `POST /-/reload` ({CONNECTIONS} connections, 1 MiB config)"
            " beside sequential `GET /`: latency against `GET /` alone, reloads",
            "GET / p50 within a small factor of alone; <= 1 reload per tick",
            f"GET / p50 {ms(calm_summary.p50)} -> {ms(flooded_summary.p50)} ms"
            f" (x{ratio:.1f}) under {posts / elapsed:.0f} POST/s; {reloads} reloads"
            f" in {elapsed:.1f}s; server CPU {cpu:.0%}",
            "info",
        )
    )


async def _flood(port: int, duration: float, connections: int) -> Counter[int]:
    answers: Counter[int] = Counter()
    deadline = time.monotonic() + duration
    request = b"POST /-/reload HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                answers[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forced")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    args = parser.parse_args()
    answers = asyncio.run(_flood(args.port, args.duration, args.connections))
    for status, count in sorted(answers.items()):
        print(status, count)


if __name__ == "__main__":
    main()
