"""
The service as a user runs it: C{twistd -n configmapdemo} in a subprocess,
updated the way the kubelet updates a ConfigMap volume.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
from pathlib import Path

from tests.support import (
    CONFIG_NAME,
    FAILURES,
    RELOADS,
    TwistdServer,
    http,
    niceness_of,
    wait_for,
)
from twisted_demo.live._log import LOG_BURST
from twisted_demo.live._spawn import BOOTSTRAP
from twisted_demo.testing import AtomicWriter


def test_serves_message_and_follows_a_configmap_update(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    first = twistd_server.get("/")
    assert (first.status, first.body) == (200, b"Hello World")
    assert first.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert first.headers["Content-Length"] == "11"

    configmap.write({CONFIG_NAME: b"message: Hello Kubernetes\n"})
    twistd_server.wait_message("Hello Kubernetes")

    assert twistd_server.metric(RELOADS) == 1
    assert twistd_server.metric(FAILURES) == 0
    assert len(re.findall("Config file updated: sha256", twistd_server.output)) == 1


def test_last_update_of_a_storm_is_logged_by_the_time_the_server_stops(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    # More updates than are logged a line each at once: the later ones are
    # summed up in lines that may still be held back when SIGTERM comes.
    count = 3 * LOG_BURST
    for number in range(count):
        configmap.write({CONFIG_NAME: f"message: update {number}\n".encode()})
        twistd_server.wait_message(f"update {number}")
    assert twistd_server.metric(RELOADS) == count
    twistd_server.stop(signal.SIGTERM)
    last = hashlib.sha256(f"message: update {count - 1}\n".encode()).hexdigest()
    updates = re.findall(r"Config file updated.*", twistd_server.output)
    assert f"-> {last[:12]} " in updates[-1]


def test_sigterm_stops_cleanly_within_five_seconds(
    twistd_server: TwistdServer,
) -> None:
    # twistd re-raises SIGTERM by default after a clean shutdown, so the
    # process ends "killed by SIGTERM" (status -15 here, 143 in a shell).
    assert twistd_server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert "Server Shut Down." in twistd_server.output
    assert "Traceback" not in twistd_server.output


def test_config_is_parsed_by_one_nicer_child_that_ends_with_the_server(
    twistd_server: TwistdServer,
) -> None:
    [child] = wait_for(twistd_server.children, "the parser process")
    server_niceness = niceness_of(twistd_server.process.pid)
    # What ps shows (README): the interpreter without site, running a
    # program that lowers its priority before it imports anything else.
    # A child still inside execve shows an empty command line.
    argv = wait_for(
        lambda: Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:-1] or None,
        "the parser process's command line",
    )
    assert [arg.decode() for arg in argv[1:5]] == ["-S", "-c", BOOTSTRAP, "10"]
    statements = [statement.strip() for statement in BOOTSTRAP.split(";")]
    assert statements[:2] == ["import os, sys", "os.nice(int(sys.argv[1]))"]
    assert "from twisted_demo.live._child import main" in statements
    wait_for(
        lambda: niceness_of(child) == server_niceness + 10, "the child to be nicer"
    )
    assert twistd_server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert not Path(f"/proc/{child}").exists()


def test_killed_parser_is_replaced_and_the_next_update_served(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    [child] = wait_for(twistd_server.children, "the parser process")
    os.kill(child, signal.SIGKILL)
    wait_for(
        lambda: (
            "Config parser process ended (killed by SIGKILL)" in twistd_server.output
        ),
        "the parser's end in the log",
    )
    assert twistd_server.get("/").text == "Hello World"
    configmap.write({CONFIG_NAME: b"message: after the kill\n"})
    twistd_server.wait_message("after the kill")
    assert twistd_server.metric(FAILURES) == 0
    assert twistd_server.children() not in ([], [child])


def test_sighup_forces_a_reload(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    generation = configmap.write({CONFIG_NAME: b"message: Hello SIGHUP\n"})
    twistd_server.wait_message("Hello SIGHUP")
    twistd_server.process.send_signal(signal.SIGHUP)
    twistd_server.wait_message("Hello SIGHUP")
    assert "Received SIGHUP: reloading the config" in twistd_server.output
    assert twistd_server.get("/config").text.count(generation) == 1


def test_invalid_config_at_startup_exits_with_one_clear_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: [unclosed\n")
    server = TwistdServer(config)
    try:
        status = server.process.wait(10)
        assert status == 1
        assert server.output.strip().splitlines() == [
            f"configmapdemo: error: {config} line 2, column 1: "
            "did not find expected ',' or ']'"
        ]
    finally:
        server.close()


def test_missing_config_at_startup_exits_with_one_clear_line(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope.yaml"
    server = TwistdServer(missing)
    try:
        assert server.process.wait(10) == 1
        assert server.output.strip().splitlines() == [
            f"configmapdemo: error: {missing}: cannot read: No such file or directory"
        ]
    finally:
        server.close()


def test_port_in_use_exits_non_zero_without_traceback(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    second = TwistdServer(
        configmap.target_dir / CONFIG_NAME,
        extra=["--listen", f"tcp:{twistd_server.port}:interface=127.0.0.1"],
    )
    try:
        assert second.process.wait(10) != 0
        assert "Address already in use" in second.output
        assert "Traceback" not in second.output
    finally:
        second.close()
    assert http(twistd_server.url + "/").body == b"Hello World"


def test_refused_reload_answers_422_with_its_reason_phrase(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    configmap.write({CONFIG_NAME: b"message: [broken\n"})
    with socket.create_connection(("127.0.0.1", twistd_server.port), timeout=10) as s:
        s.sendall(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 422 Unprocessable Content"
    assert twistd_server.get("/").text == "Hello World"
