"""
How many connections the server may hold open at once, from the memory and
the file descriptors the process may use: the arithmetic in pure functions,
and one function that reads the limits (the container's cgroup, then
C{RLIMIT_NOFILE}).

The costs are measured by C{python -m bench} (the C{B12} row: bytes per idle
connection, plain and TLS, and the server's baseline).
"""

from __future__ import annotations

import resource
from pathlib import Path

#: File descriptors kept free for everything that is not a connection: the
#: listening sockets, the log, inotify, the parser processes' pipes, reading
#: the config.
FD_RESERVE = 64

#: The memory assumed where no cgroup limit is set: the limit of the
#: Deployment in C{deploy/}.
DEFAULT_MEMORY = 128 * 2**20

#: The server process at rest, before its first connection (Python 3.11,
#: Twisted, Klein, the metrics), with room for a 1 MiB message served.
BASELINE = 40 * 2**20

#: A parser process's share: it rests at about 23 MiB with the demo's
#: strict loader; a reload of a valid 1 MiB config peaks higher, but one
#: at a time and only for the reload.
PARSER_SHARE = 24 * 2**20

#: Bytes one idle connection costs the server, with room: measured about
#: 3.8 KB plain and 28 KB over TLS (OpenSSL's buffers held).
PLAIN_CONNECTION = 6 * 1024
TLS_CONNECTION = 32 * 1024

#: The fewest connections any budget allows.
MIN_CONNECTIONS = 16


def connections_for(memory: int, *, tls: bool, parsers: int) -> int:
    """
    How many idle connections fit in C{memory} bytes beside the server's
    baseline and C{parsers} parser processes, at least L{MIN_CONNECTIONS}.
    """
    room = memory - BASELINE - parsers * PARSER_SHARE
    each = TLS_CONNECTION if tls else PLAIN_CONNECTION
    return max(MIN_CONNECTIONS, room // each)


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


def default_connections(*, tls: bool, root: Path = Path("/")) -> int:
    """
    The connection limit for this process: what its memory allows (its
    cgroup's limit, else L{DEFAULT_MEMORY}), with one parser process for
    the config and one more for a TLS pair.
    """
    memory = cgroup_memory(root)
    return connections_for(
        DEFAULT_MEMORY if memory is None else memory,
        tls=tls,
        parsers=2 if tls else 1,
    )


def connection_limit(requested: int | None = None) -> int:
    """
    C{requested} connections, but never more than the file descriptor limit
    (C{RLIMIT_NOFILE}) allows, so that the server never runs out of them.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = max(1, descriptor_ceiling(soft))
    return ceiling if requested is None else min(requested, ceiling)
