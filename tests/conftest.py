"""
Fixtures shared by the tests.  pytest-twisted runs one global reactor for
the whole session; fixtures here clean up what they start on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CONFIG_NAME, TwistdServer
from twisted_demo.testing import AtomicWriter


@pytest.fixture
def configmap(tmp_path: Path) -> AtomicWriter:
    """
    A ConfigMap volume directory holding C{message: Hello World}.
    """
    writer = AtomicWriter(tmp_path / "config")
    writer.write({CONFIG_NAME: b"message: Hello World\n"})
    return writer


@pytest.fixture
def twistd_server(configmap: AtomicWriter) -> Iterator[TwistdServer]:
    """
    A running C{twistd -n configmapdemo} serving L{configmap}.
    """
    server = TwistdServer(configmap.target_dir / CONFIG_NAME)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()
