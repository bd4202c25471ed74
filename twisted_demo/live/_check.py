"""
Checking config files before they go live: the same parse function the
service runs, applied to files on disk, with one result per file.  The
results are values (L{CheckPassed}, L{CheckFailed}, L{CheckSkipped}); a
failure carries the L{ConfigError} with its fields.

The ConfigMaps of Kubernetes manifests are walked in L{_manifest}, the
results are rendered in L{_report}, and the command line is L{_command}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, BinaryIO

from attrs import frozen

from twisted_demo.live._errors import ConfigError, ParseCrashed, describe_crash
from twisted_demo.live._reader import DEFAULT_MAX_BYTES, open_regular, over_limit

__all__ = [
    "STDIN_NAME",
    "CheckFailed",
    "CheckPassed",
    "CheckResult",
    "CheckSkipped",
    "CheckSource",
    "FileSet",
    "ManifestPlace",
    "check_file_set",
    "check_files",
]

#: What an app's parse function looks like: the bytes of its config file in,
#: the parsed value out, or L{ConfigError} to refuse them.
ParseFunction = Callable[[bytes], object]

#: The parse function of a config of several files: each file's bytes by
#: name in, as C{LiveConfigService(directory, parse, files=[...])} gives it.
FilesParseFunction = Callable[[Mapping[str, bytes]], object]

#: How standard input is named in results.
STDIN_NAME = "<stdin>"


@frozen
class CheckSource:
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
class ManifestPlace:
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
class CheckPassed:
    """
    The parse function accepted this file.
    """

    source: CheckSource


@frozen
class CheckFailed:
    """
    This file, or this manifest, was refused.

    @ivar error: Why, with its fields: C{problem}, and C{line} and
        C{column} within the file when known.  It names no file: the
        source does.
    @ivar manifest: Where the failure lies in the manifest, for a ConfigMap.
    """

    source: CheckSource
    error: ConfigError
    manifest: ManifestPlace | None = None


@frozen
class CheckSkipped:
    """
    A ConfigMap that does not hold the key: not checked, and no failure.
    """

    source: CheckSource
    reason: str


#: The result of checking one file, ConfigMap or set of files.
CheckResult = CheckPassed | CheckFailed | CheckSkipped


def read_file(file: str, max_bytes: int | None, stdin: BinaryIO) -> bytes:
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
    if max_bytes is not None and len(raw) > max_bytes:
        raise over_limit(max_bytes)
    return raw


def name_of(file: str) -> str:
    """
    How C{file}, as given on the command line, is named in results.
    """
    return STDIN_NAME if file == "-" else file


def parse_one(
    parse: Callable[[bytes], object] | Callable[[Mapping[str, bytes]], object],
    data: bytes | Mapping[str, bytes],
    source: CheckSource,
) -> CheckPassed | CheckFailed:
    """
    C{parse(data)} as a result, parsed as a live service's default runner
    parses it: in a parser process with the default limits (L{Limits}), so
    that a file a running service would refuse for what parsing it costs
    fails the check too.  A parse function the parser process cannot
    import (a lambda, a nested function) runs in this process instead.  A
    parse function that crashes fails the check naming the exception's
    type and where it was raised, never its text (which may quote the
    file), and the files after it are still checked.
    """
    from twisted_demo.live._process import (
        ParserUnavailable,
        import_path,
        parse_in_child,
    )

    run: Callable[[Any], object] = partial(parse_in_child, parse)
    try:
        import_path(parse)
    except TypeError:
        run = parse
    try:
        run(data)
    except ConfigError as e:
        return CheckFailed(source, e)
    except (ParseCrashed, ParserUnavailable) as e:
        return CheckFailed(source, ConfigError(f"cannot parse: {e}"))
    except Exception as e:
        return CheckFailed(source, ConfigError(f"cannot parse: {describe_crash(e)}"))
    return CheckPassed(source)


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
        source = CheckSource(name_of(file))
        try:
            raw = read_file(file, max_bytes, stdin or sys.stdin.buffer)
        except ConfigError as e:
            results.append(CheckFailed(source, e))
            continue
        results.append(parse_one(parse, raw, source))
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
    source = CheckSource(files.directory, files=files.names)
    contents: dict[str, bytes] = {}
    for name in files.names:
        path = os.path.join(files.directory, name)
        try:
            contents[name] = read_file(path, max_bytes, sys.stdin.buffer)
        except ConfigError as e:
            return CheckFailed(source, e.in_file(name))
    return parse_one(files.parse, contents, source)
