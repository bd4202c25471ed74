"""Start and stop the servers under test as real processes."""

from __future__ import annotations

import compileall
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from bench.client import Client
from twisted_demo import testing

#: The checkout the benchmarks belong to.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The service's code in a checkout: its package and its twistd plugins.
SOURCES = ("twisted_demo", "twisted/plugins")


def write_bytecode(root: Path = REPO_ROOT) -> bool:
    """
    Write the bytecode of the service's modules in the checkout C{root},
    as pip writes it for a package it installs and the image's build does.
    Without it, where C{PYTHONDONTWRITEBYTECODE} is set (the image sets it;
    some machines the benchmarks run on do too), every start of a server
    and of its parser process would compile the service's modules from
    source, as no installed service does, while Twisted, installed, is
    loaded from its bytecode.

    @return: Whether every module compiled.
    """
    return all(compileall.compile_dir(root / part, quiet=1) for part in SOURCES)


def configmapdemo_argv(
    config: Path,
    port: int,
    tick: float | None = None,
    max_bytes: int | None = None,
) -> list[str]:
    """The command line of C{twistd -n configmapdemo} on 127.0.0.1:C{port}."""
    options: list[str] = []
    if tick is not None:
        options += ["--tick", str(tick)]
    if max_bytes is not None:
        options += ["--max-bytes", str(max_bytes)]
    return testing.configmapdemo_argv(config, port, *options)


def bare_argv(port: int, body_file: Path) -> list[str]:
    """The command line of the bare C{twisted.web} server, L{bench.bare}."""
    return [
        sys.executable,
        "-m",
        "bench.bare",
        "--port",
        str(port),
        "--body-file",
        str(body_file),
    ]


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    """C{argv} run on the CPUs C{cpus} (a taskset list), or as is if None."""
    if cpus is None:
        return list(argv)
    return ["taskset", "-c", cpus, *argv]


class ServerProcess:
    """
    A server under test: started, awaited until it is ready (C{GET
    /readyz} answers 200, or C{GET path} answers 200 with the body given
    as C{ready}), and stopped with SIGTERM (SIGKILL if it will not go).
    """

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        ready: Callable[[int], bool] | None = None,
        checkout: Path = REPO_ROOT,
    ) -> None:
        self.argv = list(argv)
        #: The checkout the server runs from (another version's, for B8).
        self.checkout = checkout
        #: Whether the server on a port answers yet (default: C{/readyz}).
        self._ready = answers() if ready is None else ready
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("not started")
        return self._process.pid

    def start(self, timeout: float = 20.0) -> float:
        """
        Start the process and return the seconds from C{Popen} to the first
        200 that shows it ready.
        """
        with open(self.log_path, "ab") as log:
            started = time.perf_counter()
            self._process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # twistd puts its working directory on sys.path, which is
                # how it finds twisted/plugins/configmapdemo.py in a
                # checkout or an editable install; the checkout also comes
                # first on the path, before an editable install of another.
                cwd=self.checkout,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    **self._path(),
                },
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self._process.returncode}; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready(self.port):
                self.startup_seconds = time.perf_counter() - started
                return self.startup_seconds
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"server not ready after {timeout} s")
            time.sleep(0.002)

    def _path(self) -> dict[str, str]:
        if self.checkout == REPO_ROOT:
            return {}
        path = [str(self.checkout), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(path)}

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def answers(path: str = "/readyz", body: bytes | None = None) -> Callable[[int], bool]:
    """
    Whether the server on a port answers C{path} with 200 (and C{body}, if
    given): what L{ServerProcess} waits for as it starts.
    """
    return lambda port: _ready(port, path, body)


def _ready(port: int, path: str, body: bytes | None) -> bool:
    client = Client(port, timeout=1.0)
    try:
        status, got = client.get(path)
    except OSError:
        return False
    finally:
        client.close()
    return status == 200 and body in (None, got)
