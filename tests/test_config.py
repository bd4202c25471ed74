"""
Turning the bytes of a config file into a L{Config} or a readable error.
"""

from __future__ import annotations

import hashlib

import attrs
import pytest

from twisted_demo.config import Config, ConfigError, parse_config


def _parse(raw: bytes, **kwargs: object) -> Config:
    return parse_config(raw, source="config.yaml", loaded_at=1.5, **kwargs)  # type: ignore[arg-type]


def test_good_document_gives_message_data_and_hash() -> None:
    raw = b"message: Hello World\nreplicas: 2\n"
    config = _parse(raw, generation="..2026_11_22_10_00_00.1")
    assert config.message == "Hello World"
    assert dict(config.data) == {"message": "Hello World", "replicas": 2}
    assert config.sha256 == hashlib.sha256(raw).hexdigest()
    assert config.loaded_at == 1.5
    assert config.generation == "..2026_11_22_10_00_00.1"
    assert config.source == "config.yaml"


def test_config_cannot_be_changed_after_loading() -> None:
    config = _parse(b"message: hi\n")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.message = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.data["message"] = "changed"  # type: ignore[index]


def test_syntax_error_names_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as e:
        _parse(b"message: ok\nother: [1, 2\n")
    assert str(e.value) == (
        "config.yaml line 3, column 1: did not find expected ',' or ']'"
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "config.yaml: file is empty; expected a mapping"),
        (b"# off\n\n", "config.yaml: file is empty; expected a mapping"),
        (b"null\n", "config.yaml: top level must be a mapping, got null"),
        (b"---\n", "config.yaml: top level must be a mapping, got null"),
        (b"- a\n- b\n", "config.yaml: top level must be a mapping, got a list"),
        (b"just text\n", "config.yaml: top level must be a mapping, got a string"),
        (b"42\n", "config.yaml: top level must be a mapping, got a number"),
        (b"other: 1\n", "config.yaml: 'message' is missing"),
        (b"message: 7\n", "config.yaml: 'message' must be a string, got a number"),
        (b"message:\n", "config.yaml: 'message' must be a string, got null"),
        (b"message: [a]\n", "config.yaml: 'message' must be a string, got a list"),
        (
            b"message: {a: 1}\n",
            "config.yaml: 'message' must be a string, got a mapping",
        ),
        (b"message: \xff\n", "config.yaml: not valid UTF-8 at byte 9"),
    ],
)
def test_invalid_document_is_a_config_error_naming_the_reason(
    raw: bytes, error: str
) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(raw)
    assert str(e.value) == error


def test_file_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        _parse(b"message: " + b"x" * 100 + b"\n", max_bytes=50)
    assert str(e.value) == "config.yaml: file is 110 bytes, over the limit of 50"


def test_python_tags_are_refused_not_constructed() -> None:
    with pytest.raises(ConfigError) as e:
        _parse(b"message: !!python/object/apply:os.system ['true']\n")
    assert "could not determine a constructor" in str(e.value)
