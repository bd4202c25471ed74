"""
The parser process: the child side of L{twisted_demo.live._process}.

Run by the server's interpreter with its priority already lowered (see
C{_spawn.BOOTSTRAP}), as C{main([ADDRESS_SPACE, CPU_SECONDS,
MODULE...])}.  It reads requests on stdin and writes replies on stdout,
each framed by a 4-byte big-endian length (the framing of Twisted's
C{Int32StringReceiver}, which the parent uses), until stdin ends.

It imports no Twisted, only what parsing needs: C{struct} for the framing,
L{ConfigError}, and the module of each parse function it is asked to call.

A request is data, not code::

    >H length of the path, the path ("module:qualname", UTF-8), then
    b"B" and the input bytes, or
    b"M", >I count, and for each file: >H length, name (UTF-8),
    >I length, contents

A reply is one tag byte and its body::

    b"V" the value parse returned, pickled
    b"E" the fields of the ConfigError parse raised, as a JSON object
         (C{ConfigError.as_dict}), so that its place is never read back
         out of its text
    b"C" one line describing any other exception (UTF-8): its type and
         where it was raised, not its text, which may quote the input
    b"L" why the input went past a limit of the process (UTF-8); the parent
         stops this child and starts another for the next request
"""

from __future__ import annotations

import math
import os
import pickle
import resource
import signal
import struct
from collections.abc import Mapping
from importlib import import_module

from twisted_demo.live._errors import ConfigError, describe_crash

# The child imports only what parsing needs; typing alone would cost it
# half a MiB.  These names are for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import BinaryIO

#: The length before each message, both ways (as Int32StringReceiver's).
LENGTH = struct.Struct(">I")
_SHORT = struct.Struct(">H")

#: The longest message either side sends or accepts: a 1 MiB config and its
#: file names, or the pickled value of one, with room to spare.
MAX_MESSAGE = 2**20 + 2**16

#: How much nicer than the server the child runs: at 10, Linux gives it
#: about a tenth of a CPU the server also wants, and all of an idle one.
NICENESS = 10

#: The child's address space limit (RLIMIT_AS, soft and hard) unless the
#: server gives another: the least that parses every ordinary 1 MiB config.
#: Measured with Python 3.11 and PyYAML 6.0.4, the demo's parse function:
#: the child starts at 17 MiB of VmSize (14 MiB RSS); a valid 1 MiB config
#: of 51k C{keyN: valueN} lines, the costliest ordinary shape, peaks at
#: 69 MiB of VmSize (65 MiB RSS); the hostile 1 MiB shapes (500k duplicate
#: keys, a list of 524k items, 349k empty mappings) would need 151 to
#: 259 MiB and are refused with a MemoryError.  Under the limit, RSS peaks
#: 3 to 4 MiB below it: address space is a bound on RSS that the kernel
#: enforces at each allocation, at no cost and with no overshoot, where a
#: watch on RSS would have to poll and could not stop a parse in C.
PARSER_MEMORY = 72 * 2**20

#: CPU seconds one parse may use (RLIMIT_CPU is raised to the CPU used so
#: far plus this before each parse).  A valid 1 MiB config takes about
#: 1.2 s of CPU.
CPU_SECONDS = 5

VALUE = b"V"
ERROR = b"E"
CRASH = b"C"
LIMIT = b"L"

_BYTES = b"B"
_MAPPING = b"M"

_NOTHING = object()


Input = bytes | Mapping[str, bytes]


def encode_request(path: str, data: Input) -> bytes:
    """
    The request to call the function at C{path} ("module:qualname") with
    C{data}.

    @raise TypeError: If C{data} is neither bytes nor a mapping of file
        names to bytes.
    """
    name = path.encode("utf-8")
    parts = [_SHORT.pack(len(name)), name]
    if isinstance(data, bytes):
        parts += [_BYTES, data]
    elif isinstance(data, Mapping):
        parts += [_MAPPING, LENGTH.pack(len(data))]
        for file_name, contents in data.items():
            if not isinstance(file_name, str) or not isinstance(contents, bytes):
                raise TypeError(
                    "the input must map file names (str) to contents (bytes), "
                    f"got {type(file_name).__name__}: {type(contents).__name__}"
                )
            encoded = file_name.encode("utf-8")
            parts += [_SHORT.pack(len(encoded)), encoded]
            parts += [LENGTH.pack(len(contents)), contents]
    else:
        raise TypeError(
            "the input must be bytes or a mapping of file names to bytes, "
            f"got {type(data).__name__}"
        )
    return b"".join(parts)


