"""
A second app's config schema, written as a user of C{twisted_demo.live}
would: two YAML files of one ConfigMap, which must agree on their C{serial}.
A module of its own, so that the parser process can import C{parse_settings}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from attrs import frozen

from twisted_demo.live import ConfigError, parse_yaml


@frozen
class Settings:
    """
    The app's settings, and which process parsed them.
    """

    serial: int
    features: frozenset[str]
    rps: int
    parsed_by: int


def parse_settings(files: Mapping[str, bytes]) -> Settings:
    """
    C{features.yaml} and C{limits.yaml}, written together: a pair whose
    serials differ comes from two updates, and is refused.
    """
    features = parse_yaml(files["features.yaml"])
    limits = parse_yaml(files["limits.yaml"])
    if features.get("serial") != limits.get("serial"):
        raise ConfigError(
            f"features.yaml is serial {features.get('serial')}, "
            f"limits.yaml serial {limits.get('serial')}"
        )
    rps = limits.get("rps")
    if not isinstance(rps, int) or rps <= 0:
        raise ConfigError(
            f"limits.yaml: rps must be a whole number above 0, got {rps!r}"
        )
    return Settings(
        serial=features["serial"],
        features=frozenset(features.get("enabled", [])),
        rps=rps,
        parsed_by=os.getpid(),
    )


def payload(serial: int, rps: int = 100) -> dict[str, bytes]:
    """
    What the kubelet writes for update C{serial}.
    """
    return {
        "features.yaml": f"serial: {serial}\nenabled: [search, f{serial}]\n".encode(),
        "limits.yaml": f"serial: {serial}\nrps: {rps}\n".encode(),
    }
