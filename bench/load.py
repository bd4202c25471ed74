"""
HTTP load against one server: C{wrk} where installed, else the suite's own
generator (L{bench.loadgen}).  Both run as a separate process, print the
same line format and report every distinct body they received.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

from bench.server import pinned

CHECK_SCRIPT = Path(__file__).with_name("check.lua")


@frozen
class LoadResult:
    """What one load run measured; latencies in seconds."""

    tool: str
    requests: int
    duration: float
    socket_errors: int
    non_200: int
    p50: float
    p99: float
    max: float
    bodies: Mapping[bytes, int]
    unrecorded: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    def unexpected_bodies(self, allowed: set[bytes]) -> dict[bytes, int]:
        """The bodies, with their counts, that are not in C{allowed}."""
        return {b: n for b, n in self.bodies.items() if b not in allowed}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    first = (done.stdout + done.stderr).strip().splitlines()
    return first[0] if first else "wrk"


class LoadRun:
    """A load run in progress; L{result} waits for it and parses its output."""

    def __init__(self, tool: str, argv: list[str], timeout: float) -> None:
        self.tool = tool
        self._timeout = timeout
        self._process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def result(self) -> LoadResult:
        try:
            out, err = self._process.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            raise
        if self._process.returncode != 0:
            raise RuntimeError(f"{self.tool} failed: {err.strip()}")
        return parse_result(self.tool, out)


def start_load(
    tool: str,
    port: int,
    duration: float,
    connections: int,
    cpus: str | None,
    path: str = "/",
) -> LoadRun:
    """Start C{connections} kept-alive connections GETting C{path}."""
    url = f"http://127.0.0.1:{port}{path}"
    if tool == "wrk":
        argv = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "5s",
            "-s",
            str(CHECK_SCRIPT),
            url,
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--path",
            path,
            "--duration",
            str(duration),
            "--connections",
            str(connections),
        ]
    return LoadRun(tool, pinned(argv, cpus), timeout=duration + 60)


def run_load(
    tool: str,
    port: int,
    duration: float,
    connections: int,
    cpus: str | None,
) -> LoadResult:
    return start_load(tool, port, duration, connections, cpus).result()


def parse_result(tool: str, output: str) -> LoadResult:
    """Parse the C{bench-result} block that both load generators print."""
    lines = output.splitlines()
    try:
        start = lines.index("bench-result")
    except ValueError:
        raise RuntimeError(f"{tool} printed no result:\n{output}") from None
    requests = 0
    duration = 0.0
    socket_errors = 0
    non_200 = 0
    unrecorded = 0
    latency = (0.0, 0.0, 0.0)
    bodies: dict[bytes, int] = {}
    for line in lines[start + 1 :]:
        if line == "end":
            break
        key, _, rest = line.partition(" ")
        if key == "requests":
            requests = int(rest)
        elif key == "duration_us":
            duration = int(rest) / 1e6
        elif key == "socket_errors":
            socket_errors = int(rest)
        elif key == "latency_us":
            p50, p99, peak = (int(v) / 1e6 for v in rest.split())
            latency = (p50, p99, peak)
        elif key == "non200":
            non_200 += int(rest)
        elif key == "unrecorded":
            unrecorded += int(rest)
        elif key == "body":
            count, _, hexed = rest.partition(" ")
            body = bytes.fromhex(hexed)
            bodies[body] = bodies.get(body, 0) + int(count)
    return LoadResult(
        tool=tool,
        requests=requests,
        duration=duration,
        socket_errors=socket_errors,
        non_200=non_200,
        p50=latency[0],
        p99=latency[1],
        max=latency[2],
        bodies=bodies,
        unrecorded=unrecorded,
    )
