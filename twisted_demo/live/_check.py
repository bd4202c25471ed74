"""
Checking config files before they go live: the same parse function the
service runs, applied to files on disk or to the ConfigMaps in Kubernetes
manifests, with one result per file or ConfigMap, as text or JSON.

It knows nothing of any one app: the app passes its parse function (bytes
in, a value or a L{ConfigError} out) and the ConfigMap key its config lives
in.  A L{ConfigError} whose text starts with C{line N, column M: } is
located; inside a manifest that place is translated to the manifest's line
and column when the value is a literal block scalar (C{key: |}), the one
style whose lines are the file's lines.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import BinaryIO, NoReturn, TextIO

import yaml
from attrs import frozen

from twisted_demo.live._errors import ConfigError
from twisted_demo.live._reader import DEFAULT_MAX_BYTES, open_regular

__all__ = [
    "CheckResult",
    "Failed",
    "FileSet",
    "FileSetOptions",
    "InManifest",
    "Passed",
    "Skipped",
    "Source",
    "check_file_set",
    "check_files",
    "check_main",
    "check_manifests",
    "format_json",
    "format_text",
]

#: What an app's parse function looks like: the bytes of its config file in,
#: the parsed value out, or L{ConfigError} to refuse them.
ParseFunction = Callable[[bytes], object]

#: The parse function of a config of several files: each file's bytes by
#: name in, as C{LiveConfigService(directory, parse, files=[...])} gives it.
FilesParseFunction = Callable[[Mapping[str, bytes]], object]

#: How standard input is named in results.
STDIN_NAME = "<stdin>"

_LOCATED = re.compile(r"line (\d+), column (\d+): ")
# The line breaks PyYAML counts in its marks.
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_STR_TAG = "tag:yaml.org,2002:str"
_STYLES = {
    None: "plain",
    "'": "single-quoted",
    '"': "double-quoted",
    "|": "literal",
    ">": "folded",
}


@frozen
class Source:
    """
    What was checked: a file, or one key of a ConfigMap in a manifest.

    @ivar file: The path as given, or L{STDIN_NAME}.
    @ivar configmap: The ConfigMap's C{namespace/name} (C{name} when it has
        no namespace), or L{None} for a plain file.
    @ivar key: The ConfigMap key, or L{None} for a plain file.
    @ivar document: The ConfigMap's YAML document in C{file}, from 1.
    @ivar files: For a config of several files, their names in the
        directory C{file}; else L{None}.
    """

    file: str
    configmap: str | None = None
    key: str | None = None
    document: int | None = None
    files: tuple[str, ...] | None = None


@frozen
class InManifest:
    """
    Where a failure lies in the manifest that holds the config.

    @ivar exact: C{True} when C{line} and C{column} are the error's own
        place (a literal block scalar); C{False} when they are where the
        value starts, because the manifest's lines are not the file's.
    @ivar style: How the value is written: C{literal}, C{folded}, C{plain},
        C{single-quoted}, C{double-quoted}, or C{base64} (C{binaryData}).
    """

    line: int
    column: int
    exact: bool
    style: str


@frozen
class Passed:
    """
    The parse function accepted this file.
    """

    source: Source


@frozen
class Failed:
    """
    This file, or this manifest, was refused.

    @ivar reason: One line, without the file's name.
    @ivar line: The line of the failure within the file, when known.
    @ivar column: Its column, when known.
    @ivar manifest: Where the failure lies in the manifest, for a ConfigMap.
    """

    source: Source
    reason: str
    line: int | None = None
    column: int | None = None
    manifest: InManifest | None = None


@frozen
class Skipped:
    """
    A ConfigMap that does not hold the key: not checked, and no failure.
    """

    source: Source
    reason: str


CheckResult = Passed | Failed | Skipped


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """
    The safe loader (libyaml's when available), used to compose manifests
    into nodes that know their line and column.
    """


def _read(file: str, max_bytes: int | None, stdin: BinaryIO) -> bytes:
    """
    The bytes of C{file} (C{-} for C{stdin}), refusing, as the service
    does, what is not a regular file and more than C{max_bytes}.

    @raise ConfigError: Naming the reason without the file.
    """
    limit = -1 if max_bytes is None else max_bytes + 1
    try:
        if file == "-":
            raw = stdin.read(limit)
        else:
            with open_regular(file) as f:
                raw = f.read(limit)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}") from None
    if max_bytes is not None:
        refuse_over(raw, max_bytes)
    return raw


def refuse_over(raw: bytes, max_bytes: int) -> None:
    """
    Refuse C{raw} when it is over C{max_bytes}, as the service does.

    @raise ConfigError: Naming the limit.
    """
    if len(raw) > max_bytes:
        raise ConfigError(f"file is over the limit of {max_bytes} bytes")


def _name(file: str) -> str:
    return STDIN_NAME if file == "-" else file


def located(source: Source, error: ConfigError) -> Failed:
    """
    The failure of C{source} that C{error} reports, with its line and
    column when its text starts with them.
    """
    reason = str(error)
    place = _LOCATED.match(reason)
    if place is None:
        return Failed(source, reason)
    return Failed(source, reason, int(place[1]), int(place[2]))


def _parse(parse: ParseFunction, raw: bytes, source: Source) -> Passed | Failed:
    try:
        parse(raw)
    except ConfigError as e:
        return located(source, e)
    return Passed(source)


def check_files(
    parse: ParseFunction,
    files: Sequence[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    stdin: BinaryIO | None = None,
) -> list[CheckResult]:
    """
    Check each of C{files} (C{-} is standard input) with C{parse}, reading
    each as the service would: a regular file of at most C{max_bytes}.
    """
    results: list[CheckResult] = []
    for file in files:
        source = Source(_name(file))
        try:
            raw = _read(file, max_bytes, stdin or sys.stdin.buffer)
        except ConfigError as e:
            results.append(Failed(source, str(e)))
            continue
        results.append(_parse(parse, raw, source))
    return results


@frozen
class FileSet:
    """
    A config of several files of one directory, checked together as the
    service reads them with C{LiveConfigService(directory, parse,
    files=names)}: a certificate and its key, say.
    """

    directory: str
    names: tuple[str, ...]
    parse: FilesParseFunction


def check_file_set(
    files: FileSet, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> CheckResult:
    """
    Read each of C{files} as the service would (a regular file of at most
    C{max_bytes}) and check them together with their parse function.
    """
    source = Source(files.directory, files=files.names)
    contents: dict[str, bytes] = {}
    for name in files.names:
        path = os.path.join(files.directory, name)
        try:
            contents[name] = _read(path, max_bytes, sys.stdin.buffer)
        except ConfigError as e:
            return Failed(source, f"{name}: {e}")
    try:
        files.parse(contents)
    except ConfigError as e:
        return Failed(source, str(e))
    return Passed(source)


@frozen
class FileSetOptions:
    """
    Options of L{check_main} that name the files of a L{FileSet}, one
    option per file, such as C{--tls-cert} and C{--tls-key}.

    @ivar options: The options, e.g. C{("--tls-cert", "--tls-key")}.
    @ivar help: Each option's help, in the same order.
    @ivar resolve: Given each option's value in that order (L{None} where
        it was not given), the L{FileSet} to check, or L{None} when none
        was given; a L{ValueError} whose text is one line is a usage error.
    @ivar max_bytes: The largest file accepted, as the service reads them.
    """

    options: tuple[str, ...]
    help: tuple[str, ...]
    resolve: Callable[[Sequence[str | None]], FileSet | None]
    max_bytes: int = DEFAULT_MAX_BYTES


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
    L{Skipped}.  If no ConfigMap in any of C{files} holds C{key}, that is a
    failure of its own: a renamed key or a wrong file must not pass.
    """
    results: list[CheckResult] = []
    for file in files:
        source = Source(_name(file))
        loaded = _load_manifest(file, source, stdin or sys.stdin.buffer)
        if isinstance(loaded, Failed):
            results.append(loaded)
            continue
        text, documents = loaded
        lines = _LINE_BREAK.split(text)
        for number, document in enumerate(documents, 1):
            for configmap in _configmaps(document):
                results.append(
                    _check_configmap(
                        parse, configmap, key, max_bytes, lines, source.file, number
                    )
                )
    checked = any(
        isinstance(r, Passed | Failed) and r.source.configmap is not None
        for r in results
    )
    if not checked and not any(isinstance(r, Failed) for r in results):
        names = ", ".join(_name(file) for file in files)
        results.append(Failed(Source(names), f"no ConfigMap holds the key {key}"))
    return results


