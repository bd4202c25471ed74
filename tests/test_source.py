"""
Reading the config file: whole, within the limit, even when it changes
size while it is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from twisted_demo.config import ConfigError
from twisted_demo.source import ConfigFile


class _StaleStat:
    """
    C{os.fstat} as seen by a reader that raced a writer: the size from
    before the file grew to its present length.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._fstat = os.fstat

    def __call__(self, fd: int) -> Any:
        real = self._fstat(fd)
        fields = list(real)
        fields[6] = self._size
        return os.stat_result(fields)


def test_file_that_grew_after_its_size_was_taken_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    content = b"message: " + b"x" * 5000 + b"\n"
    path.write_bytes(content)
    monkeypatch.setattr(os, "fstat", _StaleStat(10))
    assert ConfigFile(path).read().raw == content


def test_file_that_grew_past_the_limit_after_its_size_was_taken_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: " + b"x" * 200 + b"\n")
    monkeypatch.setattr(os, "fstat", _StaleStat(10))
    with pytest.raises(ConfigError, match="over the limit of 100 bytes"):
        ConfigFile(path, max_bytes=100).read()


@pytest.mark.parametrize("size", [0, 1, 99, 100])
def test_file_up_to_the_limit_is_read_whole(tmp_path: Path, size: int) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"x" * size)
    assert ConfigFile(path, max_bytes=100).read().raw == b"x" * size


def test_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"x" * 101)
    with pytest.raises(ConfigError, match="over the limit of 100 bytes"):
        ConfigFile(path, max_bytes=100).read()
