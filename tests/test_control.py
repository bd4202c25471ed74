"""
The control plane: forced reloads (C{SIGHUP}, C{POST /-/reload}), who may
ask for them, what they answer and log, and how a flood of them is folded
into one reload per tick; and the library's hooks they use.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import captured_log, result_of
from twisted_demo.live import (
    ConfigError,
    Failed,
    LiveConfigService,
    Outcome,
    Updated,
    inline,
)


def _identity(data: bytes) -> bytes:
    if data == b"bad":
        raise ConfigError("bad")
    return data


def test_service_told_not_to_log_its_outcomes_logs_none(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"one")
    live = LiveConfigService(path, _identity, runner=inline, log_outcomes=False)
    told: list[Outcome[bytes]] = []
    live.observe(told.append)
    with captured_log() as log:
        live.load_blocking()
        path.write_bytes(b"two")
        assert isinstance(result_of(live.reload()), Updated)
        path.write_bytes(b"bad")
        assert isinstance(result_of(live.reload()), Failed)
    assert log.messages() == []
    assert len(told) == 3
