"""
Reading one version of the config from disk: one file, or several files of
one ConfigMap or Secret volume, all from the same C{..data} generation.
Blocking, and cheap enough to run on the reactor: a stat, a readlink and a
read of at most C{max_bytes} per file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from attrs import frozen

from twisted_demo.live._errors import ConfigError

__all__ = [
    "DATA_DIR_NAME",
    "DEFAULT_MAX_BYTES",
    "Fingerprint",
    "ReadFailed",
    "Reader",
    "Snapshot",
    "open_regular",
    "over_limit",
    "positive_integer",
]

#: The symlink a ConfigMap volume swaps atomically on every update.
DATA_DIR_NAME = "..data"

#: The largest file accepted by default: Kubernetes' limit on a ConfigMap.
DEFAULT_MAX_BYTES = 1024 * 1024

#: Reads of a generation the kubelet replaced meanwhile, before giving up.
_TRIES = 5

#: What L{Reader.fingerprint} returns: cheap to compute, and different
#: whenever the content may have changed.
Fingerprint = tuple[object, ...]


def positive_integer(unit: str) -> Callable[[str], int]:
    """
    The coercion of an option's text to a whole number of C{unit} above 0:
    the one rule for such options, here and in the app's own.

    @return: A function of the text that raises L{ValueError}, saying what
        was expected, for any other.
    """

    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise ValueError(f"must be a whole number of {unit} above 0, got {value!r}")
        return number

    return coerce


@frozen
class Snapshot:
    """
    The bytes of the config at one moment and where they came from.

    @ivar data: The file's bytes, or each named file's bytes by name.
    @ivar sha256: Hex SHA-256 identifying C{data}.
    @ivar generation: The C{..data} target the bytes were read through, or
        L{None} outside a ConfigMap layout.
    """

    data: bytes | Mapping[str, bytes]
    sha256: str
    generation: str | None


def over_limit(max_bytes: int, file: str | None = None) -> ConfigError:
    """
    The refusal of a file of more than C{max_bytes}.
    """
    return ConfigError(f"file is over the limit of {max_bytes} bytes", file=file)


class ReadFailed(Exception):
    """
    The file(s) could not be read for a reason that is not theirs (out of
    file descriptors or memory, an I/O error, C{..data} swapped during
    every read): the same read may work a moment later.

    @ivar error: What failed and where, as a L{ConfigError} would say it.
    """

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


#: Errors of C{open} or C{read} that say nothing about the file: the
#: process or the system is short of something, for now.
_TRANSIENT = frozenset(
    {
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.ENOBUFS,
        errno.EAGAIN,
        errno.EINTR,
        errno.EIO,
    }
)

#: The names of the kinds of file a config may not be, for the refusal.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(mode: int) -> str:
    kind = next((name for test, name in _KINDS if test(mode)), "special")
    return f"not a regular file ({kind})"


def open_regular(path: str) -> BinaryIO:
    """
    Open C{path} for reading if it is a regular file, never blocking.

    A FIFO opened for reading blocks until a writer comes, and a device may
    block or act on being opened: what C{stat} does not call a regular file
    is refused unopened, and the open itself cannot block (C{O_NONBLOCK}),
    then C{fstat} checks what was opened, for the path may have been
    replaced between the two.

    @raise OSError: When it cannot be opened, or is not a regular file
        (C{strerror} then says C{not a regular file (a FIFO)}, or whichever
        kind it is).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, _not_regular(mode))
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    f = open(os.open(path, flags), "rb")
    mode = os.fstat(f.fileno()).st_mode
    if not stat.S_ISREG(mode):
        f.close()
        raise OSError(errno.EINVAL, _not_regular(mode))
    return f


class _Moved(Exception):
    """
    C{..data} pointed elsewhere by the end of a read: read again.
    """


