"""
Errors are data: a L{ConfigError} carries its problem and place in fields,
places follow one rule (characters, not bytes), and no refusal repeats a
value from the file, whatever tag and garbage it is given.
"""

from __future__ import annotations

import json
import pickle

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bad_configs import BAD_CONTENT
from twisted_demo.config import parse_message
from twisted_demo.live import ConfigError, _yaml, parse_yaml

#: Every tag the safe constructors know, and some they do not.
TAGS = [
    "!!null",
    "!!bool",
    "!!int",
    "!!float",
    "!!binary",
    "!!timestamp",
    "!!omap",
    "!!pairs",
    "!!set",
    "!!str",
    "!!seq",
    "!!map",
    "!!merge",
    "!!value",
    "!!yaml",
    "!!python/object:os.system",
    "!!python/name:os.system",
    "!local",
    "!<tag:example.com,2026:x>",
]

#: How the garbage is written after the tag: as each kind of node.
SHAPES = [
    "{tag} {plain}",
    "{tag} {quoted}",
    "{tag} [{quoted}]",
    "{tag} {{{quoted}: {quoted}}}",
    "{tag} [{{{quoted}: 1}}]",
]

#: Text that is not any tag's value, and marks what must not be repeated.
garbage = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20
).map(lambda text: "Zq" + text + "Xj")


@pytest.fixture(params=[True, False], ids=["compose-first", "events-first"])
def both_limit_paths(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> bool:
    """
    Run a test with each of the two ways the limits are applied: after
    composing (a libyaml that bounds nesting itself) and before, by
    walking the events (any other PyYAML).
    """
    monkeypatch.setattr(_yaml, "_COMPOSE_FIRST", request.param)
    return bool(request.param)


def test_config_error_keeps_its_fields_and_renders_them() -> None:
    error = ConfigError(
        "not a valid integer", file="/etc/app.yaml", key="port", line=2, column=11
    )

    assert isinstance(error, Exception)
    assert (error.problem, error.file, error.key) == (
        "not a valid integer",
        "/etc/app.yaml",
        "port",
    )
    assert (error.line, error.column) == (2, 11)
    assert str(error) == "/etc/app.yaml line 2, column 11: not a valid integer"
    assert str(ConfigError("not a valid integer", line=2, column=11)) == (
        "line 2, column 11: not a valid integer"
    )
    assert str(ConfigError("'port' is missing", file="app.yaml")) == (
        "app.yaml: 'port' is missing"
    )


def test_a_plain_config_error_is_its_sentence_with_no_place() -> None:
    error = ConfigError("'port' must be a number")

    assert str(error) == "'port' must be a number"
    assert error.as_dict() == {
        "problem": "'port' must be a number",
        "file": None,
        "key": None,
        "line": None,
        "column": None,
    }


def test_config_error_survives_json_and_pickle_with_its_fields() -> None:
    error = ConfigError("duplicate key", file="a.yaml", line=3, column=1)

    for copy in (
        ConfigError.from_dict(json.loads(json.dumps(error.as_dict()))),
        ConfigError.from_json(error.to_json()),
        pickle.loads(pickle.dumps(error)),
    ):
        assert copy.as_dict() == error.as_dict()
        assert str(copy) == str(error)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b"\xff", b"null"])
def test_a_malformed_refusal_on_the_wire_is_a_refusal_not_a_crash(data: bytes) -> None:
    error = ConfigError.from_json(data)

    assert error.problem == "the parser process sent a malformed refusal"


def test_config_error_from_malformed_fields_keeps_what_is_sound() -> None:
    error = ConfigError.from_dict({"problem": 7, "line": "2", "column": -1})

    assert error.as_dict() == {
        "problem": "invalid config",
        "file": None,
        "key": None,
        "line": None,
        "column": None,
    }


