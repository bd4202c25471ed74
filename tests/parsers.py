"""
Parse functions that the parser process tests call in the child by their
import path.  This module imports only the standard library, attrs, PyYAML and
L{ConfigError}, as a user's parser module would.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml
from attrs import frozen

from twisted_demo.live._errors import ConfigError


def echo(data: bytes | Mapping[str, bytes]) -> object:
    """
    The input itself (a mapping as a plain dict).
    """
    return data if isinstance(data, bytes) else dict(data)


@frozen
class Process:
    """
    What the process a parse runs in looks like.
    """

    pid: int
    niceness: int
    address_space: tuple[int, int]
    cwd: str
    modules: list[str]


def where(data: object) -> Process:
    """
    The process it runs in.
    """
    return Process(
        pid=os.getpid(),
        niceness=os.nice(0),
        address_space=resource.getrlimit(resource.RLIMIT_AS),
        cwd=os.getcwd(),
        modules=sorted({name.partition(".")[0] for name in sys.modules}),
    )


def load_yaml(data: bytes) -> int:
    """
    Load YAML with PyYAML's C loader; return how many top-level items it
    has.
    """
    try:
        document = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"config.yaml: {e}") from None
    return len(document)


def refuse(data: bytes) -> None:
    """
    Refuse the input, quoting it.
    """
    raise ConfigError(f"config.yaml line 1, column 1: {data.decode()}")


def crash(data: bytes) -> None:
    """
    Fail as a buggy parser does.
    """
    raise KeyError(data.decode())


def hang(data: bytes) -> None:
    """
    Write the process id to the file named by C{data}, then never return.
    """
    marker = Path(data.decode())
    partial = marker.with_suffix(".partial")
    partial.write_text(str(os.getpid()))
    partial.rename(marker)
    while True:
        time.sleep(3600)


def die(data: bytes) -> None:
    """
    Kill the process with the signal named by C{data}, as the OOM killer
    or a crash in C would.
    """
    os.kill(os.getpid(), getattr(signal, data.decode()))


def spin(data: bytes) -> None:
    """
    Use CPU forever.
    """
    while True:
        pass


def hungry(data: bytes) -> int:
    """
    Take memory, a MiB at a time, up to 256 MiB (twice the parser
    process's limit, so that a test without the limit fails rather than
    take the machine's memory); return how many MiB it took.
    """
    chunks = []
    for _ in range(256):
        chunks.append(bytearray(2**20))
        # Touch the pages, as a real parser's tree does.
        chunks[-1][::4096] = b"x" * 256
    return len(chunks)


_parsed_here = 0


def fits_only_when_fresh(data: bytes) -> int:
    """
    Fit in a fresh process's memory, and in one that has parsed before run
    out of it, as a large parse can in a heap that earlier parses left
    fragmented; return the process id.
    """
    global _parsed_here
    _parsed_here += 1
    if _parsed_here > 1:
        raise MemoryError
    return os.getpid()


def huge(data: bytes) -> bytes:
    """
    A value too big to send back.
    """
    return b"x" * (2 * 2**20)


def exception_value(data: bytes) -> Exception:
    """
    An exception as the value, not raised.
    """
    return ValueError(data.decode())


def unpicklable(data: bytes) -> object:
    """
    A value that cannot be pickled.
    """
    return lambda: None


class Parser:
    """
    A parser whose method cannot be found by an import path.
    """

    def parse(self, data: bytes) -> bytes:
        return data


def noisy(data: bytes) -> int:
    """
    Say something on stderr, as a chatty library does, and parse.
    """
    print("a warning from the parse", file=sys.stderr)
    return len(data)
