"""
The suite's own load generator, used where C{wrk} is not installed:
C{--connections} kept-alive HTTP/1.1 connections, each sending the next
GET as soon as the previous response is complete, for C{--duration}
seconds.  Prints the same C{bench-result} block as C{bench/check.lua}.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.stats import percentile


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.bodies: dict[bytes, int] = {}
        self.non_200 = 0
        self.socket_errors = 0
        self.unrecorded = 0

    def record(self, status: int, body: bytes, latency: float) -> None:
        self.latencies.append(latency)
        if status != 200:
            self.non_200 += 1
        elif body in self.bodies:
            self.bodies[body] += 1
        elif len(self.bodies) < 20000:
            self.bodies[body] = 1
        else:
            self.unrecorded += 1


class _Connection(asyncio.Protocol):
    """One kept-alive connection that parses responses incrementally."""

    def __init__(
        self, request: bytes, tally: _Tally, stop_at: float, done: asyncio.Future[None]
    ) -> None:
        self._request = request
        self._tally = tally
        self._stop_at = stop_at
        self._done = done
        self._buffer = b""
        self._sent_at = 0.0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            parsed = _parse_response(self._buffer)
            if parsed is None:
                return
            status, body, rest = parsed
            self._buffer = rest
            self._tally.record(status, body, time.perf_counter() - self._sent_at)
            if time.perf_counter() >= self._stop_at:
                assert self._transport is not None
                self._transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self._stop_at:
            self._tally.socket_errors += 1
        if not self._done.done():
            self._done.set_result(None)


def _parse_response(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """Split one complete response off C{buffer}, or None if incomplete."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buffer[:head_end].split(b"\r\n")
    status = int(head[0].split(b" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    position = head_end + 4
    if b"content-length" in headers:
        end = position + int(headers[b"content-length"])
        if len(buffer) < end:
            return None
        return status, buffer[position:end], buffer[end:]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(buffer[position:line_end].split(b";")[0], 16)
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            if size == 0:
                # No trailers are sent by twisted.web.
                return status, body, buffer[start + 2 :]
            body += buffer[start : start + size]
            position = start + size + 2
    return status, b"", buffer[position:]


async def _run(port: int, path: str, duration: float, connections: int) -> _Tally:
    loop = asyncio.get_running_loop()
    tally = _Tally()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode("ascii")
    stop_at = time.perf_counter() + duration
    waits = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(
                lambda d=done: _Connection(request, tally, stop_at, d),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
        except OSError:
            tally.socket_errors += 1
            continue
        waits.append(done)
    await asyncio.wait_for(asyncio.gather(*waits), timeout=duration + 30)
    return tally


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tally = asyncio.run(_run(args.port, args.path, args.duration, args.connections))
    elapsed = time.perf_counter() - started
    latencies = tally.latencies or [0.0]
    print("bench-result")
    print(f"requests {len(tally.latencies)}")
    print(f"duration_us {elapsed * 1e6:.0f}")
    print(f"socket_errors {tally.socket_errors}")
    print(
        f"latency_us {percentile(latencies, 50) * 1e6:.0f}"
        f" {percentile(latencies, 99) * 1e6:.0f} {max(latencies) * 1e6:.0f}"
    )
    print(f"non200 {tally.non_200}")
    print(f"unrecorded {tally.unrecorded}")
    for body, count in tally.bodies.items():
        print(f"body {count} {body.hex()}")
    print("end")


if __name__ == "__main__":
    main()
