"""
Process behaviour: a graceful SIGTERM, SIGHUP reloads, and subscribers that
crash without taking the swap with them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogLevel

from bench.proc import process_tree
from tests.bad_configs import good
from tests.support import (
    InProcessService,
    TwistdServer,
    captured_log,
    result_of,
    until,
    wait_for,
)
from twisted_demo.config import parse_message
from twisted_demo.live import Failed, LiveConfigService, Loaded, Updated
from twisted_demo.testing import write_in_place


def _connect(server: TwistdServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _refuses_connections(server: TwistdServer) -> bool:
    try:
        _connect(server).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Queued in the listen backlog as the port closed: the kernel
        # resets what the server never accepted.  Refused too.
        return True
    return False


def _read_all(s: socket.socket) -> bytes:
    received = b""
    while chunk := s.recv(65536):
        received += chunk
    return received


def _body(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def _in_flight(server: TwistdServer, head: bytes) -> socket.socket:
    """
    A connection whose request head the server has read (it answered
    "100 Continue") and whose body has not been sent yet.
    """
    s = _connect(server)
    s.sendall(head + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    return s


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_cleanly(
    twistd_server: TwistdServer,
) -> None:
    posting = _in_flight(twistd_server, b"POST /-/reload HTTP/1.1\r\nHost: x\r\n")
    getting = _in_flight(twistd_server, b"GET / HTTP/1.1\r\nHost: x\r\n")
    # A keep-alive connection between requests.
    idle = _connect(twistd_server)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).endswith(b"\r\n\r\nok\n")

    twistd_server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: _refuses_connections(twistd_server), "new connections refused")
    assert twistd_server.process.poll() is None

    posting.sendall(b"abcd")
    getting.sendall(b"abcd")
    posted, got = _read_all(posting), _read_all(getting)
    assert posted.startswith(b"HTTP/1.1 200 ")
    assert json.loads(_body(posted))["outcome"] == "unchanged"
    assert got.startswith(b"HTTP/1.1 200 ")
    assert _body(got) == b"Hello World"
    # The idle connection is simply closed.
    assert _read_all(idle) == b""

    assert twistd_server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert "Server Shut Down." in twistd_server.output
    assert "Traceback" not in twistd_server.output
    for s in (posting, getting, idle):
        s.close()


def test_repeated_sigterm_while_stopping_is_logged_not_a_traceback(
    twistd_server: TwistdServer,
) -> None:
    posting = _in_flight(twistd_server, b"POST /-/reload HTTP/1.1\r\nHost: x\r\n")
    twistd_server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: _refuses_connections(twistd_server), "new connections refused")
    twistd_server.process.send_signal(signal.SIGTERM)
    wait_for(
        lambda: "Received SIGTERM again: already stopping" in twistd_server.output,
        "the second SIGTERM in the log",
    )
    # The reload asked for during the drain still runs in the parser process.
    posting.sendall(b"abcd")
    posted = _read_all(posting)
    assert json.loads(_body(posted))["outcome"] == "unchanged"
    assert twistd_server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert "Server Shut Down." in twistd_server.output
    assert "Traceback" not in twistd_server.output
    posting.close()


def test_sigterm_gives_up_on_a_stalled_client_and_still_exits_within_five_seconds(
    twistd_server: TwistdServer,
) -> None:
    stalled = _in_flight(twistd_server, b"POST /-/reload HTTP/1.1\r\nHost: x\r\n")
    assert twistd_server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert "Stopping with 1 connection(s) still open" in twistd_server.output
    assert "Traceback" not in twistd_server.output
    stalled.close()


def test_sighup_rereads_a_change_the_watcher_has_not_acted_on(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("before"))
    # A tick of an hour: only SIGHUP can make this reload happen.
    server = TwistdServer(path, ["--tick", "3600"])
    try:
        server.wait_ready()
        write_in_place(path, good("after SIGHUP"))
        assert server.get("/").text == "before"
        server.process.send_signal(signal.SIGHUP)
        server.wait_message("after SIGHUP")
        assert server.output.count("Received SIGHUP: reloading the config") == 1
    finally:
        server.close()


def test_crashing_subscriber_does_not_stop_the_swap_or_other_subscribers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("first"))
    service = InProcessService(path)
    told: list[str] = []

    def crash(old: Loaded[str] | None, new: Loaded[str]) -> None:
        raise RuntimeError("subscriber bug")

    def crash_observer(result: object) -> None:
        raise RuntimeError("observer bug")

    service.live.subscribe(crash)
    service.live.subscribe(lambda old, new: told.append(new.value))
    service.live.observe(crash_observer)

    with captured_log() as log:
        result_of(service.live.reload())
        write_in_place(path, good("second"))
        result = result_of(service.live.reload())

    assert isinstance(result, Updated)
    assert told == ["first", "second"]
    assert service.get("/").text == "second"
    assert service.metric("configmapdemo_config_reloads_total") == 1
    assert (
        sum(
            "Config subscriber" in line
            for line in log.messages(at_least=LogLevel.error)
        )
        == 2
    )
    assert (
        sum("Reload observer" in line for line in log.messages(at_least=LogLevel.error))
        == 2
    )
    assert service.get("/config").status == 200


def _children() -> set[int]:
    return set(process_tree(os.getpid())[1:])


@pytest_twisted.ensureDeferred
async def test_update_whose_parser_is_stopped_then_killed_is_retried_and_served(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("before"))
    before = _children()
    # The default runner, a parser process; a tick of an hour, so that only
    # the service's own retry may read the file again.
    live = LiveConfigService(path, parse_message, reactor=reactor, tick=3600)
    with captured_log():
        live.startService()
        try:
            await live.when_loaded()
            [parser] = _children() - before
            os.kill(parser, signal.SIGSTOP)
            path.write_bytes(good("after the kill"))
            answer = live.reload()
            assert not answer.called
            os.kill(parser, signal.SIGKILL)
            failed = await answer
            assert isinstance(failed, Failed)
            assert failed.error.startswith(f"{path}: cannot parse: the parser process")
            assert failed.retry_in is not None
            await until(
                reactor,
                lambda: (
                    live.current is not None and live.current.value == "after the kill"
                ),
                "the update to be served by a new parser process",
            )
            assert live.last_error is None
        finally:
            await live.stopService()
