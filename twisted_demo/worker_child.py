"""
The parser process's side of L{twisted_demo.worker}: it imports only what
parsing needs (not Twisted), so it starts in about 0.1 s of CPU.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

#: Each message, both ways, is a pickle preceded by its length.
LENGTH = struct.Struct(">I")

_PROTOCOL = pickle.HIGHEST_PROTOCOL

#: How much nicer than the server the child runs: at 10, Linux gives it
#: about a tenth of a CPU the server also wants, and all of an idle one.
NICENESS = 10


def call_parse(parse: Callable[[Any], Any], data: Any) -> tuple[bool, Any]:
    """
    C{(True, parse(data))}, or C{(False, reason)} when parse raised
    C{ConfigError} to refuse C{data}.
    """
    from twisted_demo.live._errors import ConfigError

    try:
        return True, parse(data)
    except ConfigError as e:
        return False, str(e)


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """
    The child's loop: run each callable read from C{requests} and write
    C{(True, result)} or C{(False, traceback)} to C{replies}, until the end
    of C{requests}.
    """
    while True:
        header = _read_exactly(requests, LENGTH.size)
        if header is None:
            return
        (length,) = LENGTH.unpack(header)
        payload = _read_exactly(requests, length)
        if payload is None:
            return
        try:
            frame = pickle.dumps((True, pickle.loads(payload)()), _PROTOCOL)
        except Exception:
            # Raised by the work, or its result cannot be pickled.
            frame = pickle.dumps((False, traceback.format_exc()), _PROTOCOL)
        replies.write(LENGTH.pack(len(frame)) + frame)
        replies.flush()


def main(niceness: int = NICENESS) -> None:
    """
    Serve work from stdin to stdout at C{niceness} above the parent's.
    """
    # Nicer from the start, so that even its imports never slow the server
    # (at start-up, the server and the child want the CPU at once).
    os.nice(niceness)
    # Imported before the first work arrives, not while it waits.
    import twisted_demo.live._yaml  # noqa: F401

    # The parent's signals (SIGINT from a terminal, SIGHUP to reload) are
    # for the parent; the child ends when its input does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)
