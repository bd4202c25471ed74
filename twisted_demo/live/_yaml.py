"""
L{parse_yaml}: the bytes of a YAML file to the mapping they hold, read with
C{yaml.safe_load} semantics made strict, or a L{ConfigError} that says where
and why.  Pure: no I/O, no reactor, no Twisted, so that it runs as well in
the parser process as in the server.
"""

from __future__ import annotations

import re
from itertools import chain

import yaml

from twisted_demo.live._errors import ConfigError, line_and_column

# typing costs the parser process half a MiB, and this module is all it
# needs besides PyYAML: the names are for mypy alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "FastSafeLoader",
    "decode_utf8",
    "describe_value",
    "parse_yaml",
    "yaml_error",
]

#: Deepest nesting of lists and mappings accepted.  See L{_bounds_nesting}
#: for when it is checked before composing and when after.
MAX_DEPTH = 100

#: Most nodes a document may stand for once its aliases are expanded (at
#: least the file's size in bytes, which no alias-free document reaches).
#: This refuses "billion laughs" alias bombs before anything walks them.
MAX_NODES = 1_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"

#: C{yaml.safe_load}'s loader: libyaml's C parser when PyYAML was built
#: with it, else the pure-Python one.
FastSafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Whether L{FastSafeLoader} is libyaml's, whose reader errors count bytes.
_LIBYAML = FastSafeLoader is not yaml.SafeLoader

#: What a value of each standard tag is called when it is not one.
_TAG_KINDS = {
    "bool": "a valid boolean",
    "int": "a valid integer",
    "float": "a valid floating-point number",
    "timestamp": "a valid timestamp",
    "binary": "valid base64",
    "null": "a valid null",
    "str": "a valid string",
    "set": "a valid set",
    "omap": "a valid ordered mapping",
    "pairs": "a valid list of pairs",
    "seq": "a valid list",
    "map": "a valid mapping",
    "merge": "a valid merge",
}

# A quoted fragment of a PyYAML message: either a token's name or a YAML
# indicator, which come from the grammar, or text from the input.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')
_GRAMMAR = re.compile(r"""(['"])(?:<[a-z ]+>|[-,\[\]{}:?#&*!|>%@`'"]|\.\.\.|---)\1""")


def _safe_problem(text: str | None) -> str:
    """
    PyYAML's C{problem} or C{context}, without any text of the input it
    quotes (a tag, an alias, an escape, a character): only the kind of
    problem and the grammar's own words are left.
    """
    first = (text or "").strip().splitlines()[0:1]
    if not first:
        return "invalid YAML"

    def keep(found: re.Match[str]) -> str:
        return found[0] if _GRAMMAR.fullmatch(found[0]) else ""

    cleaned = _QUOTED.sub(keep, first[0])
    # What quoted text leaves behind: doubled spaces, dangling "with"s.
    cleaned = re.sub(r"\s+([,;:)])", r"\1", re.sub(r"\s{2,}", " ", cleaned))
    cleaned = re.sub(r"\s*\(\s*\)", "", cleaned).strip(" :")
    return cleaned or "invalid YAML"


class _Loader(FastSafeLoader):  # type: ignore[valid-type,misc]
    """
    C{yaml.safe_load}'s loader (libyaml's C parser when PyYAML was built
    with it), made strict: a key repeated in one mapping is an error rather
    than silently last-wins.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        # SafeConstructor's construct_mapping, with the duplicate check
        # made as each key is inserted: keys are constructed once, and a
        # file of 500,000 repeated keys stops at the second.
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep)
        explicit = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        self.flatten_mapping(node)
        # flatten_mapping puts the merged pairs first; they may be
        # overridden, and only the explicit keys that follow must differ.
        merged = len(node.value) - explicit
        mapping: dict[Any, Any] = {}
        first: dict[Any, yaml.Node] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                ) from None
            if index >= merged:
                seen = first.setdefault(key, key_node)
                if seen is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key (first on line {seen.start_mark.line + 1})",
                        key_node.start_mark,
                    )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_binary(self, node: yaml.Node) -> bytes:
        # PyYAML's own refusal quotes what base64 or ASCII made of the
        # value: a character of it, its place, its length.
        try:
            value: bytes = super().construct_yaml_binary(node)
        except yaml.constructor.ConstructorError:
            raise _not_valid(node) from None
        return value


_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.construct_yaml_binary)


class _CarefulLoader(_Loader):
    """
    L{_Loader} that also turns any exception a constructor raises on a
    value it cannot convert (C{!!int hunter2}, C{!!bool nope}, a 13th
    month, a 5,000-digit integer) into a marked YAML error at that value,
    saying what it is not and never what it is.  The check costs a frame on
    every node, so a file is constructed with it only once L{_Loader} has
    failed that way.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, ConfigError, MemoryError, RecursionError):
            raise
        except Exception:
            raise _not_valid(node) from None


