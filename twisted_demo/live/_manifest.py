"""
Checking the ConfigMaps of Kubernetes manifests: each ConfigMap's value of
one key, as the service would read it from the mounted volume, with the
place of a failure translated to the manifest's line and column when the
value is a literal block scalar (C{key: |}), the one style whose lines are
the file's lines.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import yaml

from twisted_demo.live._check import (
    CheckFailed,
    CheckPassed,
    CheckResult,
    CheckSkipped,
    CheckSource,
    ManifestPlace,
    ParseFunction,
    name_of,
    parse_one,
    read_file,
)
from twisted_demo.live._errors import ConfigError, split_lines
from twisted_demo.live._reader import DEFAULT_MAX_BYTES, over_limit
from twisted_demo.live._yaml import FastSafeLoader, decode_utf8, yaml_error

__all__ = ["check_manifests"]

_STR_TAG = "tag:yaml.org,2002:str"
_STYLES = {
    None: "plain",
    "'": "single-quoted",
    '"': "double-quoted",
    "|": "literal",
    ">": "folded",
}


def check_manifests(
    parse: ParseFunction,
    files: Sequence[str],
    *,
    key: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    stdin: BinaryIO | None = None,
) -> list[CheckResult]:
    """
    Check the value of C{key} in every ConfigMap of the Kubernetes
    manifests in C{files} (C{-} is standard input), as the service would
    read it from the mounted volume.

    Each file may hold many YAML documents, and C{List} objects; documents
    of other kinds are passed over.  A ConfigMap without C{key} is
    L{CheckSkipped}.  If no ConfigMap in any of C{files} holds C{key}, that
    is a failure of its own: a renamed key or a wrong file must not pass.
    """
    results: list[CheckResult] = []
    for file in files:
        source = CheckSource(name_of(file))
        loaded = _load_manifest(file, source, stdin or sys.stdin.buffer)
        if isinstance(loaded, CheckFailed):
            results.append(loaded)
            continue
        text, documents = loaded
        lines = split_lines(text)
        for number, document in enumerate(documents, 1):
            for configmap in _configmaps(document):
                results.append(
                    _check_configmap(
                        parse, configmap, key, max_bytes, lines, source.file, number
                    )
                )
    checked = any(
        isinstance(r, CheckPassed | CheckFailed) and r.source.configmap is not None
        for r in results
    )
    if not checked and not any(isinstance(r, CheckFailed) for r in results):
        names = ", ".join(name_of(file) for file in files)
        results.append(
            CheckFailed(
                CheckSource(names), ConfigError(f"no ConfigMap holds the key {key}")
            )
        )
    return results


def _load_manifest(
    file: str, source: CheckSource, stdin: BinaryIO
) -> tuple[str, list[yaml.Node]] | CheckFailed:
    """
    The text of manifest C{file} and its YAML documents, composed into
    nodes; or why it cannot be read, located by the rules of L{parse_yaml}.
    """
    try:
        raw = read_file(file, None, stdin)
    except ConfigError as e:
        return CheckFailed(source, e)
    try:
        text = decode_utf8(raw)
        return text, list(yaml.compose_all(text, Loader=FastSafeLoader))
    except yaml.YAMLError as e:
        error = yaml_error(e, raw, text)
    except ConfigError as e:
        error = e
    return CheckFailed(
        source,
        ConfigError(
            f"not a valid manifest: {error.problem}",
            line=error.line,
            column=error.column,
        ),
    )


def _field(node: yaml.Node, name: str) -> list[tuple[yaml.Node, yaml.Node]]:
    """
    The (key, value) node pairs of mapping C{node} whose key is C{name}.
    """
    if not isinstance(node, yaml.MappingNode):
        return []
    return [
        (k, v)
        for k, v in node.value
        if isinstance(k, yaml.ScalarNode) and k.value == name
    ]


def _scalar(node: yaml.Node, name: str) -> str | None:
    values = [v.value for _, v in _field(node, name) if isinstance(v, yaml.ScalarNode)]
    return values[-1] if values else None


def _configmaps(node: yaml.Node) -> Iterator[yaml.MappingNode]:
    """
    The ConfigMaps in one document: itself, or the items of a C{List}.
    """
    kind = _scalar(node, "kind")
    if kind == "ConfigMap" and _scalar(node, "apiVersion") == "v1":
        assert isinstance(node, yaml.MappingNode)
        yield node
    elif kind is not None and kind.endswith("List"):
        for _, items in _field(node, "items"):
            if isinstance(items, yaml.SequenceNode):
                for item in items.value:
                    yield from _configmaps(item)


def _check_configmap(
    parse: ParseFunction,
    configmap: yaml.MappingNode,
    key: str,
    max_bytes: int,
    lines: list[str],
    file: str,
    document: int,
) -> CheckResult:
    metadata = [v for _, v in _field(configmap, "metadata")]
    name = _scalar(metadata[-1], "name") if metadata else None
    namespace = _scalar(metadata[-1], "namespace") if metadata else None
    qualified = name or "(unnamed)"
    if namespace:
        qualified = f"{namespace}/{qualified}"
    source = CheckSource(file, qualified, key, document)
    entries = [
        (section, k, v)
        for section in ("data", "binaryData")
        for _, mapping in _field(configmap, section)
        for k, v in _field(mapping, key)
    ]
    if not entries:
        return CheckSkipped(source, "no such key in data or binaryData")
    section, key_node, value = entries[-1]
    if len(entries) > 1:
        where = " and ".join(str(_start(k).line) for _, k, _ in entries)
        return CheckFailed(
            source,
            ConfigError(
                f"the key appears more than once in the manifest (lines {where})"
            ),
            _start(value),
        )
    if not isinstance(value, yaml.ScalarNode) or (
        section == "data" and value.tag != _STR_TAG
    ):
        return CheckFailed(
            source,
            ConfigError(f"the value in {section} is not a string"),
            _start(value),
        )
    if section == "binaryData":
        try:
            raw = base64.b64decode("".join(value.value.split()), validate=True)
        except binascii.Error:
            return CheckFailed(
                source,
                ConfigError("the value in binaryData is not base64"),
                _start(value),
            )
    else:
        raw = value.value.encode("utf-8", "surrogatepass")
    result = (
        CheckFailed(source, over_limit(max_bytes))
        if len(raw) > max_bytes
        else parse_one(parse, raw, source)
    )
    if isinstance(result, CheckPassed):
        return result
    error = result.error
    at = _in_manifest(section, key_node, value, lines, error.line, error.column)
    return CheckFailed(source, error, at)


def _start(node: yaml.Node) -> ManifestPlace:
    style = _STYLES.get(getattr(node, "style", None), "plain")
    return ManifestPlace(
        node.start_mark.line + 1, node.start_mark.column + 1, False, style
    )


def _in_manifest(
    section: str,
    key: yaml.Node,
    value: yaml.ScalarNode,
    lines: list[str],
    line: int | None,
    column: int | None,
) -> ManifestPlace:
    """
    Where line C{line}, column C{column} of C{value} lies in the manifest;
    where C{value} starts when that cannot be said.
    """
    start = _start(value)
    if section == "binaryData":
        return ManifestPlace(start.line, start.column, False, "base64")
    if value.style != "|" or line is None or column is None:
        return start
    indent = _literal_indent(key, value, lines)
    if indent is None:
        return start
    # The header line (with the "|") is the value's line 0.
    return ManifestPlace(start.line + line, indent + column, True, start.style)


def _literal_indent(
    key: yaml.Node, value: yaml.ScalarNode, lines: list[str]
) -> int | None:
    """
    The indentation of literal block C{value}'s content in the manifest.
    """
    header = lines[value.start_mark.line][value.start_mark.column :]
    indicator = re.match(r"\|([1-9]?)[+-]?([1-9]?)", header)
    digits = indicator[1] + indicator[2] if indicator else ""
    if digits:
        # An explicit indentation counts from the mapping's own, which is
        # the key's column.
        return key.start_mark.column + int(digits)
    for text in lines[value.start_mark.line + 1 : value.end_mark.line + 1]:
        if text.strip(" "):
            return len(text) - len(text.lstrip(" "))
    return None