class Reader:
    """
    Reads the file C{path}, or, with C{files}, those files of the directory
    C{path}.

    In a ConfigMap volume each file is a symlink C{key -> ..data/key}.  The
    files are then read through the directory C{..data} names, and C{..data}
    is read again afterwards: if the kubelet swapped it meanwhile, the
    whole read starts over, so the bytes and the generation always belong
    together and several files never mix two generations.
    """

    def __init__(
        self,
        path: Path,
        files: Sequence[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = path
        self._several = files is not None
        self.directory = path if files is not None else path.parent
        self.names: tuple[str, ...] = (
            tuple(files) if files is not None else (path.name,)
        )
        self.max_bytes = max_bytes
        self._paths = [os.path.join(self.directory, name) for name in self.names]
        self._data_link = os.path.join(self.directory, DATA_DIR_NAME)

    def read(self) -> Snapshot:
        """
        Read the file(s) now.  Never blocks on what is not a regular file:
        a FIFO, socket or device is refused without being read.

        @raise ConfigError: When one cannot be read, naming it and the
            operating system's reason, or is over C{max_bytes}.
        @raise ReadFailed: When the read failed for a reason that is not
            the file's, and may work if tried again.
        """
        for _ in range(_TRIES):
            generation = self._generation()
            try:
                read = [self._read_one(path, generation) for path in self._paths]
            except _Moved:
                continue
            if not any(through for _, through in read):
                return self._snapshot([raw for raw, _ in read], None)
            if self._generation() == generation:
                return self._snapshot([raw for raw, _ in read], generation)
        raise ReadFailed(
            ConfigError(
                f"cannot read: {DATA_DIR_NAME} changed during each of {_TRIES} reads",
                file=str(self.path),
            )
        )

    def _generation(self) -> str | None:
        try:
            return os.readlink(self._data_link)
        except OSError:
            return None

    def _read_one(self, path: str, generation: str | None) -> tuple[bytes, bool]:
        """
        The bytes of C{path}, and whether they were read through
        C{generation} (when C{path} is a link into C{..data}).
        """
        source = path
        if generation is not None:
            try:
                target = os.readlink(path)
            except OSError:
                target = ""
            prefix = DATA_DIR_NAME + "/"
            if target.startswith(prefix):
                source = os.path.join(self.directory, generation, target[len(prefix) :])
        try:
            return self._read_limited(path, source), source != path
        except OSError as e:
            if source != path and self._generation() != generation:
                # The kubelet removed the generation while it was read.
                raise _Moved() from None
            reason = e.strerror or str(e)
            error = ConfigError(f"cannot read: {reason}", file=path)
            if e.errno in _TRANSIENT:
                raise ReadFailed(error) from None
            raise error from None

    def _read_limited(self, path: str, source: str) -> bytes:
        with open_regular(source) as f:
            st = os.fstat(f.fileno())
            # Sized from fstat rather than the limit: a buffer of max_bytes
            # for every small file cost more than the rest of the read.  A
            # file that grew since is read on, up to the limit.
            raw = f.read(min(st.st_size, self.max_bytes) + 1)
            if len(raw) > st.st_size:
                raw += f.read(self.max_bytes + 1 - len(raw))
        if len(raw) > self.max_bytes:
            raise over_limit(self.max_bytes, path)
        return raw

    def _snapshot(self, contents: list[bytes], generation: str | None) -> Snapshot:
        if not self._several:
            [raw] = contents
            return Snapshot(raw, hashlib.sha256(raw).hexdigest(), generation)
        digest = hashlib.sha256()
        for name, raw in zip(self.names, contents, strict=True):
            encoded = name.encode("utf-8", "surrogateescape")
            digest.update(b"%d:%s%d:" % (len(encoded), encoded, len(raw)))
            digest.update(raw)
        return Snapshot(
            dict(zip(self.names, contents, strict=True)), digest.hexdigest(), generation
        )

    def fingerprint(self) -> Fingerprint:
        """
        A cheap summary (the C{..data} target and each file's C{stat}) that
        changes whenever the content may have, without reading it.
        """
        stats: list[object] = [self._generation()]
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError as e:
                stats.append(("error", e.errno))
                continue
            stats += [
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_mode,
            ]
        return tuple(stats)
