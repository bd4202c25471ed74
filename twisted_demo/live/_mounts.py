"""
Files that can never be updated in place: a file that is a mount point of
its own, as a ConfigMap or Secret key mounted with C{subPath} is.  The
kubelet updates a volume by swapping its C{..data} symlink, which such a
mount does not follow (kubernetes/kubernetes#50345), so the file keeps the
content it had when the container started.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["MOUNTINFO", "mount_points", "never_updated"]

#: The mount table of this process's mount namespace.
MOUNTINFO = "/proc/self/mountinfo"

# The kernel writes a space, tab, newline and backslash in a mount point as
# an octal escape.
_ESCAPE = re.compile(r"\\([0-7]{3})")


def mount_points(mountinfo: str) -> frozenset[str]:
    """
    The mount points in C{mountinfo}, the text of a C{/proc/PID/mountinfo}
    file (its fifth field), unescaped.
    """
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return frozenset(points)


def _is_own_mount(path: str, points: frozenset[str]) -> bool:
    directory, name = os.path.split(path)
    # The directory's real path, as the mount table names it; the file's
    # own name is kept, since it may be a symlink into ..data.
    where = os.path.join(os.path.realpath(directory), name)
    if where in points:
        return True
    try:
        # A mount from another file system, where no mount table is read.
        return os.lstat(path).st_dev != os.stat(directory).st_dev
    except OSError:
        return False


def never_updated(paths: Iterable[str], mountinfo: str = MOUNTINFO) -> str | None:
    """
    Why the files C{paths} will never be seen to change, with the fix, in
    one sentence; or L{None} when none of them is a mount point of its own.
    The mount table is read from C{mountinfo}; without one, a file on
    another device than its directory still counts.
    """
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as table:
            points = mount_points(table.read())
    except OSError:
        points = frozenset()
    mounted = [path for path in paths if _is_own_mount(path, points)]
    if not mounted:
        return None
    them = ", ".join(mounted)
    it_is = (
        "is a mount point of its own"
        if len(mounted) == 1
        else ("are mount points of their own")
    )
    return (
        f"{them} {it_is} (a subPath mount?): the kubelet never "
        "updates such a file, so changes to its ConfigMap or Secret will not "
        "be seen until the container restarts. Mount the volume as a "
        "directory, without subPath, and point at the file in it "
        "(kubernetes/kubernetes#50345)"
    )