def _not_valid(node: yaml.Node) -> yaml.constructor.ConstructorError:
    tag = str(node.tag)
    short = tag.rpartition(":")[2] if tag.startswith("tag:yaml.org,2002:") else ""
    kind = _TAG_KINDS.get(short, "a valid value for its tag")
    return yaml.constructor.ConstructorError(None, None, f"not {kind}", node.start_mark)


def _bounds_nesting() -> bool:
    """
    Whether the C loader refuses deep nesting itself, as the libyaml bundled
    with PyYAML 6.0.4 does at 1,000 levels.  Older builds compose any depth
    recursively in C and crash past about 100,000 levels, so with them the
    depth must be checked before composing.
    """
    if not hasattr(yaml, "CSafeLoader"):
        return False
    loader = yaml.CSafeLoader("x: " + "[" * 2000 + "]" * 2000)
    try:
        loader.get_single_node()
    except yaml.YAMLError:
        return True
    finally:
        loader.dispose()
    return False


#: Whether a file can be composed before its depth is known (see
#: L{_bounds_nesting}); checked once, at import.
_COMPOSE_FIRST = _bounds_nesting()


def describe_value(value: object) -> str:
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


def _at(mark: Any, problem: str) -> ConfigError:
    """
    A L{ConfigError} locating C{problem} at C{mark} (a YAML C{Mark}, whose
    line and column count from 0, if any).
    """
    if mark is None:
        return ConfigError(problem)
    return ConfigError(problem, line=mark.line + 1, column=mark.column + 1)


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
    # (anchor, nodes counted before the collection started, where it
    # starts) per open collection; a closed anchor's expanded size is then
    # a subtraction.
    open_collections: list[tuple[str | None, int, Any]] = []
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
            open_collections.append((event.anchor, nodes, event.start_mark))
            nodes += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before, _ = open_collections.pop()
            if anchor is not None:
                sizes[anchor] = nodes - before
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            nodes += 1
        elif isinstance(event, yaml.AliasEvent):
            for anchor, _, start in open_collections:
                if anchor == event.anchor:
                    # Reported at the node, as after composing.
                    raise _at(start, "this node contains itself through an alias")
            # An undefined alias is left for the composer to report.
            nodes += sizes.get(str(event.anchor), 1)
        if nodes > limit:
            raise _at(
                event.start_mark,
                f"aliases expand the document to more than {limit} nodes",
            )
    return documents


