"""
The C{check} command of an app: its command line, over the checks of files
(L{_check}) and manifests (L{_manifest}) and their output (L{_report}).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO, NoReturn, TextIO

from attrs import frozen

from twisted_demo.live._check import (
    CheckFailed,
    FileSet,
    ParseFunction,
    check_file_set,
    check_files,
)
from twisted_demo.live._manifest import check_manifests
from twisted_demo.live._reader import DEFAULT_MAX_BYTES, positive_integer
from twisted_demo.live._report import format_json, format_text

__all__ = ["FileSetOptions", "check_main"]


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


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _bytes(value: str) -> int:
    try:
        return positive_integer("bytes")(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
        type=_bytes,
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
    return 1 if any(isinstance(r, CheckFailed) for r in results) else 0