def decode_request(message: bytes) -> tuple[str, Input]:
    """
    The path and input of a request made by L{encode_request}.

    @raise ValueError: If C{message} is not one.
    """
    view = memoryview(message)
    offset = 0

    def take(n: int) -> bytes:
        nonlocal offset
        if offset + n > len(view):
            raise ValueError("the request ends early")
        chunk = bytes(view[offset : offset + n])
        offset += n
        return chunk

    path = take(_SHORT.unpack(take(_SHORT.size))[0]).decode("utf-8")
    kind = take(1)
    if kind == _BYTES:
        return path, bytes(view[offset:])
    if kind != _MAPPING:
        raise ValueError(f"unknown input kind {kind!r}")
    files: dict[str, bytes] = {}
    (count,) = LENGTH.unpack(take(LENGTH.size))
    for _ in range(count):
        name = take(_SHORT.unpack(take(_SHORT.size))[0]).decode("utf-8")
        files[name] = take(LENGTH.unpack(take(LENGTH.size))[0])
    if offset != len(view):
        raise ValueError("the request has bytes after its last file")
    return path, files


def resolve(path: str) -> Callable[[Input], object]:
    """
    The function named by C{path} ("module:qualname"), imported.
    """
    module_name, _, qualname = path.partition(":")
    found: object = import_module(module_name)
    for name in qualname.split("."):
        found = getattr(found, name)
    if not callable(found):
        raise TypeError(f"{path} is not callable")
    return found


class _OverBudget(BaseException):
    """
    The parse used up its CPU seconds (SIGXCPU).  A BaseException, so that
    a parse's C{except Exception} does not swallow it.
    """


class _Budget:
    """
    The CPU limit of one parse at a time.
    """

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.active = False
        signal.signal(signal.SIGXCPU, self._over)

    def _over(self, signum: int, frame: FrameType | None) -> None:
        # The kernel repeats SIGXCPU every second past the soft limit; one
        # that arrives between parses is ignored.
        if self.active:
            self.active = False
            raise _OverBudget()

    def start(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + self.seconds)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        self.active = True

    def stop(self) -> None:
        self.active = False
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


def answer(
    message: bytes,
    functions: dict[str, Callable[[Input], object]],
    budget: _Budget,
    address_space: int,
) -> bytes:
    """
    The reply to one request.
    """
    try:
        path, data = decode_request(message)
    except (ValueError, UnicodeDecodeError) as e:
        return CRASH + f"a malformed request ({e})".encode()
    try:
        parse = functions.get(path) or functions.setdefault(path, resolve(path))
    except Exception as e:
        return CRASH + f"cannot import {path}: {describe_crash(e, text=True)}".encode()
    value: object = _NOTHING
    try:
        try:
            budget.start()
            value = parse(data)
        finally:
            budget.stop()
        pickled = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except ConfigError as e:
        return ERROR + e.to_json()
    except _OverBudget:
        return (
            LIMIT
            + (
                f"parsing it took more than {budget.seconds} s of CPU, "
                "the parser process's limit"
            ).encode()
        )
    except MemoryError:
        return (
            LIMIT
            + (
                f"parsing it needed more than {address_space // 2**20} MiB of "
                "memory, the parser process's limit"
            ).encode()
        )
    except BaseException as e:
        if value is _NOTHING:
            return CRASH + describe_crash(e).encode("utf-8", "replace")
        return CRASH + f"the value it returned cannot be pickled ({e})".encode(
            "utf-8", "replace"
        )
    if 1 + len(pickled) > MAX_MESSAGE:
        return (
            CRASH
            + (
                f"the value it returned is {len(pickled)} bytes pickled, more than "
                f"the parser process sends ({MAX_MESSAGE - 1})"
            ).encode()
        )
    return VALUE + pickled


def _read(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def serve(
    requests: BinaryIO, replies: BinaryIO, budget: _Budget, address_space: int
) -> None:
    """
    Answer each request on C{requests} on C{replies}, until C{requests}
    ends.
    """
    functions: dict[str, Callable[[Input], object]] = {}
    while True:
        header = _read(requests, LENGTH.size)
        if header is None:
            return
        (length,) = LENGTH.unpack(header)
        if length > MAX_MESSAGE:
            return
        message = _read(requests, length)
        if message is None:
            return
        reply = answer(message, functions, budget, address_space)
        replies.write(LENGTH.pack(len(reply)) + reply)
        replies.flush()


def main(argv: list[str]) -> None:
    """
    Serve requests from stdin to stdout: C{argv} is the address space
    limit in bytes and the CPU seconds per parse, then the modules to
    import before the first request.
    """
    # Signals to the process group (a terminal's Ctrl-C, timeout's
    # SIGTERM, a reload's SIGHUP) are for the server; the child ends when
    # the server closes its input.
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    address_space, cpu_seconds = (int(arg) for arg in argv[:2])
    # The protocol keeps the real stdin and stdout; whatever a parse reads
    # or prints goes to /dev/null or stderr, which the server logs.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        address_space = min(address_space, hard)
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    for entry in argv[2:]:
        # Imported now, while the server does not wait on it: the first
        # parse is then as quick as any other.  "module:name" looks the
        # name up too, for a package that loads its parts on first use.  A
        # module that cannot be imported is reported by the parse that
        # needs it.
        module, _, name = entry.partition(":")
        try:
            loaded = import_module(module)
            if name:
                getattr(loaded, name)
        except Exception:
            pass
    serve(requests, replies, _Budget(cpu_seconds), address_space)
