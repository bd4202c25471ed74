"""
How many connections the server may hold open at once, from the memory and
the file descriptors the process may use: the arithmetic in pure functions,
and one function that reads the limits (the container's cgroup, then
C{RLIMIT_NOFILE}).

The costs are measured by C{python -m bench} (the C{B6c} row: bytes per idle
connection, plain and TLS, and the process tree's memory).
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

#: The server process at rest, before its first connection: Python 3.11,
#: Twisted, Klein, the metrics and pyOpenSSL (measured 57 to 59 MiB VmRSS).
BASELINE = 60 * 2**20

#: The share of the config's parser process (measured 13.5 MiB at rest),
#: and of the certificate pair's, which loads C{cryptography} (29.5 MiB).
PARSER_SHARE = 16 * 2**20
PAIR_PARSER_SHARE = 32 * 2**20

#: Bytes one idle connection costs the server, with some room: measured
#: 4.0 KB plain and 33.8 KB over TLS (OpenSSL's buffers held), B6c.
PLAIN_CONNECTION = 4608
TLS_CONNECTION = 36 * 1024

#: The fewest connections any budget allows.
MIN_CONNECTIONS = 16


def parser_shares(*, tls: bool) -> int:
    """
    The memory the parser processes take from the budget: the config's, and
    the certificate pair's when serving HTTPS.
    """
    return PARSER_SHARE + (PAIR_PARSER_SHARE if tls else 0)


def connections_for(memory: int, *, tls: bool) -> int:
    """
    How many idle connections fit in C{memory} bytes beside the server's
    baseline and its parser processes, at least L{MIN_CONNECTIONS}.
    """
    room = memory - BASELINE - parser_shares(tls=tls)
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
    cgroup's limit, else L{DEFAULT_MEMORY}).
    """
    memory = cgroup_memory(root)
    return connections_for(DEFAULT_MEMORY if memory is None else memory, tls=tls)


def connection_limit(requested: int | None = None) -> int:
    """
    C{requested} connections, but never more than the file descriptor limit
    (C{RLIMIT_NOFILE}) allows, so that the server never runs out of them.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = max(1, descriptor_ceiling(soft))
    return ceiling if requested is None else min(requested, ceiling)