def _load_manifest(
    file: str, source: Source, stdin: BinaryIO
) -> tuple[str, list[yaml.Node]] | Failed:
    """
    The text of manifest C{file} and its YAML documents, composed into
    nodes; or why it cannot be read.
    """
    try:
        text = _read(file, None, stdin).decode("utf-8")
        return text, list(yaml.compose_all(text, Loader=_Loader))
    except ConfigError as e:
        return Failed(source, str(e))
    except UnicodeDecodeError as e:
        return Failed(source, f"not a valid manifest: not UTF-8 at byte {e.start}")
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = (e.problem or e.context or "invalid YAML").strip()
        if mark is None:
            return Failed(source, f"not a valid manifest: {problem}")
        line, column = mark.line + 1, mark.column + 1
        return Failed(
            source,
            f"not a valid manifest: line {line}, column {column}: {problem}",
            line,
            column,
        )
    except yaml.reader.ReaderError as e:
        # libyaml gives the offset into the UTF-8 bytes.
        before = text.encode("utf-8")[: e.position]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        return Failed(
            source,
            f"not a valid manifest: line {line}, column {column}: unacceptable "
            f"character #x{e.character:04x}: {e.reason}",
            line,
            column,
        )
    except yaml.YAMLError as e:
        return Failed(source, f"not a valid manifest: {str(e).splitlines()[0]}")


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
    source = Source(file, qualified, key, document)
    entries = [
        (section, k, v)
        for section in ("data", "binaryData")
        for _, mapping in _field(configmap, section)
        for k, v in _field(mapping, key)
    ]
    if not entries:
        return Skipped(source, "no such key in data or binaryData")
    section, key_node, value = entries[-1]
    if len(entries) > 1:
        where = " and ".join(str(_start(k).line) for _, k, _ in entries)
        return Failed(
            source,
            f"the key appears more than once in the manifest (lines {where})",
            manifest=_start(value),
        )
    if not isinstance(value, yaml.ScalarNode) or (
        section == "data" and value.tag != _STR_TAG
    ):
        return Failed(
            source, f"the value in {section} is not a string", manifest=_start(value)
        )
    if section == "binaryData":
        try:
            raw = base64.b64decode("".join(value.value.split()), validate=True)
        except binascii.Error:
            return Failed(
                source, "the value in binaryData is not base64", manifest=_start(value)
            )
    else:
        raw = value.value.encode("utf-8", "surrogatepass")
    try:
        refuse_over(raw, max_bytes)
    except ConfigError as e:
        result: Passed | Failed = Failed(source, str(e))
    else:
        result = _parse(parse, raw, source)
    if isinstance(result, Passed):
        return result
    return Failed(
        result.source,
        result.reason,
        result.line,
        result.column,
        _in_manifest(section, key_node, value, lines, result.line, result.column),
    )


