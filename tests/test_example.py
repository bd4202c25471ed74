"""
The feature-flags example in C{examples/}, run as a real process and
updated the way the kubelet updates a ConfigMap.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest

from tests.support import http, read_output, wait_for
from tests.test_docs import blocks
from twisted_demo.testing import AtomicWriter, free_port, twistd_executable

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _flag(url: str) -> str | None:
    try:
        return http(url).text
    except OSError:
        return None


class _App:
    """
    An example app running as a real process with C{examples} on its path,
    its output kept; L{stop} ends it with C{SIGTERM} and returns its log.
    """

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self._output: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(_EXAMPLES), "PYTHONUNBUFFERED": "1"},
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return read_output(self._output)

    def stop(self) -> str:
        """
        Stop it (killed if it does not stop) and return what it logged,
        which holds no traceback.
        """
        try:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            log = self.output
            self._output.close()
        assert "Traceback" not in log, log
        return log


def _featureflags(flags: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "featureflags",
        str(flags),
        f"tcp:{port}:interface=127.0.0.1",
    ]


def test_example_app_serves_flags_and_follows_configmap_updates(
    tmp_path: Path,
) -> None:
    writer = AtomicWriter(tmp_path / "config")
    writer.write({"flags.yaml": b"search: true\nbeta: false\n"})
    port = free_port()
    app = _App(_featureflags(writer.target_dir / "flags.yaml", port), tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _flag(f"{url}/beta"), "the app to answer") == "off\n"
        assert http(f"{url}/search").text == "on\n"
        assert http(f"{url}/nope").status == 404

        writer.write({"flags.yaml": b"search: true\nbeta: true\n"})
        wait_for(lambda: _flag(f"{url}/beta") == "on\n", "beta to be switched on")

        # A flag that is not a boolean is refused; the last good flags stay.
        writer.write({"flags.yaml": b"search: true\nbeta: maybe\n"})
        wait_for(
            lambda: "flag 'beta' must be true or false, got a string" in app.output,
            "the refusal in the log",
        )
        assert http(f"{url}/beta").text == "on\n"
    finally:
        log = app.stop()
    assert f"Serving the flags of {writer.target_dir / 'flags.yaml'}" in log


def _exits(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(_EXAMPLES)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [[], ["flags.yaml", "tcp:8081", "more"], ["flags.yaml", "tcp:notaport"], ["-h"]],
)
def test_example_app_refuses_a_bad_command_line_with_its_usage(
    args: list[str], tmp_path: Path
) -> None:
    refused = _exits([sys.executable, "-m", "featureflags", *args], tmp_path)
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        2,
        "",
        "usage: python -m featureflags FILE [ENDPOINT]\n",
    )
    # docs/library.md quotes it.
    docs = " ".join((_EXAMPLES.parent / "docs" / "library.md").read_text().split())
    assert f"`{refused.stderr.strip()}`" in docs


def test_example_app_on_a_port_in_use_exits_with_one_line(tmp_path: Path) -> None:
    flags = tmp_path / "flags.yaml"
    flags.write_bytes(b"beta: true\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = _exits(_featureflags(flags, port), tmp_path)
    assert failed.returncode == 1
    [line] = failed.stderr.splitlines()
    assert line.startswith(
        f"featureflags: error: cannot listen on tcp:{port}:interface=127.0.0.1: "
    )
    assert "Traceback" not in failed.stdout


def test_example_app_gets_a_check_for_its_own_parser(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_bytes(b"search: true\n")
    bad.write_bytes(b"search: true\nbeta: maybe\n")
    manifest = tmp_path / "configmap.yaml"
    manifest.write_bytes(
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata:\n"
        b"  flags.yaml: |\n    beta: maybe\n"
    )

    def check(*args: Path | str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "featureflags.check", *map(str, args)]
        return _exits(argv, tmp_path)

    passed = check(good)
    assert (passed.returncode, passed.stdout) == (0, f"OK      {good}\n")
    failed = check(good, bad)
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[1] == (
        f"FAILED  {bad}: flag 'beta' must be true or false, got a string"
    )
    in_manifest = check("--manifest", manifest.name)
    assert (in_manifest.returncode, in_manifest.stdout) == (
        1,
        "FAILED  configmap.yaml: ConfigMap flags, key flags.yaml: "
        "flag 'beta' must be true or false, got a string "
        "(in the manifest: literal value at line 5, column 15)\n",
    )
    # docs/library.md quotes this run.
    docs = (_EXAMPLES.parent / "docs" / "library.md").read_text()
    command = "$ python -m featureflags.check --manifest configmap.yaml\n"
    assert command + in_manifest.stdout in docs
    assert check().returncode == 2


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _flags_tac(tmp_path: Path, flags: Path, port: int) -> Path:
    """
    docs/library.md's flags.tac, on C{flags} and C{port}.
    """
    library = (_EXAMPLES.parent / "docs" / "library.md").read_text()
    [tac] = [b for b in blocks(library) if b.lines and b.lines[0] == "# flags.tac"]
    text = "\n".join(tac.lines) + "\n"
    assert "/etc/config/flags.yaml" in text and '"tcp:8081"' in text
    text = text.replace("/etc/config/flags.yaml", str(flags))
    text = text.replace('"tcp:8081"', f'"tcp:{port}:interface=127.0.0.1"')
    path = tmp_path / "flags.tac"
    path.write_text(text)
    return path


def _app(name: str, tmp_path: Path, flags: Path, port: int) -> list[str]:
    if name == "featureflags":
        return _featureflags(flags, port)
    tac = _flags_tac(tmp_path, flags, port)
    return [twistd_executable(), "-n", "--pidfile=", "-y", str(tac)]


@pytest.mark.parametrize("name", ["featureflags", "flags.tac"])
def test_example_apps_answer_only_once_their_flags_are_loaded(
    name: str, tmp_path: Path
) -> None:
    writer = AtomicWriter(tmp_path / "config")
    writer.write({"flags.yaml": b"beta: [true\n"})
    flags = writer.target_dir / "flags.yaml"
    port = free_port()
    app = _App(_app(name, tmp_path, flags, port), tmp_path)
    try:
        # The invalid file has been read and refused: nothing answers yet.
        wait_for(lambda: "line 2, column 1" in app.output, "the refusal")
        assert _refused(port)
        writer.write({"flags.yaml": b"beta: true\n"})
        wait_for(lambda: _flag(f"http://127.0.0.1:{port}/beta"), "the app to answer")
        assert http(f"http://127.0.0.1:{port}/beta").text == "on\n"
    finally:
        app.stop()
