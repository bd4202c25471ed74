"""Config files as the benchmarks write them, and a writer that timestamps commits."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from twisted_demo.testing import AtomicWriter, write_by_rename, write_in_place

#: The ConfigMap key, so the file the service reads is C{DIR/config.yaml}.
CONFIG_KEY = "config.yaml"


def config_yaml(message: str, size: int = 0) -> bytes:
    """
    A YAML config whose C{message} is C{message}, padded with C{pad_NNNN}
    keys of 4 KiB values to at least C{size} bytes (0: no padding).
    """
    text = f'message: "{message}"\n'
    pad_value = "x" * 4096
    key = 0
    while len(text) < size:
        remaining = size - len(text) - len("pad_0000: \n")
        text += f"pad_{key:04d}: {pad_value[: max(1, min(4096, remaining))]}\n"
        key += 1
    return text.encode("utf-8")


class TimedAtomicWriter(AtomicWriter):
    """
    The shared kubelet L{AtomicWriter}, recording in L{committed_at} the
    C{time.perf_counter()} right after C{..data} was renamed into place.
    """

    committed_at: float = 0.0

    def commit(self, tmp_link: Path, data_link: Path) -> None:
        super().commit(tmp_link, data_link)
        self.committed_at = time.perf_counter()

    def publish(self, message: str, size: int = 0) -> float:
        """Publish a config with C{message}; return the commit timestamp."""
        self.write({CONFIG_KEY: config_yaml(message, size)})
        return self.committed_at


class WriterProcess:
    """
    Make updates in a child process and hand back their commit timestamps.

    Polling from the same process as the writer would measure the writer
    too: its Python work after the commit holds the GIL while a response
    waits to be read.  C{time.perf_counter} is the system-wide monotonic
    clock, so the child's timestamps compare with the parent's.

    C{kind} is C{atomic} (the kubelet's AtomicWriter on the directory
    C{target}), C{in-place} or C{rename} (editors on the plain file
    C{target}).
    """

    def __init__(self, kind: str, target: Path, size: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_write_updates, args=(child, kind, target, size), daemon=True
        )
        self._process.start()

    def start(self, message: str) -> None:
        """Begin publishing C{message}; L{committed} tells when it landed."""
        self._conn.send(message)

    def committed(self) -> float:
        """The C{perf_counter} at the commit point of the update started last."""
        value = self._conn.recv()
        assert isinstance(value, float)
        return value

    def publish(self, message: str) -> float:
        self.start(message)
        return self.committed()

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()


def _write_updates(conn: Connection, kind: str, target: Path, size: int) -> None:
    update: Callable[[str], float]
    if kind == "atomic":
        writer = TimedAtomicWriter(target)

        def update(message: str) -> float:
            return writer.publish(message, size)

    else:
        save = write_in_place if kind == "in-place" else write_by_rename

        def update(message: str) -> float:
            save(target, config_yaml(message, size))
            return time.perf_counter()

    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(update(message))
