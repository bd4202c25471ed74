"""
The results of a check as people and programs read them: one line per
result, or one JSON document.  Both are rendered from the results' fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from twisted_demo.live._check import (
    CheckFailed,
    CheckPassed,
    CheckResult,
    CheckSkipped,
    ManifestPlace,
)

__all__ = ["format_json", "format_text"]


def _where(result: CheckResult) -> str:
    source = result.source
    if source.files is not None:
        return os.path.join(source.file, "{" + ",".join(source.files) + "}")
    if source.configmap is None:
        return source.file
    return f"{source.file}: ConfigMap {source.configmap}, key {source.key}"


def _in_manifest_text(at: ManifestPlace) -> str:
    if at.exact:
        return f" (manifest line {at.line}, column {at.column})"
    return f" (in the manifest: {at.style} value at line {at.line}, column {at.column})"


def format_text(results: Sequence[CheckResult]) -> str:
    """
    One line per result, C{OK}, C{FAILED} or C{SKIPPED}, naming the file,
    the ConfigMap and key, and the reason.
    """
    out: list[str] = []
    for result in results:
        match result:
            case CheckPassed():
                out.append(f"OK      {_where(result)}")
            case CheckFailed(error=error, manifest=at):
                suffix = "" if at is None else _in_manifest_text(at)
                out.append(f"FAILED  {_where(result)}: {error}{suffix}")
            case CheckSkipped(reason=reason):
                out.append(f"SKIPPED {_where(result)}: {reason}")
    return "".join(line + "\n" for line in out)


def _as_json(result: CheckResult) -> dict[str, object]:
    reason: str | None = None
    fields: dict[str, object] | None = None
    line: int | None = None
    column: int | None = None
    at: ManifestPlace | None = None
    match result:
        case CheckPassed():
            status = "ok"
        case CheckFailed(_, error, at):
            status = "failed"
            reason, fields = str(error), error.as_dict()
            line, column = error.line, error.column
        case CheckSkipped(_, reason):
            status = "skipped"
    source = result.source
    return {
        "status": status,
        "file": source.file,
        "configmap": source.configmap,
        "key": source.key,
        "document": source.document,
        "files": None if source.files is None else list(source.files),
        "reason": reason,
        "line": line,
        "column": column,
        "error": fields,
        "manifest": None
        if at is None
        else {
            "line": at.line,
            "column": at.column,
            "exact": at.exact,
            "style": at.style,
        },
    }


def format_json(results: Sequence[CheckResult]) -> str:
    """
    The results as one JSON object: C{ok} (no failure) and C{results}.
    """
    document = {
        "ok": not any(isinstance(r, CheckFailed) for r in results),
        "results": [_as_json(r) for r in results],
    }
    return json.dumps(document, indent=2) + "\n"