def _measure(root: yaml.Node, limit: int) -> None:
    """
    Walk the composed graph of C{root} once, without recursion, and refuse
    nesting deeper than L{MAX_DEPTH}, a node that contains itself through
    an alias, or aliases that expand the document to more than C{limit}
    nodes.  A node shared through aliases is measured once.

    @raise ConfigError: Locating the first such problem.
    """
    scalar = yaml.ScalarNode
    mapping = yaml.MappingNode
    if type(root) is scalar:
        return
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def children(node: yaml.Node) -> Iterator[yaml.Node]:
        if type(node) is mapping:
            return chain.from_iterable(node.value)
        return iter(node.value)

    # One [node, nodes counted so far, children left] per open collection.
    stack: list[list[Any]] = [[root, 1, children(root)]]
    open_ids.add(id(root))
    while stack:
        frame = stack[-1]
        for child in frame[2]:
            if type(child) is scalar or not child.value:
                # A scalar, or an empty collection: one node, nothing under.
                frame[1] += 1
                continue
            known = sizes.get(id(child))
            if known is not None:
                frame[1] += known
                if frame[1] > limit:
                    raise _too_many(child, limit)
                continue
            if id(child) in open_ids:
                raise _at(
                    child.start_mark,
                    "this node contains itself through an alias",
                )
            if len(stack) >= MAX_DEPTH:
                raise _at(child.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            open_ids.add(id(child))
            stack.append([child, 1, children(child)])
            break
        else:
            node, size, _ = stack.pop()
            open_ids.discard(id(node))
            sizes[id(node)] = size
            if stack:
                stack[-1][1] += size
                if stack[-1][1] > limit:
                    raise _too_many(node, limit)


def _too_many(node: yaml.Node, limit: int) -> ConfigError:
    return _at(
        node.start_mark,
        f"aliases expand the document to more than {limit} nodes",
    )


def _compose(
    text: str, limit: int, loader_class: type[_Loader] = _Loader
) -> tuple[int, object]:
    """
    The number of documents in C{text} (0 or 1) and the value of the one,
    composed by the C loader in one pass, measured, then constructed.
    """
    loader = loader_class(text)
    try:
        if not loader.check_node():
            return 0, None
        node = loader.get_node()
        following = loader.peek_event()
        if isinstance(following, yaml.DocumentStartEvent):
            raise _at(
                following.start_mark,
                "a second YAML document starts here; the file must hold exactly one",
            )
        _measure(node, limit)
        try:
            return 1, loader.construct_document(node)
        except (yaml.YAMLError, ConfigError, MemoryError, RecursionError):
            raise
        except Exception:
            if loader_class is _CarefulLoader:
                raise
    finally:
        loader.dispose()
    # Composed anew: constructing changed the graph (merge keys).
    return _compose(text, limit, _CarefulLoader)


def _load(raw: bytes, text: str) -> tuple[int, object]:
    """
    The number of documents in C{text} (0 or 1) and the value of the one.
    """
    limit = max(MAX_NODES, len(raw))
    try:
        if _COMPOSE_FIRST:
            return _compose(text, limit)
        documents = _check_shape(text, limit)
        return documents, yaml.load(text, Loader=_CarefulLoader)
    except yaml.YAMLError as e:
        raise yaml_error(e, raw, text) from None


def yaml_error(error: yaml.YAMLError, raw: bytes, text: str) -> ConfigError:
    """
    The L{ConfigError} for PyYAML's C{error} on C{text} (whose UTF-8
    encoding is C{raw}): its problem without any text of the input, at its
    place by the one rule for places.
    """
    if isinstance(error, yaml.MarkedYAMLError):
        problem = _safe_problem(error.problem or error.context)
        return _at(error.problem_mark or error.context_mark, problem)
    if isinstance(error, yaml.reader.ReaderError):
        index = error.position
        if _LIBYAML:
            # libyaml gives the offset into the UTF-8 bytes.
            index = len(raw[:index].decode("utf-8", "replace"))
        line, column = line_and_column(text, index)
        return ConfigError(
            f"unacceptable character #x{error.character:04x}: {error.reason}",
            line=line,
            column=column,
        )
    return ConfigError("invalid YAML")


def parse_yaml(data: bytes) -> dict[Any, Any]:
    """
    The one YAML mapping that C{data} holds.

    The document is read with C{yaml.safe_load} semantics (libyaml's C
    parser when PyYAML has it), made strict: a key repeated within one
    mapping is refused rather than last-wins, and so are a second document,
    nesting deeper than L{MAX_DEPTH} and aliases that expand past
    L{MAX_NODES} nodes, before anything is built from them.

    @raise ConfigError: Saying why in C{problem}, never with a value from
        C{data}, and where in C{line} and C{column} when the problem has a
        place in the file.
    """
    text = decode_utf8(data)
    documents, document = _load(data, text)
    if not documents:
        raise ConfigError("file is empty; expected a mapping")
    if not isinstance(document, dict):
        raise ConfigError(
            f"top level must be a mapping, got {describe_value(document)}"
        )
    return document


def decode_utf8(data: bytes) -> str:
    """
    C{data} as UTF-8 text.

    @raise ConfigError: At the first byte that is not UTF-8, by its byte
        offset and its line and column.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start].decode("utf-8")
        line, column = line_and_column(before, len(before))
        raise ConfigError(
            f"not valid UTF-8 at byte {e.start}", line=line, column=column
        ) from None
