"""
The control plane: forced reloads (C{SIGHUP}, C{POST /-/reload}), who may
ask for them, what they answer and log, and how a flood of them is folded
into one reload per tick; and the library's hook they use.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from tests.certs import CA, mismatched
from tests.support import (
    CONFIG_NAME,
    TwistdServer,
    captured_log,
    http,
    logged_times,
    result_of,
    signal_until_summed_up,
    wait_for,
)
from twisted_demo.config import parse_message
from twisted_demo.live import (
    ConfigError,
    Failed,
    LiveConfigService,
    Outcome,
    Unchanged,
    Updated,
    inline,
)
from twisted_demo.logs import REPEAT_BURST
from twisted_demo.options import Options
from twisted_demo.reloads import Forced, ForcedReloads, may_force_reload
from twisted_demo.tap import demo_resource
from twisted_demo.testing import AtomicWriter
from twisted_demo.tls import CERT_FILE, KEY_FILE, tls_files

TICK = 0.1


def _identity(data: bytes) -> bytes:
    if data == b"bad":
        raise ConfigError("bad")
    return data


def test_service_told_not_to_log_its_outcomes_logs_none(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"one")
    live = LiveConfigService(path, _identity, runner=inline, log_outcomes=False)
    told: list[Outcome[bytes]] = []
    live.observe(told.append)
    with captured_log() as log:
        live.load_blocking()
        path.write_bytes(b"two")
        assert isinstance(result_of(live.reload()), Updated)
        path.write_bytes(b"bad")
        assert isinstance(result_of(live.reload()), Failed)
    assert log.messages() == []
    assert len(told) == 3


# -- folding a flood into one reload per tick ----------------------------------


class Config:
    """
    A config file followed on a L{Clock}, parsed inline, counting the
    reloads that read it.
    """

    def __init__(self, tmp_path: Path, runner: Any = inline) -> None:
        self.path = tmp_path / "config.yaml"
        self.path.write_bytes(b"message: hi\n")
        self.clock = Clock()
        self.live = LiveConfigService(
            self.path, parse_message, reactor=self.clock, runner=runner
        )
        self.reloads: list[Outcome[str]] = []
        self.live.observe(self.reloads.append)
        self.forced = ForcedReloads(self.live, None, self.clock, TICK)


def test_first_forced_reload_runs_at_once(tmp_path: Path) -> None:
    config = Config(tmp_path)
    forced = result_of(config.forced.request("SIGHUP"))
    assert isinstance(forced.config, Updated)
    assert len(config.reloads) == 1


def test_requests_within_the_tick_share_the_next_reload_and_its_outcome(
    tmp_path: Path,
) -> None:
    config = Config(tmp_path)
    result_of(config.forced.request("SIGHUP"))
    config.clock.advance(TICK / 2)
    later = [config.forced.request("POST /-/reload") for _ in range(5)]
    assert not any(d.called for d in later)
    config.clock.advance(TICK / 2)
    outcomes = [result_of(d) for d in later]
    assert len(config.reloads) == 2
    assert isinstance(outcomes[0], Forced)
    assert all(outcome is outcomes[0] for outcome in outcomes)


def test_request_while_a_reload_is_under_way_waits_for_the_next(
    tmp_path: Path,
) -> None:
    # The reload under way may have read the files before the request.
    parses: list[Deferred[str]] = []

    def held(parse: Any, data: bytes) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        parses.append(d)
        return d

    config = Config(tmp_path, runner=held)
    first = config.forced.request("SIGHUP")
    config.path.write_bytes(b"message: changed\n")
    second = config.forced.request("SIGHUP")
    config.clock.advance(TICK * 5)
    assert len(parses) == 1
    parses[0].callback("hi")
    assert isinstance(result_of(first).config, Updated)
    assert not second.called
    config.clock.advance(TICK)
    assert len(parses) == 2
    parses[1].callback("changed")
    assert isinstance(result_of(second).config, Updated)


def test_a_request_whose_client_went_away_leaves_the_others_answered(
    tmp_path: Path,
) -> None:
    config = Config(tmp_path)
    result_of(config.forced.request("SIGHUP"))
    gone, staying = (config.forced.request("POST /-/reload") for _ in range(2))
    # What Klein does with a request's Deferred when its connection is lost.
    gone.cancel()
    gone.addErrback(lambda failure: failure.trap(CancelledError))
    config.clock.advance(TICK)
    assert isinstance(result_of(staying), Forced)
    assert len(config.reloads) == 2


def test_a_request_made_as_an_answer_arrives_shares_one_later_reload(
    tmp_path: Path,
) -> None:
    """
    A client that pipelines its requests asks again as each answer is
    written, inside the reload's own callbacks: that used to start a second
    run a tick later beside the one the request started, with no one
    waiting for it.
    """
    config = Config(tmp_path)
    answered: list[Forced] = []

    def ask_again(forced: Forced) -> None:
        answered.append(forced)
        if len(answered) < 5:
            config.forced.request("POST /-/reload").addCallback(ask_again)

    config.forced.request("POST /-/reload").addCallback(ask_again)
    for _ in range(20):
        config.clock.advance(TICK)
    assert len(answered) == 5
    # One reload per answer, a tick apart: none run for nobody.
    assert len(config.reloads) == 5
    assert config.clock.getDelayedCalls() == []


def test_a_flood_of_forced_reloads_costs_one_reload_per_tick(tmp_path: Path) -> None:
    config = Config(tmp_path)
    asked = []
    # 10,000 requests over one second, as a client in a loop sends them.
    for _ in range(10_000):
        asked.append(config.forced.request("POST /-/reload"))
        config.clock.advance(0.0001)
    config.clock.advance(TICK)
    assert all(d.called for d in asked)
    assert len(config.reloads) <= 1 / TICK + 2
    assert all(isinstance(r, Updated | Unchanged) for r in config.reloads)


def test_each_forced_reload_logs_its_outcome_in_one_line(tmp_path: Path) -> None:
    config = Config(tmp_path)
    with captured_log() as log:
        result_of(config.forced.request("SIGHUP"))
        config.path.write_bytes(b"message: changed\n")
        # Both within the tick of the first: one reload for the two.
        both = [config.forced.request(by) for by in ("SIGHUP", "POST /-/reload")]
        config.clock.advance(TICK)
        config.path.write_bytes(b"nope: 1\n")
        config.clock.advance(TICK)
        refused = config.forced.request("POST /-/reload")
    assert all(d.called for d in [*both, refused])
    sha256 = [
        hashlib.sha256(data).hexdigest()[:12]
        for data in (b"message: hi\n", b"message: changed\n")
    ]
    forced = [line for line in log.messages() if line.startswith("Forced reload")]
    assert forced == [
        f"Forced reload (SIGHUP): config updated to sha256 {sha256[0]}",
        f"Forced reload (SIGHUP and POST /-/reload): config updated to sha256 "
        f"{sha256[1]}",
        f"Forced reload (POST /-/reload): config refused, still serving sha256 "
        f"{sha256[1]}: {config.path}: 'message' is missing",
    ]


# -- who may POST /-/reload ----------------------------------------------------


@pytest.mark.parametrize(
    ("client", "loopback"),
    [
        (IPv4Address("TCP", "127.0.0.1", 5000), True),
        (IPv4Address("TCP", "127.8.9.10", 5000), True),
        (IPv6Address("TCP", "::1", 5000), True),
        (IPv6Address("TCP", "::ffff:127.0.0.1", 5000), True),
        (UNIXAddress(b"/run/demo.sock"), True),
        (IPv4Address("TCP", "10.1.2.3", 5000), False),
        (IPv4Address("TCP", "192.0.2.7", 5000), False),
        (IPv6Address("TCP", "::ffff:10.1.2.3", 5000), False),
        (IPv6Address("TCP", "fe80::1%eth0", 5000), False),
        (IPv6Address("TCP", "2001:db8::1", 5000), False),
        (None, False),
    ],
)
def test_who_may_force_a_reload(client: IAddress | None, loopback: bool) -> None:
    assert may_force_reload("loopback", client) is loopback
    assert may_force_reload("any", client) is True
    assert may_force_reload("off", client) is False


def post_from(resource: Any, client: IAddress) -> tuple[int, dict[str, Any]]:
    """
    C{POST /-/reload} to C{resource} over HTTP from C{client}, through
    twisted.web's own server on an in-memory transport.
    """
    transport = StringTransport(peerAddress=client)
    channel = Site(resource).buildProtocol(client)
    assert channel is not None
    channel.makeConnection(transport)
    channel.dataReceived(
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    head, _, body = transport.value().partition(b"\r\n\r\n")
    channel.connectionLost(None)
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.mark.parametrize(("reload_from", "status"), [("loopback", 403), ("any", 200)])
def test_post_from_another_machine_is_refused_unless_opened(
    tmp_path: Path, reload_from: str, status: int
) -> None:
    config = Config(tmp_path)
    resource = demo_resource(config.live, forced=config.forced, reload_from=reload_from)
    code, body = post_from(resource, IPv4Address("TCP", "10.1.2.3", 5000))
    assert code == status
    if status == 403:
        assert body == {
            "error": "POST /-/reload is accepted only from this machine "
            "(--reload-from loopback): use kubectl port-forward or kubectl exec, "
            "or start the service with --reload-from any"
        }
        assert config.reloads == []
    else:
        assert body["outcome"] == "updated"


def test_post_answers_with_the_outcome_of_the_certificate_pair_too(
    tmp_path: Path,
) -> None:
    config = Config(tmp_path)
    secret = tmp_path / "tls"
    secret.mkdir()
    leaf = CA.make().issue()
    for name, contents in leaf.files().items():
        (secret / name).write_bytes(contents)
    files = tls_files(str(secret / CERT_FILE), str(secret / KEY_FILE))
    assert files is not None
    pair = LiveConfigService(
        files.directory,
        files.parse,
        files=files.names,
        reactor=config.clock,
        runner=inline,
    )
    result_of(pair.reload())
    forced = ForcedReloads(config.live, pair, config.clock, TICK)
    resource = demo_resource(config.live, pair, forced=forced)
    loopback = IPv4Address("TCP", "127.0.0.1", 5000)

    code, body = post_from(resource, loopback)
    assert code == 200
    assert body["tls"] == {"outcome": "unchanged", "error": None, "sha256": leaf.sha256}

    for name, contents in mismatched(leaf).items():
        (secret / name).write_bytes(contents)
    config.clock.advance(TICK)
    code, body = post_from(resource, loopback)
    # The config is unchanged, but the pair was refused: not a 200.
    assert (code, body["outcome"]) == (422, "unchanged")
    assert body["tls"]["outcome"] == "failed"
    assert body["tls"]["error"] == pair.last_error
    assert body["tls"]["sha256"] == leaf.sha256


# -- the options, and real twistd processes --------------------------------------


def test_help_documents_who_may_force_a_reload() -> None:
    text = str(Options())
    assert "--reload-from" in text and "loopback" in text


def test_only_loopback_may_force_a_reload_by_default(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--config", str(tmp_path / "config.yaml")])
    assert options["reload-from"] == "loopback"


def test_sighup_and_post_log_their_outcome_in_a_real_twistd(
    twistd_server: TwistdServer, configmap: AtomicWriter
) -> None:
    twistd_server.process.send_signal(signal.SIGHUP)
    sha256 = hashlib.sha256(b"message: Hello World\n").hexdigest()[:12]
    wait_for(
        lambda: (
            f"Forced reload (SIGHUP): config unchanged (sha256 {sha256})"
            in twistd_server.output
        ),
        "the SIGHUP's outcome logged",
    )
    configmap.write({CONFIG_NAME: b"message: Hello POST\n"})
    reply = http(twistd_server.url + "/-/reload", method="POST")
    assert reply.status == 200
    sha256 = hashlib.sha256(b"message: Hello POST\n").hexdigest()[:12]
    # Updated by the POST, or by the watcher just before it.
    wait_for(
        lambda: (
            f"Forced reload (POST /-/reload): config updated to sha256 {sha256}"
            in twistd_server.output
            or f"Forced reload (POST /-/reload): config unchanged (sha256 {sha256})"
            in twistd_server.output
        ),
        "the POST's outcome logged",
    )


def test_reload_endpoint_turned_off_answers_403_and_sighup_still_reloads(
    configmap: AtomicWriter,
) -> None:
    server = TwistdServer(
        configmap.target_dir / CONFIG_NAME, extra=["--reload-from", "off"]
    )
    try:
        server.wait_ready()
        reply = http(server.url + "/-/reload", method="POST")
        assert reply.status == 403
        assert json.loads(reply.body) == {
            "error": "POST /-/reload is turned off (--reload-from off); send the "
            "process SIGHUP to force a reload"
        }
        assert "Forced reload" not in server.output
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "Forced reload (SIGHUP)" in server.output, "the SIGHUP")
    finally:
        server.close()


def test_unknown_reload_from_is_a_usage_error(configmap: AtomicWriter) -> None:
    server = TwistdServer(
        configmap.target_dir / CONFIG_NAME, extra=["--reload-from", "everyone"]
    )
    try:
        assert server.process.wait(30) == 1
        assert server.output.splitlines()[0] == (
            "configmapdemo: error: --reload-from must be loopback, any or off, "
            "got 'everyone'"
        )
    finally:
        server.close()


def test_a_flood_of_sighups_reloads_once_a_tick_and_its_lines_are_rationed(
    twistd_server: TwistdServer,
) -> None:
    sha256 = hashlib.sha256(b"message: Hello World\n").hexdigest()[:12]
    line = f"Forced reload (SIGHUP): config unchanged (sha256 {sha256})"
    started = time.monotonic()
    sent = signal_until_summed_up(twistd_server, line)
    twistd_server.stop(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - started
    plain, counts = logged_times(twistd_server.output, line)
    reloads = plain + sum(counts)
    assert plain >= REPEAT_BURST
    # One reload a tick (0.1 s) at most, however many signals came.
    assert reloads <= elapsed / TICK + 2
    assert reloads < sent
