"""
The catalogue of config files the service must refuse, and what each
refusal must say.
"""

from __future__ import annotations

import re

from attrs import frozen

from bench.parsecost import HOSTILE
from twisted_demo.live import DEFAULT_MAX_BYTES


def good(message: str) -> bytes:
    """
    A valid config serving C{message}.
    """
    return f"message: {message!r}\nother: 1\n".encode()


#: Text in L{BAD_CONTENT}'s files that no refusal may repeat.
SECRET = "hunter2"


@frozen
class Bad:
    """
    A config file that must be refused, and what the refusal must say.

    C{reason} is the service's own wording, matched literally.  Where the
    refusal comes from PyYAML or libyaml, whose wording changes between
    releases, C{reason} is only the location (C{line N, column M: }) and
    C{located} is set: the test then checks that the error says where, not
    how a library phrased it.
    """

    content: bytes
    reason: str
    located: bool = False

    def matches(self, error: str) -> bool:
        """
        Whether C{error} is the refusal this case must produce, which
        never repeats L{SECRET}.
        """
        if SECRET in error:
            return False
        if self.located:
            return re.search(self.reason + r"\S", error) is not None
        return self.reason in error


def by_yaml(line: int | None = None, column: int | None = None) -> str:
    """
    The pattern of a refusal worded by the YAML library, located at C{line}
    and C{column} where the layer that refuses is sure to choose them.
    """
    row = r"\d+" if line is None else str(line)
    where = r"\d+" if column is None else str(column)
    return rf"line {row}, column {where}: "


#: Every kind of bad content the service must refuse, by a name that says it.
BAD_CONTENT: dict[str, Bad] = {
    "invalid_yaml_syntax": Bad(b"message: [unclosed\n", by_yaml(2, 1), located=True),
    "empty_file": Bad(b"", "file is empty; expected a mapping"),
    "top_level_list": Bad(b"- a\n- b\n", "top level must be a mapping, got a list"),
    "top_level_string": Bad(b"hello\n", "top level must be a mapping, got a string"),
    "top_level_number": Bad(b"42\n", "top level must be a mapping, got a number"),
    "top_level_null": Bad(b"null\n", "top level must be a mapping, got null"),
    "only_comments": Bad(b"# message: off\n\n", "file is empty; expected a mapping"),
    "message_missing": Bad(b"other: 1\n", "'message' is missing"),
    "message_null": Bad(b"message:\n", "'message' must be a string, got null"),
    "message_number": Bad(b"message: 3\n", "'message' must be a string, got a number"),
    "message_list": Bad(b"message: [a]\n", "'message' must be a string, got a list"),
    "message_mapping": Bad(
        b"message: {a: 1}\n", "'message' must be a string, got a mapping"
    ),
    "invalid_utf8": Bad(b"message: caf\xe9\n", "not valid UTF-8 at byte 12"),
    "binary_garbage": Bad(bytes(range(256)) * 4, "not valid UTF-8 at byte 128"),
    "nul_byte": Bad(b"message: a\x00b\n", by_yaml(1, 11), located=True),
    "over_size_limit": Bad(
        b"message: " + b"x" * DEFAULT_MAX_BYTES + b"\n",
        f"file is over the limit of {DEFAULT_MAX_BYTES} bytes",
    ),
    "alias_bomb": Bad(
        HOSTILE["alias_bomb"], "aliases expand the document to more than 1000000 nodes"
    ),
    "recursive_alias": Bad(
        b"message: a\nx: &a [1, *a]\n",
        "line 2, column 4: this node contains itself through an alias",
    ),
    # The service refuses more than 100 levels itself; libyaml 0.2.5 as
    # bundled with PyYAML 6.0.4 refuses 1,000 levels as it scans,
    # before the service sees the 101st, so either may report this file.
    "deep_nesting": Bad(
        b"message: a\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        by_yaml(2),
        located=True,
    ),
    "python_object_apply_tag": Bad(
        b"message: !!python/object/apply:os.system ['touch PWNED']\n",
        by_yaml(1, 10),
        located=True,
    ),
    "python_name_tag": Bad(
        b"message: a\nf: !!python/name:os.system\n", by_yaml(2, 4), located=True
    ),
    "multi_document_stream": Bad(
        b"---\nmessage: a\n---\nmessage: b\n",
        "line 3, column 1: a second YAML document starts here",
    ),
    "duplicate_keys": Bad(
        b"message: a\nmessage: b\n",
        "line 2, column 1: duplicate key (first on line 1)",
    ),
    "invalid_timestamp_value": Bad(
        b"message: a\nwhen: 2026-13-01\n",
        "line 2, column 7: not a valid timestamp",
    ),
    # A value its tag cannot convert is refused at its place, saying what
    # it is not, never what it is: the file may hold secrets.
    "tagged_int_that_is_not": Bad(
        b"message: a\npassword: !!int hunter2\n",
        "line 2, column 11: not a valid integer",
    ),
    "tagged_float_that_is_not": Bad(
        b"message: a\npassword: !!float hunter2\n",
        "line 2, column 11: not a valid floating-point number",
    ),
    "tagged_bool_that_is_not": Bad(
        b"message: a\npassword: !!bool hunter2\n",
        "line 2, column 11: not a valid boolean",
    ),
    "tagged_timestamp_that_is_not": Bad(
        b"message: a\npassword: !!timestamp 2026-01-01Thunter2\n",
        "line 2, column 11: not a valid timestamp",
    ),
    # PyYAML's own words for these quote a character of the value, its
    # place and the value's length.
    "tagged_binary_that_is_not_ascii": Bad(
        "message: a\npassword: !!binary hunter2\u20ac\n".encode(),
        "line 2, column 11: not valid base64",
    ),
    "tagged_binary_of_a_telling_length": Bad(
        b"message: a\npassword: !!binary hunter2\n",
        "line 2, column 11: not valid base64",
    ),
}
