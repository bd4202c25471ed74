"""
Reading the config file from disk, with its ConfigMap generation, as one
consistent snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from attrs import evolve, frozen

from twisted_demo.config import (
    DEFAULT_MAX_BYTES,
    Config,
    ConfigError,
    parse_config,
    sha256_hex,
)

#: The symlink a ConfigMap volume swaps atomically on every update.
DATA_DIR_NAME = "..data"


@frozen
class Snapshot:
    """
    The bytes of the config file at one moment and where they came from.

    @ivar generation: The C{..data} target the bytes were read through, or
        L{None} outside a ConfigMap layout.
    """

    raw: bytes
    sha256: str
    generation: str | None


@frozen
class Reading:
    """
    What L{ConfigFile.read_unless_known} found: a new config, a failure, or
    (with neither) bytes that were already known.

    @ivar sha256: The digest of the bytes read, or L{None} if none could be.
    @ivar generation: The ConfigMap generation they were read through.
    """

    sha256: str | None
    generation: str | None
    config: Config | None = None
    error: str | None = None


#: What L{ConfigFile.fingerprint} returns: cheap to compute, and different
#: whenever the file's content may have changed.
Fingerprint = tuple[object, ...]


@frozen
class ConfigFile:
    """
    The config file at C{path}, read at most C{max_bytes} at a time.

    In a ConfigMap volume C{path} is a symlink C{key -> ..data/key}; the
    file is then read through the directory C{..data} names at that moment,
    so the bytes and the reported generation always belong together even
    when the kubelet swaps C{..data} during the read.
    """

    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def directory(self) -> Path:
        """
        The directory that holds the file: the one to watch.
        """
        return self.path.parent

    def _data_relative_name(self) -> str | None:
        """
        C{key} when C{path} is a ConfigMap link C{key -> ..data/key}.
        """
        try:
            target = os.readlink(self.path)
        except OSError:
            return None
        prefix = DATA_DIR_NAME + "/"
        return target[len(prefix) :] if target.startswith(prefix) else None

    def _read_limited(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "not a regular file")
            # Sized from fstat rather than the limit: a buffer of max_bytes
            # for every small file cost more than the rest of the read.  A
            # file that grew since is read on, up to the limit.
            raw = f.read(min(st.st_size, self.max_bytes) + 1)
            if len(raw) > st.st_size:
                raw += f.read(self.max_bytes + 1 - len(raw))
        if len(raw) > self.max_bytes:
            raise ConfigError(
                f"{self.path}: file is over the limit of {self.max_bytes} bytes"
            )
        return raw

    def read(self) -> Snapshot:
        """
        Read the file now.

        @raise ConfigError: When it cannot be read, naming the path and the
            operating system's reason.
        """
        try:
            return self._read()
        except OSError as e:
            reason = e.strerror or str(e)
            if isinstance(e, IsADirectoryError):
                reason = "is not a regular file"
            raise ConfigError(f"{self.path}: cannot read: {reason}") from None

    def _read(self) -> Snapshot:
        key = self._data_relative_name()
        # A few tries cover the kubelet replacing the generation between
        # readlink and open; it removes the old directory right after.
        for _ in range(5):
            if key is None:
                break
            try:
                generation = os.readlink(self.directory / DATA_DIR_NAME)
            except OSError:
                break
            try:
                raw = self._read_limited(self.directory / generation / key)
            except FileNotFoundError:
                continue
            return Snapshot(raw=raw, sha256=sha256_hex(raw), generation=generation)
        raw = self._read_limited(self.path)
        return Snapshot(raw=raw, sha256=sha256_hex(raw), generation=None)

    def parse(self, snapshot: Snapshot, now: float) -> Config:
        """
        Turn C{snapshot} of this file into a L{Config} loaded at C{now}.

        @raise ConfigError: When the content is not a valid config.
        """
        return parse_config(
            snapshot.raw,
            source=str(self.path),
            loaded_at=now,
            generation=snapshot.generation,
            max_bytes=self.max_bytes,
            sha256=snapshot.sha256,
        )

    def read_unless_known(self, known: tuple[str | None, ...], now: float) -> Reading:
        """
        Read the file, and parse it loaded at C{now} unless the digest of
        its bytes is one of C{known}.  Never raises L{ConfigError}: it is
        returned, so this can run in a thread or another process.
        """
        try:
            snapshot = self.read()
        except ConfigError as e:
            return Reading(sha256=None, generation=None, error=str(e))
        found = Reading(sha256=snapshot.sha256, generation=snapshot.generation)
        if snapshot.sha256 in known:
            return found
        try:
            return evolve(found, config=self.parse(snapshot, now))
        except ConfigError as e:
            return evolve(found, error=str(e))

    def load(self, now: float) -> Config:
        """
        Read and parse the file now.

        @raise ConfigError: When it cannot be read or is not a valid config.
        """
        return self.parse(self.read(), now)

    def fingerprint(self) -> Fingerprint:
        """
        A cheap summary (C{..data} target and the file's C{stat}) that
        changes whenever the content may have, without reading it.
        """
        # Plain strings, not Path arithmetic: this runs on the reactor at
        # every update and tick, and joining Paths cost more than the two
        # system calls.
        path = os.fspath(self.path)
        link = os.path.join(os.path.dirname(path), DATA_DIR_NAME)
        try:
            generation: str | None = os.readlink(link)
        except OSError:
            generation = None
        try:
            st = os.stat(path)
        except OSError as e:
            return (generation, "error", e.errno)
        return (
            generation,
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_mode,
        )