def _start(node: yaml.Node) -> InManifest:
    style = _STYLES.get(getattr(node, "style", None), "plain")
    return InManifest(
        node.start_mark.line + 1, node.start_mark.column + 1, False, style
    )


def _in_manifest(
    section: str,
    key: yaml.Node,
    value: yaml.ScalarNode,
    lines: list[str],
    line: int | None,
    column: int | None,
) -> InManifest:
    """
    Where line C{line}, column C{column} of C{value} lies in the manifest;
    where C{value} starts when that cannot be said.
    """
    start = _start(value)
    if section == "binaryData":
        return InManifest(start.line, start.column, False, "base64")
    if value.style != "|" or line is None or column is None:
        return start
    indent = _literal_indent(key, value, lines)
    if indent is None:
        return start
    # The header line (with the "|") is the value's line 0.
    return InManifest(start.line + line, indent + column, True, start.style)


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


# -- output -------------------------------------------------------------------


def _where(source: Source) -> str:
    if source.files is not None:
        return os.path.join(source.file, "{" + ",".join(source.files) + "}")
    if source.configmap is None:
        return source.file
    return f"{source.file}: ConfigMap {source.configmap}, key {source.key}"


def _in_manifest_text(at: InManifest) -> str:
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
            case Passed(source):
                out.append(f"OK      {_where(source)}")
            case Failed(source, reason, manifest=at):
                suffix = "" if at is None else _in_manifest_text(at)
                out.append(f"FAILED  {_where(source)}: {reason}{suffix}")
            case Skipped(source, reason):
                out.append(f"SKIPPED {_where(source)}: {reason}")
    return "".join(line + "\n" for line in out)


