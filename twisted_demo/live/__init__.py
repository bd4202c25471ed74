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
config is applied, is one call of L{check_main}; an admission webhook that
makes the API server refuse a broken ConfigMap, one L{AdmissionWebhook}.

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
        CheckFailed,
        CheckPassed,
        CheckResult,
        CheckSkipped,
        CheckSource,
        FileSet,
        ManifestPlace,
        check_file_set,
        check_files,
    )
    from twisted_demo.live._child import PARSER_MEMORY
    from twisted_demo.live._command import FileSetOptions, check_main
    from twisted_demo.live._log import LOG_BURST, LOG_INTERVAL, Allowance
    from twisted_demo.live._manifest import check_manifests
    from twisted_demo.live._metrics import (
        LiveConfigMetrics,
        ReloadCounter,
        WebhookMetrics,
        shown_path,
    )
    from twisted_demo.live._reader import (
        DATA_DIR_NAME,
        DEFAULT_MAX_BYTES,
        positive_integer,
    )
    from twisted_demo.live._runner import In, Runner, inline
    from twisted_demo.live._service import LiveConfigService
    from twisted_demo.live._types import Failed, Loaded, Outcome, Unchanged, Updated
    from twisted_demo.live._webhook import AdmissionWebhook, check_configmap
    from twisted_demo.live._yaml import describe_value, parse_yaml

__all__ = [
    "DATA_DIR_NAME",
    "DEFAULT_MAX_BYTES",
    "LOG_BURST",
    "LOG_INTERVAL",
    "PARSER_MEMORY",
    "AdmissionWebhook",
    "Allowance",
    "CheckFailed",
    "CheckPassed",
    "CheckResult",
    "CheckSkipped",
    "CheckSource",
    "ConfigError",
    "Failed",
    "FileSet",
    "FileSetOptions",
    "In",
    "LiveConfigMetrics",
    "LiveConfigService",
    "Loaded",
    "ManifestPlace",
    "Outcome",
    "ParseCrashed",
    "ReloadCounter",
    "Runner",
    "Unchanged",
    "Updated",
    "WebhookMetrics",
    "check_configmap",
    "check_file_set",
    "check_files",
    "check_main",
    "check_manifests",
    "describe_value",
    "inline",
    "parse_yaml",
    "positive_integer",
    "shown_path",
]

_LAZY = {
    "AdmissionWebhook": "_webhook",
    "DATA_DIR_NAME": "_reader",
    "LOG_BURST": "_log",
    "LOG_INTERVAL": "_log",
    "PARSER_MEMORY": "_child",
    "Allowance": "_log",
    "DEFAULT_MAX_BYTES": "_reader",
    "CheckFailed": "_check",
    "CheckPassed": "_check",
    "CheckResult": "_check",
    "CheckSkipped": "_check",
    "CheckSource": "_check",
    "Failed": "_types",
    "FileSet": "_check",
    "FileSetOptions": "_command",
    "In": "_runner",
    "LiveConfigMetrics": "_metrics",
    "LiveConfigService": "_service",
    "Loaded": "_types",
    "ManifestPlace": "_check",
    "Outcome": "_types",
    "ReloadCounter": "_metrics",
    "Runner": "_runner",
    "Unchanged": "_types",
    "Updated": "_types",
    "WebhookMetrics": "_metrics",
    "check_configmap": "_webhook",
    "check_file_set": "_check",
    "check_files": "_check",
    "check_main": "_command",
    "check_manifests": "_manifest",
    "describe_value": "_yaml",
    "inline": "_runner",
    "parse_yaml": "_yaml",
    "positive_integer": "_reader",
    "shown_path": "_metrics",
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
