"""
The flags file: a YAML mapping of flag names to C{true} or C{false}.  A
module of its own, so that the parser process imports only this.
"""

from __future__ import annotations

from twisted_demo.live import ConfigError, describe_value, parse_yaml


def parse_flags(data: bytes) -> dict[str, bool]:
    """
    Each flag and whether it is on; anything but a boolean is refused.
    """
    flags = parse_yaml(data)
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(
                f"flag {name!r} must be true or false, got {describe_value(value)}",
                key=name,
            )
    return flags
