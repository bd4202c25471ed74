"""
The demo's config schema: one YAML mapping whose C{message} is a string.
Only the message is kept; the rest of the file is allowed and ignored.
"""

from __future__ import annotations

from twisted_demo.live import ConfigError

__all__ = ["CONFIG_KEY", "PARSE_IMPORTS", "parse_message"]

#: The ConfigMap key that deploy/ mounts as the service's config file.
CONFIG_KEY = "configmap-microservice-demo.yaml"


#: What L{parse_message} imports at its first call, for a parser process to
#: import as it starts (the C{preload} of the library's services).
PARSE_IMPORTS = ("twisted_demo.live:parse_yaml",)


def parse_message(data: bytes) -> str:
    """
    The C{message} of the config file C{data}.

    @raise ConfigError: When the file is not one YAML mapping (see
        L{parse_yaml}), or its C{message} is missing or not a string.
    """
    # Imported at the first parse, so that a process that only hands this
    # function to a parser process (the webhook's server) loads no YAML
    # parser.
    from twisted_demo.live import describe_value, parse_yaml

    document = parse_yaml(data)
    if "message" not in document:
        raise ConfigError("'message' is missing", key="message")
    message = document["message"]
    if not isinstance(message, str):
        raise ConfigError(
            f"'message' must be a string, got {describe_value(message)}",
            key="message",
        )
    return message
