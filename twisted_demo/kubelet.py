"""
C{python -m twisted_demo.kubelet DIRECTORY KEY=VALUE...}: update DIRECTORY
as the kubelet updates a mounted ConfigMap, for a demo without a cluster.

The keys given are the whole new ConfigMap, as in the kubelet's update: a
new timestamped directory holds them, C{..data} is renamed onto it, and the
previous one is removed (L{twisted_demo.testing.AtomicWriter}).  Each VALUE
is written as a line of text.  Prints the generation C{..data} now names.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted_demo.live import DATA_DIR_NAME
from twisted_demo.testing import AtomicWriter

_USAGE = "usage: python -m twisted_demo.kubelet DIRECTORY KEY=VALUE..."


def main(argv: Sequence[str]) -> int:
    """
    Run the command with C{argv} (without the program's name); return the
    exit status: 0, or 2 for a usage error.
    """
    if len(argv) < 2 or not all("=" in pair for pair in argv[1:]):
        print(_USAGE, file=sys.stderr)
        return 2
    payload: dict[str, bytes] = {}
    for pair in argv[1:]:
        key, _, value = pair.partition("=")
        payload[key] = value.rstrip("\n").encode("utf-8") + b"\n"
    generation = AtomicWriter(argv[0]).write(payload)
    print(f"{DATA_DIR_NAME} -> {generation}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