@pytest.mark.parametrize(
    ("raw", "line", "column"),
    [
        # The control character is the 5th character and the 6th byte.
        (b"a: \xc3\xa9\x07", 1, 5),
        (b"a: b\nc: \xe2\x82\xac\xe2\x82\xac\x07", 2, 6),
        # Every line break YAML counts is a line break here too.
        (b"a: b\r\nc: d\re: \x07", 3, 4),
    ],
)
def test_error_columns_count_characters_not_bytes(
    both_limit_paths: bool, raw: bytes, line: int, column: int
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_yaml(raw)

    assert (e.value.line, e.value.column) == (line, column)
    assert str(e.value).startswith(f"line {line}, column {column}: ")


def test_invalid_utf8_is_located_in_characters() -> None:
    with pytest.raises(ConfigError) as e:
        parse_yaml(b"\xc3\xa9: ok\nb: \xff\n")

    assert (e.value.line, e.value.column) == (2, 4)
    assert e.value.problem == "not valid UTF-8 at byte 10"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"password: !!int hunter2\n", "not a valid integer"),
        (b"password: !!float hunter2\n", "not a valid floating-point number"),
        (b"password: !!bool hunter2\n", "not a valid boolean"),
        (b"password: !!timestamp 2026-01-01Thunter2\n", "not a valid timestamp"),
        (b"password: !hunter2 x\n", "could not determine a constructor for the tag"),
        (b"password: *hunter2\n", "found undefined alias"),
        (b'password: "hunter2\\q"\n', "found unknown escape character"),
        (b"password: hunter2\npassword: hunter2\n", "duplicate key (first on line 1)"),
    ],
)
def test_refusals_name_the_kind_of_problem_never_the_value(
    both_limit_paths: bool, raw: bytes, problem: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_yaml(raw)

    assert e.value.problem == problem
    assert "hunter2" not in str(e.value)
    assert e.value.line is not None and e.value.column is not None


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from(TAGS),
    shape=st.sampled_from(SHAPES),
    text=garbage,
    compose_first=st.booleans(),
)
def test_every_tag_with_garbage_is_a_value_or_a_located_refusal(
    tag: str, shape: str, text: str, compose_first: bool
) -> None:
    node = shape.format(tag=tag, plain=text, quoted=json.dumps(text))
    raw = f"message: hi\nvalue: {node}\n".encode()
    saved = _yaml._COMPOSE_FIRST
    _yaml._COMPOSE_FIRST = compose_first
    try:
        parse_yaml(raw)
    except ConfigError as e:
        assert text not in str(e)
        assert text[:4] not in str(e)
        if e.problem.startswith("not "):
            # A value its tag cannot convert is refused where it stands.
            assert e.line == 2
            assert e.column is not None and e.column >= 8
    finally:
        _yaml._COMPOSE_FIRST = saved


@settings(max_examples=200, deadline=None)
@given(tag=st.sampled_from(TAGS), shape=st.sampled_from(SHAPES), text=garbage)
def test_pure_python_yaml_messages_are_cleaned_of_the_input(
    tag: str, shape: str, text: str
) -> None:
    # The pure-Python loader (used where PyYAML has no libyaml) quotes
    # more of the input in its messages than libyaml does.
    node = shape.format(tag=tag, plain=text, quoted=json.dumps(text))
    try:
        yaml.load(f"value: {node}\n", Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        assert text[:4] not in _yaml._safe_problem(e.problem or e.context)
    except Exception:
        pass


@pytest.mark.parametrize(
    "case",
    [
        "alias_bomb",
        "recursive_alias",
        "deep_nesting",
        "multi_document_stream",
        "duplicate_keys",
        "invalid_timestamp_value",
        "tagged_bool_that_is_not",
    ],
)
def test_both_ways_of_applying_the_limits_refuse_alike(
    both_limit_paths: bool, case: str
) -> None:
    bad = BAD_CONTENT[case]

    with pytest.raises(ConfigError) as e:
        parse_message(bad.content)

    assert bad.matches(str(e.value))
