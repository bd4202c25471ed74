"""
The demo's config schema: one YAML mapping whose C{message} is a string.
Only the message is kept; the rest of the file is allowed and ignored.
"""

from __future__ import annotations

from twisted_demo.live import ConfigError, parse_yaml

#: The largest config accepted by default: Kubernetes' limit on a ConfigMap.
DEFAULT_MAX_BYTES = 1024 * 1024

_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "a mapping",
}


def parse_message(data: bytes) -> str:
    """
    The C{message} of the config file C{data}.

    @raise ConfigError: When the file is not one YAML mapping (see
        L{parse_yaml}), or its C{message} is missing or not a string.
    """
    document = parse_yaml(data)
    if "message" not in document:
        raise ConfigError("'message' is missing")
    message = document["message"]
    if not isinstance(message, str):
        kind = _KINDS.get(type(message), f"a {type(message).__name__}")
        if message is None:
            kind = "null"
        raise ConfigError(f"'message' must be a string, got {kind}")
    return message
