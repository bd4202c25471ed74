"""
The immutable L{Config} value and the pure function that turns the bytes of
a config file into one, or into a L{ConfigError} a person can read.

Nothing here does I/O or touches the reactor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import yaml
from attrs import frozen

#: The largest config accepted by default: Kubernetes' limit on a ConfigMap.
DEFAULT_MAX_BYTES = 1024 * 1024

# libyaml's C loader when PyYAML was built with it; the pure-Python one is the
# same safe_load grammar, only slower.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    """
    A config file could not be used.  The text names the file and the reason
    (with line and column for YAML syntax errors) and is meant for people.
    """


@frozen
class Config:
    """
    One loaded version of the config file.

    @ivar message: The text served at C{GET /}.
    @ivar data: The whole parsed top-level mapping, read-only.
    @ivar sha256: Hex SHA-256 of the file's bytes.
    @ivar loaded_at: POSIX time at which this version was read.
    @ivar generation: The C{..data} target directory name when the file sits
        in a ConfigMap volume, else L{None}.
    @ivar source: The path the file was read from.
    """

    message: str
    data: Mapping[str, Any]
    sha256: str
    loaded_at: float
    generation: str | None
    source: str


def sha256_hex(raw: bytes) -> str:
    """
    The hex SHA-256 digest that identifies a version of a config file.
    """
    return hashlib.sha256(raw).hexdigest()


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        reason = e.problem or e.context or "invalid YAML"
        if mark is None:
            raise ConfigError(f"{source}: {reason}") from None
        raise ConfigError(
            f"{source} line {mark.line + 1}, column {mark.column + 1}: {reason}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None


def parse_config(
    raw: bytes,
    *,
    source: str,
    loaded_at: float,
    generation: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    sha256: str | None = None,
) -> Config:
    """
    Turn the bytes of a config file into a L{Config}.

    The document must be one YAML mapping, read with C{yaml.safe_load}
    semantics, whose C{message} is a string.

    @param sha256: The digest of C{raw} when the caller already has it.
    @raise ConfigError: For anything else, naming C{source} and the reason.
    """
    if len(raw) > max_bytes:
        raise ConfigError(
            f"{source}: file is {len(raw)} bytes, over the limit of {max_bytes}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not valid UTF-8 at byte {e.start}") from None
    document = _parse_yaml(text, source)
    if document is None:
        raise ConfigError(f"{source}: file is empty; expected a mapping")
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping, got {_describe(document)}"
        )
    if "message" not in document:
        raise ConfigError(f"{source}: 'message' is missing")
    message = document["message"]
    if not isinstance(message, str):
        raise ConfigError(
            f"{source}: 'message' must be a string, got {_describe(message)}"
        )
    return Config(
        message=message,
        data=MappingProxyType(document),
        sha256=sha256_hex(raw) if sha256 is None else sha256,
        loaded_at=loaded_at,
        generation=generation,
        source=source,
    )
