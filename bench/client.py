"""A small blocking HTTP/1.1 keep-alive client for polling the server."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable


class Client:
    """
    GET paths from one server over one kept-alive connection, reconnecting
    when the server closes it.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0):
        self._host = host
        self._port = port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        """Return the status and body of C{GET path}."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            try:
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                # A kept-alive connection may have been closed by the
                # server; retry once on a fresh one.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str) -> tuple[int, bytes]:
        """Return the status and body of an empty C{POST path}."""
        self.close()
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request("POST", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample C{name} in Prometheus text C{text}."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if match is None:
        raise LookupError(f"metric {name} not found")
    return float(match.group(1))


def wait_for(
    predicate: Callable[[], bool], deadline: float, interval: float = 0.001
) -> bool:
    """
    Call C{predicate} until it returns true or C{deadline} (a
    C{time.monotonic} value) passes; return whether it came true.
    """
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
