"""
C{python -m featureflags.check [--manifest] FILE...}: the flags files, or
the ConfigMaps holding them, checked with the parser the app runs.
"""

from __future__ import annotations

import sys

from featureflags.schema import parse_flags
from twisted_demo.live import check_main

if __name__ == "__main__":
    sys.exit(
        check_main(
            parse_flags, sys.argv[1:], prog="featureflags.check", key="flags.yaml"
        )
    )
