"""Config files as the benchmarks write them, and a writer that timestamps commits."""

from __future__ import annotations

import time
from pathlib import Path

from twisted_demo.testing import AtomicWriter

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
