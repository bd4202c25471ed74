"""What a running process holds, read from C{/proc}."""

from __future__ import annotations

import os
from pathlib import Path

from attrs import frozen


@frozen
class Holdings:
    """Open file descriptors, inotify watches and resident memory of a process."""

    fds: int
    inotify_watches: int
    rss_bytes: int


def holdings(pid: int) -> Holdings:
    """Read L{Holdings} for C{pid} from C{/proc/PID}."""
    proc = Path(f"/proc/{pid}")
    fds = 0
    watches = 0
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
    return Holdings(fds=fds, inotify_watches=watches, rss_bytes=rss_bytes(pid))


def rss_bytes(pid: int) -> int:
    """Resident set size of C{pid}, from C{VmRSS} in C{/proc/PID/status}."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@frozen
class CpuTimes:
    """CPU the whole process used, and time its main thread waited for a CPU."""

    used: float
    waited: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(used=self.used - other.used, waited=self.waited - other.waited)


def cpu_times(pid: int) -> CpuTimes:
    """
    User plus system time of C{pid} (all threads, C{/proc/PID/stat}) and
    the time its main thread spent runnable but not running
    (C{/proc/PID/schedstat}): the share of a run lost to other work.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    used = (int(fields[11]) + int(fields[12])) / ticks
    try:
        waited = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        waited = 0.0
    return CpuTimes(used=used, waited=waited)
