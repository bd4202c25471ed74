"""
The one error a parse function raises to refuse its input, and the one a
runner fails with when the parse function crashed on it.  They live in a
module of their own that imports nothing but the standard library, so the
parser process can load them without Twisted.

A L{ConfigError} is data: the kind of problem, and where it lies (file,
key, line and column), each in a field of its own.  Everything that shows
one (the log, C{/config}, C{check}, the parser process's reply) renders it
from those fields; nothing parses a place back out of its text.
"""

from __future__ import annotations

import json
import os
import re

# The parser process loads this module: typing, for mypy alone, would cost
# it half a MiB.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ConfigError",
    "ParseCrashed",
    "describe_crash",
    "line_and_column",
    "split_lines",
]

#: The longest description of a crash, so that a huge exception message
#: cannot flood the server's log.
_CRASH_LINE = 300

# The line breaks YAML counts (and PyYAML's marks with it).
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def line_and_column(text: str, index: int) -> tuple[int, int]:
    """
    The 1-based line and column of character C{index} of C{text}: the one
    rule for a place in a file.  Columns count characters, not bytes, and
    lines end where YAML says they do.
    """
    index = max(0, min(index, len(text)))
    line, start = 1, 0
    for found in _LINE_BREAK.finditer(text, 0, index):
        line, start = line + 1, found.end()
    return line, index - start + 1


def split_lines(text: str) -> list[str]:
    """
    The lines of C{text}, split where L{line_and_column} counts a break.
    """
    return _LINE_BREAK.split(text)


class ConfigError(Exception):
    """
    A config file could not be used.

    C{raise ConfigError("'port' must be a number")} is all a parse function
    needs; the library fills in the file, and PyYAML's errors come with
    their line and column.  C{str()} of it is the one-line sentence meant
    for people, rendered from the fields, which never hold a value from
    the file (a config may hold secrets).

    @ivar problem: The kind of problem, as a sentence without its place.
    @ivar file: The file it concerns (its path, or its name within the
        directory of a config of several files), or L{None} when unknown.
    @ivar key: The key of the config it concerns, or L{None}.
    @ivar line: The 1-based line of the problem in C{file}, or L{None}.
    @ivar column: Its 1-based column, counted in characters, or L{None}.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.file = file
        self.key = key
        self.line = line
        self.column = column

    def __str__(self) -> str:
        # "config.yaml line 3, column 7: problem" when located, as editors
        # and compilers say it; "config.yaml: problem" when not.
        where = "" if self.file is None else self.file
        if self.line is not None:
            place = f"line {self.line}"
            if self.column is not None:
                place += f", column {self.column}"
            where = f"{where} {place}" if where else place
        return f"{where}: {self.problem}" if where else self.problem

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"ConfigError({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.as_dict(),))

    def as_dict(self) -> dict[str, Any]:
        """
        The fields, for JSON: C{problem}, C{file}, C{key}, C{line} and
        C{column}.
        """
        return {
            "problem": self.problem,
            "file": self.file,
            "key": self.key,
            "line": self.line,
            "column": self.column,
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ConfigError:
        """
        The error whose L{as_dict} is C{fields}; fields of the wrong type
        are dropped, so a malformed message cannot crash its reader.
        """

        def text(name: str) -> str | None:
            value = fields.get(name)
            return value if isinstance(value, str) else None

        def number(name: str) -> int | None:
            value = fields.get(name)
            return value if type(value) is int and value > 0 else None

        return cls(
            text("problem") or "invalid config",
            file=text("file"),
            key=text("key"),
            line=number("line"),
            column=number("column"),
        )

    def to_json(self) -> bytes:
        """
        L{as_dict} as JSON, how the parser process sends a refusal.
        """
        return json.dumps(self.as_dict()).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ConfigError:
        """
        The error L{to_json} gave C{data} for; text that is not such JSON
        is a refusal of its own, so that a reader never crashes on it.
        """
        try:
            fields = json.loads(data)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            return cls("the parser process sent a malformed refusal")
        return cls.from_dict(fields)

    def in_file(self, file: str) -> ConfigError:
        """
        This error, as concerning C{file} (a path, or a name within the
        directory of several files) unless it names a file already.
        """
        if self.file is not None:
            return self
        fields = self.as_dict()
        fields["file"] = file
        return ConfigError.from_dict(fields)

    def within(self, directory: str) -> ConfigError:
        """
        This error, for a config of several files in C{directory}: a file
        it names by a relative path is taken as one within C{directory}.
        """
        fields = self.as_dict()
        fields["file"] = os.path.join(directory, self.file or "")
        if self.file is None:
            fields["file"] = directory
        return ConfigError.from_dict(fields)


def _rebuild(fields: dict[str, Any]) -> ConfigError:
    return ConfigError.from_dict(fields)


class ParseCrashed(Exception):
    """
    The parse function raised something other than L{ConfigError}, could
    not be imported in the parser process, or returned a value that cannot
    be sent back; the text is one line.  Asking again with the same input
    gives the same answer, so the live service takes it as a refusal of
    that input, not as a failure of its own to retry.
    """


def describe_crash(error: BaseException, *, text: bool = False) -> str:
    """
    One line saying what C{error} is and where it was raised:
    C{KeyError (schema.py line 12, in parse)}.  Its text is left out unless
    C{text} is set, since the exception of a parse function that crashed
    may quote the file it was parsing (a config may hold secrets); set it
    only for an error that cannot, such as one importing a module.
    """
    described = type(error).__name__
    lines = str(error).splitlines() if text else []
    if lines:
        described += f": {lines[0]}"
    tb = error.__traceback__
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        described += (
            f" ({os.path.basename(code.co_filename)} line {tb.tb_lineno},"
            f" in {code.co_name})"
        )
    if len(described) <= _CRASH_LINE:
        return described
    return described[: _CRASH_LINE - 3] + "..."
