"""
Helpers that write config files the way real writers do, shared by the
tests and the benchmarks.

L{AtomicWriter} reproduces the kubelet's AtomicWriter
(C{pkg/volume/util/atomic_writer.go}) step by step, so that a watcher sees
exactly the inotify events a ConfigMap volume produces on an update.
L{write_in_place} and L{write_by_rename} are the two ways editors and
shell tools save a plain file.  L{configmapdemo_argv} is the command line
that runs the real service on a loopback port, L{webhook_argv} the
webhook's, and L{admission_review} what the API server sends it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted_demo.live import DATA_DIR_NAME

DATA_DIR_TMP_NAME = "..data_tmp"

_sequence = itertools.count()


class AtomicWriter:
    """
    Publish payloads into C{target_dir} with the kubelet's atomic-swap dance.

    Each L{write} makes the watched directory see, in order::

        CREATE,ISDIR ..<timestamp>    the new payload directory
        ATTRIB,ISDIR ..<timestamp>    its chmod 0755
        CREATE ..data_tmp             symlink to the new directory
        MOVED_FROM ..data_tmp         rename over ..data: the commit point
        MOVED_TO ..data
        CREATE key                    only for keys new in this payload
        DELETE key                    only for keys gone from this payload
        DELETE,ISDIR ..<old>          the previous payload directory

    The user-visible files are symlinks C{key -> ..data/key} and are never
    rewritten; only C{..data} moves.
    """

    def __init__(self, target_dir: str | os.PathLike[str]) -> None:
        self.target_dir = Path(target_dir)

    def _current_generation(self) -> str | None:
        try:
            return os.readlink(self.target_dir / DATA_DIR_NAME)
        except FileNotFoundError:
            return None

    def _new_generation_name(self) -> str:
        # The kubelet uses ioutil.TempDir with a timestamp prefix; the
        # counter keeps names unique when updates land within one
        # nanosecond-clock tick.
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        suffix = (time.monotonic_ns() + next(_sequence)) % 1_000_000_000
        return f"..{stamp}.{suffix:09d}"

    def write(self, payload: Mapping[str, bytes]) -> str:
        """
        Publish C{payload} (file name to content) and return the name of the
        new timestamped directory, which is what C{..data} now points at.
        """
        self.target_dir.mkdir(parents=True, exist_ok=True)
        old_generation = self._current_generation()
        old_keys: set[str] = set()
        if old_generation is not None:
            old_keys = set(os.listdir(self.target_dir / old_generation))

        generation = self._new_generation_name()
        while (self.target_dir / generation).exists():
            generation = self._new_generation_name()
        new_dir = self.target_dir / generation
        new_dir.mkdir()
        new_dir.chmod(0o755)
        for key, content in payload.items():
            (new_dir / key).write_bytes(content)
            (new_dir / key).chmod(0o644)

        tmp_link = self.target_dir / DATA_DIR_TMP_NAME
        os.symlink(generation, tmp_link)
        self.commit(tmp_link, self.target_dir / DATA_DIR_NAME)

        for key in payload:
            link = self.target_dir / key
            if not link.is_symlink():
                os.symlink(f"{DATA_DIR_NAME}/{key}", link)
        for key in sorted(old_keys - set(payload)):
            (self.target_dir / key).unlink()

        if old_generation is not None:
            _remove_tree(self.target_dir / old_generation)
        return generation

    def commit(self, tmp_link: Path, data_link: Path) -> None:
        """
        Rename C{tmp_link} over C{data_link}: the commit point of an update.

        A separate method so that benchmarks can timestamp the exact moment
        the new payload becomes visible, without re-implementing L{write}.
        """
        os.rename(tmp_link, data_link)


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _remove_tree(child)
        else:
            child.unlink()
    path.rmdir()


def write_in_place(path: str | os.PathLike[str], content: bytes) -> None:
    """
    Overwrite C{path} the way C{echo > file} or C{cp} does: truncate, write,
    close, leaving the inode (and any symlink pointing at it) in place.
    """
    with open(path, "wb") as f:
        f.write(content)


def write_by_rename(path: str | os.PathLike[str], content: bytes) -> None:
    """
    Replace C{path} the way editors and C{sed -i} do: write a sibling
    temporary file, then rename it over the original.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    os.rename(tmp, target)


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd_executable() -> str:
    """
    The C{twistd} script installed beside the running interpreter, so that
    a test or benchmark runs the service from its own environment.
    """
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError("twistd not found beside the interpreter or on PATH")
    return found


def configmapdemo_argv(
    config: str | os.PathLike[str], port: int, *options: str
) -> list[str]:
    """
    The command line of C{twistd -n configmapdemo} serving C{config} on
    127.0.0.1:C{port}, in the foreground with no pid file, followed by
    further C{options} of C{configmapdemo}.
    """
    return [
        twistd_executable(),
        "-n",
        "--pidfile=",
        "configmapdemo",
        "--config",
        os.fspath(config),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        *options,
    ]


def webhook_argv(
    port: int, cert: str | os.PathLike[str], key: str | os.PathLike[str], *options: str
) -> list[str]:
    """
    The command line of C{twistd -n configmapdemo-webhook} serving HTTPS on
    127.0.0.1:C{port} with the pair C{cert} and C{key}, in the foreground
    with no pid file, followed by further C{options}.
    """
    return [
        twistd_executable(),
        "-n",
        "--pidfile=",
        "configmapdemo-webhook",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--tls-cert",
        os.fspath(cert),
        "--tls-key",
        os.fspath(key),
        *options,
    ]


#: The C{kind} of a ConfigMap in an C{AdmissionReview}'s request.
CONFIGMAP_KIND = {"group": "", "version": "v1", "kind": "ConfigMap"}


def admission_review(
    configmap: Mapping[str, Any] | None,
    *,
    operation: str = "CREATE",
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
    kind: Mapping[str, str] = CONFIGMAP_KIND,
    old: Mapping[str, Any] | None = None,
) -> bytes:
    """
    The body of the C{admission.k8s.io/v1} C{AdmissionReview} the API server
    sends a validating webhook for C{operation} on C{configmap} (an object
    of C{kind}), as JSON: C{object} is null for a C{DELETE}, C{oldObject}
    is C{old}.
    """
    name = (configmap or old or {}).get("metadata", {}).get("name", "")
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": dict(kind),
            "resource": {
                "group": kind["group"],
                "version": kind["version"],
                "resource": kind["kind"].lower() + "s",
            },
            "requestKind": dict(kind),
            "requestResource": {
                "group": kind["group"],
                "version": kind["version"],
                "resource": kind["kind"].lower() + "s",
            },
            "name": name,
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": None if configmap is None else dict(configmap),
            "oldObject": None if old is None else dict(old),
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return json.dumps(review).encode("utf-8")


def configmap_object(
    data: Mapping[str, str] | None = None,
    binary: Mapping[str, str] | None = None,
    name: str = "configmap-microservice-demo",
) -> dict[str, Any]:
    """
    A ConfigMap as the API server writes it in a review: C{binary} is
    C{binaryData}, already base64.
    """
    configmap: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app.kubernetes.io/name": name},
        },
    }
    if data is not None:
        configmap["data"] = dict(data)
    if binary is not None:
        configmap["binaryData"] = dict(binary)
    return configmap
