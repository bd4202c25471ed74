"""
How the memory the process tree may use is shared out between its parser
processes and the connections the server may hold open at once, and how
many file descriptors those need: the arithmetic in pure functions, and
the functions that read the limits (the container's cgroup, then
C{RLIMIT_NOFILE}).

The costs are measured by C{python -m bench} (the C{B6c} row: bytes per idle
connection, plain and TLS, and the process tree's memory).
"""

from __future__ import annotations

import resource
from pathlib import Path

from attrs import frozen

from twisted_demo.live import PARSER_MEMORY

#: File descriptors kept free for everything that is not a connection: the
#: listening sockets, the log, inotify, the parser processes' pipes, reading
#: the config.
FD_RESERVE = 64

#: The memory assumed where no cgroup limit is set: the limits of the
#: Deployment in C{deploy/}, and with its C{deploy/tls/} component.
DEFAULT_MEMORY = 144 * 2**20
DEFAULT_TLS_MEMORY = 208 * 2**20

#: The server process at rest, before its first connection: Python 3.11,
#: Twisted, Klein, the metrics and pyOpenSSL (measured 57 to 59 MiB VmRSS).
BASELINE = 60 * 2**20

#: The certificate pair's parser process's bound: its parse, which loads
#: C{cryptography}, peaks at 40 MiB of address space.
PAIR_PARSER_MEMORY = 48 * 2**20

#: Bytes one idle connection costs the server, with some room: measured
#: 2.8 to 4.5 KB plain and 31 to 37 KB over TLS (OpenSSL's state), B6c.
PLAIN_CONNECTION = 4608
TLS_CONNECTION = 40 * 1024

#: What a connection holds beyond that while its client leaves a response
#: unread: the transport's buffer, up to 64 KiB before it pauses the writer,
#: another 64 KiB slice of a large body, and Python's and the channel's
#: copies (measured at 166 to 190 KB with a 1 MB message).
UNREAD = 192 * 1024

#: The fewest connections any budget allows.
MIN_CONNECTIONS = 16


@frozen
class Budget:
    """
    How the memory of the process tree is shared out: the address space
    bounds of the parser processes (each holds less than its bound
    resident), and the connections the rest holds beside the server's
    baseline.

    @ivar parser_memory: The config's parser process's bound.
    @ivar pair_parser_memory: The certificate pair's, or 0 without HTTPS.
    @ivar connections: The most connections open at once.
    """

    parser_memory: int
    pair_parser_memory: int
    connections: int


def plan(memory: int, *, tls: bool) -> Budget:
    """
    Share C{memory} bytes out so that the server at rest, its parser
    processes at their bounds and a full set of idle connections add up to
    at most C{memory}: the parsers get their usual bounds (L{PARSER_MEMORY}
    for the config) while what is left holds L{MIN_CONNECTIONS}, and less
    where it would not; the connections get the rest.
    """
    each = connection_cost(tls=tls)
    pair = PAIR_PARSER_MEMORY if tls else 0
    left = memory - BASELINE - pair
    parser = max(0, min(PARSER_MEMORY, left - MIN_CONNECTIONS * each))
    connections = max(MIN_CONNECTIONS, (left - parser) // each)
    return Budget(parser, pair, connections)


def connection_cost(*, tls: bool) -> int:
    """
    What one idle connection costs, over TLS or not.
    """
    return TLS_CONNECTION if tls else PLAIN_CONNECTION


def descriptor_ceiling(soft_limit: int) -> int:
    """
    The most connections C{soft_limit} file descriptors allow, L{FD_RESERVE}
    kept free; 0 if there are too few to serve at all.
    """
    if soft_limit == resource.RLIM_INFINITY:
        return 1 << 20
    return max(0, soft_limit - FD_RESERVE)


def too_few_descriptors() -> str | None:
    """
    Why the process cannot serve with the file descriptors it may open
    (C{RLIMIT_NOFILE}), if it cannot: it needs L{FD_RESERVE} and one for a
    connection.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if descriptor_ceiling(soft) > 0:
        return None
    return (
        f"only {soft} file descriptors may be open (RLIMIT_NOFILE, ulimit -n): "
        f"at least {FD_RESERVE + 1} are needed"
    )


def cgroup_memory(root: Path = Path("/")) -> int | None:
    """
    The memory limit of the cgroup this process is in, in bytes, or None
    where there is none: cgroup v2's C{memory.max}, else v1's
    C{memory.limit_in_bytes}.  C{root} is where C{/proc} and C{/sys} are
    found (tests give a fake tree).
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            found = _limit(root / "sys/fs/cgroup", path, "memory.max")
        elif "memory" in controllers.split(","):
            found = _limit(root / "sys/fs/cgroup/memory", path, "memory.limit_in_bytes")
        else:
            continue
        if found is not None:
            return found
    return None


def _limit(mount: Path, path: str, name: str) -> int | None:
    """
    The lowest limit C{name} holds from the cgroup at C{path} up to the
    root (a container often sees its own cgroup as the root).
    """
    limits = []
    directory = mount / path.lstrip("/")
    while True:
        try:
            text = (directory / name).read_text().strip()
        except OSError:
            text = "max"
        # v1 writes "no limit" as a page-rounded huge number.
        if text != "max" and int(text) < 1 << 62:
            limits.append(int(text))
        if directory == mount or mount not in directory.parents:
            break
        directory = directory.parent
    return min(limits) if limits else None


def default_plan(*, tls: bool, root: Path = Path("/")) -> Budget:
    """
    The budget of this process: L{plan} of its cgroup's memory limit, else
    of the Deployment's (L{DEFAULT_MEMORY}, L{DEFAULT_TLS_MEMORY}).
    """
    memory = cgroup_memory(root)
    if memory is None:
        memory = DEFAULT_TLS_MEMORY if tls else DEFAULT_MEMORY
    return plan(memory, tls=tls)


def connection_limit(requested: int | None = None) -> int:
    """
    C{requested} connections, but never more than the file descriptor limit
    (C{RLIMIT_NOFILE}) allows, so that the server never runs out of them.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = max(1, descriptor_ceiling(soft))
    return ceiling if requested is None else min(requested, ceiling)
