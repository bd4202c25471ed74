"""
The values the live service hands out: a loaded config, and the outcome of
a reload (one class per case, to be matched with C{match}).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from attrs import field, frozen

from twisted_demo.live._errors import ConfigError

__all__ = ["Failed", "Loaded", "Outcome", "Unchanged", "Updated"]

T = TypeVar("T")


@frozen
class Loaded(Generic[T]):
    """
    One valid version of the config, as the parse function made it.

    @ivar value: What the parse function returned.
    @ivar sha256: Hex SHA-256 of the file's bytes (of all the files, for a
        service that reads several).
    @ivar generation: The C{..data} target it was read through in a
        ConfigMap or Secret volume, else L{None}.
    @ivar loaded_at: POSIX time at which it was read.
    @ivar path: The file (or, for several files, the directory) read.
    """

    value: T
    sha256: str
    generation: str | None
    loaded_at: float
    path: str


@frozen
class Updated(Generic[T]):
    """
    A reload swapped in a new version.

    @ivar old: The version served before, or L{None} for the first.
    """

    old: Loaded[T] | None
    new: Loaded[T]


@frozen
class Unchanged(Generic[T]):
    """
    A reload found the bytes being served.

    @ivar recovered: Whether this clears an error reported before (the
        file went back to the version being served).
    """

    current: Loaded[T]
    recovered: bool = False


@frozen
class Failed(Generic[T]):
    """
    A reload was refused; the last good version (if any) keeps serving.

    @ivar error: Why, in one line that names the file: C{str(detail)}.
    @ivar repeated: Whether this is the failure reported the time before
        (same bytes, or same read error): not worth logging or counting
        again.
    @ivar retry_in: Seconds after which the service tries again by itself,
        when the failure was its own (the parser died, timed out or could
        not start; the read ran out of descriptors or memory); L{None} when
        the file was refused, and only its next change is read.
    @ivar detail: The same as a L{ConfigError}, whose fields say where
        (C{file}, C{key}, C{line}, C{column}) and what (C{problem}); for a
        failure of the service's own, C{problem} says what failed.  Not
        compared: it is C{error} in fields.
    """

    error: str
    current: Loaded[T] | None
    repeated: bool = False
    retry_in: float | None = None
    detail: ConfigError | None = field(default=None, eq=False)


#: What a reload did.
Outcome = Updated[T] | Unchanged[T] | Failed[T]
