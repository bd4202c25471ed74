"""What a running process holds, read from C{/proc}."""

from __future__ import annotations

import os
from pathlib import Path

from attrs import frozen


def process_tree(pid: int) -> list[int]:
    """C{pid} and its descendants (the server and its parser process)."""
    tree = [pid]
    for parent in tree:
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except FileNotFoundError:
                continue
            tree.extend(int(child) for child in children.split())
    return tree


@frozen
class Holdings:
    """
    Processes, open file descriptors, inotify watches and resident memory
    of a process and its descendants, with the resident memory of each.
    """

    processes: int
    fds: int
    inotify_watches: int
    rss_bytes: int
    rss_each: tuple[int, ...]


def holdings(pid: int) -> Holdings:
    """Read L{Holdings} for C{pid} and its descendants from C{/proc}."""
    fds = 0
    watches = 0
    rss_each = []
    tree = process_tree(pid)
    for member in tree:
        proc = Path(f"/proc/{member}")
        for fd in os.listdir(proc / "fd"):
            fds += 1
            try:
                info = (proc / "fdinfo" / fd).read_text()
            except FileNotFoundError:
                # Closed between listing and reading.
                continue
            watches += sum(
                1 for line in info.splitlines() if line.startswith("inotify wd:")
            )
        rss_each.append(rss_bytes(member))
    return Holdings(
        processes=len(tree),
        fds=fds,
        inotify_watches=watches,
        rss_bytes=sum(rss_each),
        rss_each=tuple(rss_each),
    )


def rss_bytes(pid: int) -> int:
    """Resident set size of C{pid}, from C{VmRSS} in C{/proc/PID/status}."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def private_bytes(pid: int) -> int:
    """
    The resident memory only C{pid} maps (its unique set size, from
    C{/proc/PID/smaps_rollup}): what it adds to its tree's memory beyond
    the pages it shares, such as the interpreter's, which are resident
    once whoever maps them.
    """
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


@frozen
class CpuTimes:
    """
    CPU the process and its descendants used, and time its main thread
    waited for a CPU.
    """

    used: float
    waited: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(used=self.used - other.used, waited=self.waited - other.waited)


def stat_fields(pid: int) -> list[str]:
    """
    The fields of C{/proc/PID/stat} after the command name (which is in
    parentheses and may hold spaces): the state is C{[0]}, the nice value
    C{[16]}.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _used(pid: int) -> float:
    """User and system time of C{pid} and of its children that have ended."""
    fields = stat_fields(pid)
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> CpuTimes:
    """
    User plus system time of C{pid} (all threads), of its children that
    have ended, and of its live descendants (C{/proc/PID/stat}); and the
    time its main thread spent runnable but not running
    (C{/proc/PID/schedstat}): the share of a run lost to other work.
    """
    used = _used(pid)
    for descendant in process_tree(pid)[1:]:
        try:
            used += _used(descendant)
        except FileNotFoundError:
            # Ended between listing and reading.
            continue
    try:
        waited = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        waited = 0.0
    return CpuTimes(used=used, waited=waited)
