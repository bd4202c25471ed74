"""
L{parse_yaml}: the bytes of a YAML file to the mapping they hold, read with
C{yaml.safe_load} semantics made strict, or a L{ConfigError} that says where
and why.  Pure: no I/O, no reactor, no Twisted, so that it runs as well in
the parser process as in the server.
"""

from __future__ import annotations

from typing import Any

import yaml

from twisted_demo.live._errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_NODES", "parse_yaml"]

#: Deepest nesting of lists and mappings accepted.  libyaml's C composer
#: recurses once per level without a limit and crashes the process (not
#: an exception) somewhere below 100,000 levels, and its scanner slows down
#: with the square of the depth, so depth is checked before composing.
MAX_DEPTH = 100

#: Most nodes a document may stand for once its aliases are expanded (at
#: least the file's size in bytes, which no alias-free document reaches).
#: This refuses "billion laughs" alias bombs before anything walks them.
MAX_NODES = 1_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """
    C{yaml.safe_load}'s loader (libyaml's C parser when PyYAML was built
    with it), made strict: a key repeated in one mapping is an error rather
    than silently last-wins, and a value the safe constructors cannot
    convert (a 5,000-digit integer, a 13th month) is a marked YAML error
    rather than an arbitrary exception.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:
            tag = node.tag.rpartition(":")[2]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"invalid {tag} value: {_first_line(str(e))}",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {_shorten(repr(key))} "
                        f"(first on line {first.start_mark.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


def describe(value: object) -> str:
    """
    How a YAML value is named in an error: C{null}, C{a string}, C{a list}...
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at(mark: Any, reason: str) -> ConfigError:
    """
    A L{ConfigError} locating C{reason} at C{mark} (a YAML C{Mark}, if any).
    """
    if mark is None:
        return ConfigError(reason)
    return ConfigError(f"line {mark.line + 1}, column {mark.column + 1}: {reason}")


def _check_shape(text: str, limit: int) -> int:
    """
    Walk the YAML events of C{text} (iteratively, without building
    anything) and refuse, before the composer sees it, a stream with more
    than one document, nesting deeper than L{MAX_DEPTH}, an alias to a node
    that contains it, or aliases that expand to more than C{limit} nodes.

    @return: The number of documents: 0 for a file with nothing but
        comments and blank lines, else 1.
    @raise ConfigError: Locating the first such problem.
    @raise yaml.YAMLError: For the first syntax error.
    """
    documents = 0
    # (anchor, nodes counted before the collection started) per open
    # collection; a closed anchor's expanded size is then a subtraction.
    open_collections: list[tuple[str | None, int]] = []
    sizes: dict[str, int] = {}
    nodes = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _at(
                    event.start_mark,
                    "a second YAML document starts here; "
                    "the file must hold exactly one",
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_collections) >= MAX_DEPTH:
                raise _at(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            open_collections.append((event.anchor, nodes))
            nodes += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_collections.pop()
            if anchor is not None:
                sizes[anchor] = nodes - before
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            nodes += 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_collections):
                raise _at(
                    event.start_mark,
                    f"alias *{_shorten(str(event.anchor))} refers to a node "
                    "that contains it",
                )
            # An undefined alias is left for the composer to report.
            nodes += sizes.get(str(event.anchor), 1)
        if nodes > limit:
            raise _at(
                event.start_mark,
                f"aliases expand the document to more than {limit} nodes",
            )
    return documents


def _load(raw: bytes, text: str) -> tuple[int, object]:
    """
    The number of documents in C{text} (0 or 1) and the value of the one.
    """
    try:
        documents = _check_shape(text, max(MAX_NODES, len(raw)))
        return documents, yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        reason = _first_line(e.problem or e.context or "invalid YAML")
        raise _at(e.problem_mark or e.context_mark, reason) from None
    except yaml.reader.ReaderError as e:
        # libyaml reports the byte offset into the UTF-8 text, which is raw.
        before = raw[: e.position]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(
            f"line {line}, column {column}: unacceptable character "
            f"#x{e.character:04x}: {e.reason}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {_first_line(str(e))}") from None


def parse_yaml(data: bytes) -> dict[Any, Any]:
    """
    The one YAML mapping that C{data} holds.

    The document is read with C{yaml.safe_load} semantics (libyaml's C
    parser when PyYAML has it), made strict: a key repeated within one
    mapping is refused rather than last-wins, and so are a second document,
    nesting deeper than L{MAX_DEPTH} and aliases that expand past
    L{MAX_NODES} nodes, before anything is built from them.

    @raise ConfigError: Saying why, with C{line N, column M: } first when
        the problem has a place in the file.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not valid UTF-8 at byte {e.start}") from None
    documents, document = _load(data, text)
    if not documents:
        raise ConfigError("file is empty; expected a mapping")
    if not isinstance(document, dict):
        raise ConfigError(f"top level must be a mapping, got {describe(document)}")
    return document