def _as_json(result: CheckResult) -> dict[str, object]:
    reason: str | None = None
    line: int | None = None
    column: int | None = None
    at: InManifest | None = None
    match result:
        case Passed():
            status = "ok"
        case Failed(_, reason, line, column, at):
            status = "failed"
        case Skipped(_, reason):
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
        "ok": not any(isinstance(r, Failed) for r in results),
        "results": [_as_json(r) for r in results],
    }
    return json.dumps(document, indent=2) + "\n"


# -- the command --------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _whole_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of bytes, got {value!r}"
        ) from None
    if number <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes above 0, got {value!r}"
        )
    return number


def _argument_parser(
    prog: str, key: str, max_bytes: int, file_sets: Sequence[FileSetOptions]
) -> _Parser:
    parser = _Parser(
        prog=prog,
        add_help=False,
        description=(
            "Check config files, or the ConfigMaps in Kubernetes manifests, "
            "with the parser the service uses.  Prints one line per file or "
            "ConfigMap; exits 0 when all pass, 1 when any fails, 2 on a "
            "usage error."
        ),
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="- reads stdin")
    parser.add_argument(
        "--manifest",
        action="store_true",
        help="FILEs are Kubernetes YAML (a ConfigMap, a List, or the many "
        "documents of `kubectl kustomize`); check each ConfigMap's --key",
    )
    parser.add_argument("--key", help=f"the ConfigMap key to check (default: {key})")
    parser.add_argument(
        "--max-bytes",
        type=_whole_number,
        default=max_bytes,
        metavar="N",
        help=f"largest config accepted, in bytes (default: {max_bytes})",
    )
    parser.add_argument(
        "--format", choices=["text", "json"], default="text", help="default: text"
    )
    for number, file_set in enumerate(file_sets):
        for option, text in zip(file_set.options, file_set.help, strict=True):
            parser.add_argument(
                option, dest=_dest(number, option), metavar="PATH", help=text
            )
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    return parser


def _dest(number: int, option: str) -> str:
    return f"file_set_{number}_{option}"


def _file_sets(
    file_sets: Sequence[FileSetOptions], args: argparse.Namespace
) -> list[tuple[FileSet, FileSetOptions]]:
    """
    The file sets named on the command line, with the options naming each.

    @raise _UsageError: When one's options do not name one set.
    """
    named = []
    for number, options in enumerate(file_sets):
        values = [getattr(args, _dest(number, o)) for o in options.options]
        try:
            files = options.resolve(values)
        except ValueError as e:
            raise _UsageError(str(e)) from None
        if files is not None:
            named.append((files, options))
    return named


def check_main(
    parse: ParseFunction,
    argv: Sequence[str],
    *,
    prog: str,
    key: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    file_sets: Sequence[FileSetOptions] = (),
) -> int:
    """
    Run the C{check} command on C{argv} (the arguments after its name) for
    an app whose config is parsed by C{parse} and kept in ConfigMaps under
    C{key}.

    @param prog: How the command is invoked, for its usage and errors.
    @param file_sets: Options naming configs of several files the app
        also reads, each checked with its own parse function.
    @return: The exit status: 0 when everything passed, 1 when anything
        failed, 2 for a usage error (reported in one line on C{stderr}).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = _argument_parser(prog, key, max_bytes, file_sets)
    try:
        args = parser.parse_args(argv)
        if args.help:
            stdout.write(parser.format_help())
            return 0
        sets = _file_sets(file_sets, args)
        if not args.files and (args.manifest or not sets):
            raise _UsageError("no FILE given; use - for standard input")
        if args.key is not None and not args.manifest:
            raise _UsageError("--key applies only with --manifest")
        if args.files.count("-") > 1:
            raise _UsageError("- (standard input) can be given only once")
    except _UsageError as e:
        stderr.write(f"{prog}: error: {e} (see --help)\n")
        return 2
    if args.manifest:
        results = check_manifests(
            parse,
            args.files,
            key=args.key or key,
            max_bytes=args.max_bytes,
            stdin=stdin,
        )
    else:
        results = check_files(parse, args.files, max_bytes=args.max_bytes, stdin=stdin)
    for files, options in sets:
        results.append(check_file_set(files, max_bytes=options.max_bytes))
    output = format_json if args.format == "json" else format_text
    stdout.write(output(results))
    return 1 if any(isinstance(r, Failed) for r in results) else 0
