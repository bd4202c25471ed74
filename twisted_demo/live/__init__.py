"""
Live configuration for Twisted programs: follow a file, or a Kubernetes
ConfigMap or Secret volume, and swap in each valid new version atomically
on the reactor thread.

    from twisted_demo.live import ConfigError, LiveConfigService, parse_yaml

    def parse_flags(data: bytes) -> Flags:      # module level: it may run in
        doc = parse_yaml(data)                  # the parser process
        ...                                     # raise ConfigError to refuse

    flags = LiveConfigService("/etc/config/flags.yaml", parse_flags)
    flags.setServiceParent(application)
    flags.current.value                         # on the request path

A C{check} command for the same parse function, to run in CI before a
config is applied, is one call of L{check_main}.

Importing L{ConfigError} costs nothing, and L{parse_yaml} only PyYAML: the
other names are loaded when first used, so that a parse module run in the
parser process does not import Twisted.  See C{docs/library.md}.
"""

from __future__ import annotations

from importlib import import_module

from twisted_demo.live._errors import ConfigError, ParseCrashed

# Not typing's: importing typing would cost the parser process half a MiB.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from twisted_demo.live._check import (
        FileSet,
        FileSetOptions,
        check_file_set,
        check_files,
        check_main,
        check_manifests,
    )
    from twisted_demo.live._metrics import LiveConfigMetrics
    from twisted_demo.live._runner import In, Runner, inline
    from twisted_demo.live._service import LiveConfigService
    from twisted_demo.live._types import Failed, Loaded, Outcome, Unchanged, Updated
    from twisted_demo.live._yaml import parse_yaml

__all__ = [
    "ConfigError",
    "Failed",
    "FileSet",
    "FileSetOptions",
    "In",
    "LiveConfigMetrics",
    "LiveConfigService",
    "Loaded",
    "Outcome",
    "ParseCrashed",
    "Runner",
    "Unchanged",
    "Updated",
    "check_file_set",
    "check_files",
    "check_main",
    "check_manifests",
    "inline",
    "parse_yaml",
]

_LAZY = {
    "Failed": "_types",
    "FileSet": "_check",
    "FileSetOptions": "_check",
    "In": "_runner",
    "LiveConfigMetrics": "_metrics",
    "LiveConfigService": "_service",
    "Loaded": "_types",
    "Outcome": "_types",
    "Runner": "_runner",
    "Unchanged": "_types",
    "Updated": "_types",
    "check_file_set": "_check",
    "check_files": "_check",
    "check_main": "_check",
    "check_manifests": "_check",
    "inline": "_runner",
    "parse_yaml": "_yaml",
}


def __getattr__(name: str) -> Any:
    # PEP 562: each name is imported from its private module on first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
