"""
Reading the config: whole, within the limit, even when it changes size
while it is read; and several files from one ConfigMap generation even
when the kubelet swaps it during the read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from twisted_demo.live import ConfigError
from twisted_demo.live._reader import Reader
from twisted_demo.testing import AtomicWriter


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
    assert Reader(path).read().data == content


def test_file_that_grew_past_the_limit_after_its_size_was_taken_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: " + b"x" * 200 + b"\n")
    monkeypatch.setattr(os, "fstat", _StaleStat(10))
    with pytest.raises(ConfigError, match="over the limit of 100 bytes"):
        Reader(path, max_bytes=100).read()


@pytest.mark.parametrize("size", [0, 1, 99, 100])
def test_file_up_to_the_limit_is_read_whole(tmp_path: Path, size: int) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"x" * size)
    assert Reader(path, max_bytes=100).read().data == b"x" * size


def test_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"x" * 101)
    with pytest.raises(ConfigError, match="over the limit of 100 bytes"):
        Reader(path, max_bytes=100).read()


def test_several_files_are_read_from_one_generation(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    generation = writer.write({"tls.crt": b"cert 1", "tls.key": b"key 1", "x": b""})
    snapshot = Reader(tmp_path, files=["tls.crt", "tls.key"]).read()
    assert snapshot.data == {"tls.crt": b"cert 1", "tls.key": b"key 1"}
    assert snapshot.generation == generation


def test_generation_swapped_during_the_read_is_read_again_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"tls.crt": b"cert 1", "tls.key": b"key 1"})
    real_open = open
    swapped: list[str] = []

    def open_then_swap(file: Any, *args: Any, **kwargs: Any) -> Any:
        # The kubelet publishes the next generation right after the first
        # file of a read is opened.
        opened = real_open(file, *args, **kwargs)
        if not swapped:
            swapped.append(writer.write({"tls.crt": b"cert 2", "tls.key": b"key 2"}))
        return opened

    monkeypatch.setattr("builtins.open", open_then_swap)
    snapshot = Reader(tmp_path, files=["tls.crt", "tls.key"]).read()
    assert snapshot.data == {"tls.crt": b"cert 2", "tls.key": b"key 2"}
    assert snapshot.generation == swapped[0]


def test_same_bytes_in_the_same_files_have_the_same_digest(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"a": b"1", "b": b"2"})
    first = Reader(tmp_path, files=["a", "b"]).read()
    writer.write({"a": b"1", "b": b"2"})
    assert Reader(tmp_path, files=["a", "b"]).read().sha256 == first.sha256
    writer.write({"a": b"12", "b": b""})
    assert Reader(tmp_path, files=["a", "b"]).read().sha256 != first.sha256


def test_missing_one_of_several_files_is_refused_naming_it(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"tls.crt": b"cert"})
    with pytest.raises(ConfigError) as e:
        Reader(tmp_path, files=["tls.crt", "tls.key"]).read()
    assert str(e.value) == (
        f"{tmp_path / 'tls.key'}: cannot read: No such file or directory"
    )
