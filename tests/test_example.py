"""
The feature-flags example in C{examples/}, run as a real process and
updated the way the kubelet updates a ConfigMap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from tests.support import http, wait_for
from twisted_demo.testing import AtomicWriter, free_port

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _flag(url: str) -> str | None:
    try:
        return http(url).text
    except OSError:
        return None


def _read(output: IO[bytes]) -> str:
    output.seek(0)
    return output.read().decode("utf-8", "replace")


def test_example_app_serves_flags_and_follows_configmap_updates(
    tmp_path: Path,
) -> None:
    writer = AtomicWriter(tmp_path / "config")
    writer.write({"flags.yaml": b"search: true\nbeta: false\n"})
    port = free_port()
    output = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "featureflags",
            str(writer.target_dir / "flags.yaml"),
            f"tcp:{port}:interface=127.0.0.1",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(_EXAMPLES), "PYTHONUNBUFFERED": "1"},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
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
            lambda: "flag 'beta' must be true or false, got a string" in _read(output),
            "the refusal in the log",
        )
        assert http(f"{url}/beta").text == "on\n"

        process.send_signal(signal.SIGTERM)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log = _read(output)
        output.close()
    assert "Traceback" not in log, log
    assert f"Serving the flags of {writer.target_dir / 'flags.yaml'}" in log


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
        return subprocess.run(
            [sys.executable, "-m", "featureflags.check", *map(str, args)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(_EXAMPLES)},
            capture_output=True,
            text=True,
            timeout=60,
        )

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
