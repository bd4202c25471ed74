"""
The log output: JSON lines, and repeated identical lines summed up with a
count, on a L{task.Clock}.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from twisted.application.service import Application, MultiService
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    formatEvent,
)
from twisted.python import log as legacy_log
from twisted.python.failure import Failure

from tests.support import LogCapture, captured_log
from twisted_demo.live import Allowance
from twisted_demo.logs import (
    REPEAT_BURST,
    REPEAT_INTERVAL,
    REPEAT_KEYS,
    LogOutput,
    RepeatLimiter,
    event_as_json,
    logs_to_stdout,
)


def _events() -> tuple[list[LogEvent], Logger]:
    """
    A list that receives what a L{Logger} logs, and that logger.
    """
    capture = LogCapture()
    return capture.events, Logger(namespace="test.ns", observer=capture)


def _limited(clock: Clock) -> tuple[list[str], Logger]:
    """
    The rendered lines that pass a L{RepeatLimiter} on C{clock}, and a
    logger feeding it.
    """
    lines: list[str] = []
    limiter = RepeatLimiter(lambda event: lines.append(formatEvent(event)), clock)
    return lines, Logger(namespace="test.ns", observer=limiter)


def test_json_line_has_time_level_logger_message_and_fields() -> None:
    seen, log = _events()
    log.info(
        "Config file updated: sha256 {old} -> {new}",
        old="aaa",
        new="bbb",
        path="/etc/config/x.yaml",
        generation=3,
    )
    [event] = seen
    record = json.loads(event_as_json(event))
    assert record == {
        "time": record["time"],
        "level": "info",
        "logger": "test.ns",
        "message": "Config file updated: sha256 aaa -> bbb",
        "old": "aaa",
        "new": "bbb",
        "path": "/etc/config/x.yaml",
        "generation": 3,
    }
    assert record["time"].endswith("Z")
    moment = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert moment.tzinfo == timezone.utc
    assert abs(moment.timestamp() - event["log_time"]) < 1e-5


def test_json_line_is_one_line_for_any_value_and_carries_the_traceback() -> None:
    seen, log = _events()
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("Reload crashed for {path}", path=object(), error="boom\nagain")
    [event] = seen
    line = event_as_json(event)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    record = json.loads(line)
    assert record["level"] == "critical"
    assert record["error"] == "boom\nagain"
    assert record["path"].startswith("<object object")
    assert "ZeroDivisionError" in record["traceback"]
    assert not [key for key in record if key.startswith("log_")]


def test_json_line_of_a_legacy_event_keeps_only_the_rendered_message() -> None:
    with captured_log() as capture:
        legacy_log.msg("Site starting on", 8080, system="-")
    [event] = [e for e in capture.events if e.get("log_namespace") == "log_legacy"]
    record = json.loads(event_as_json(event))
    assert record == {
        "time": record["time"],
        "level": "info",
        "logger": "log_legacy",
        "message": "Site starting on 8080",
    }


def test_distinct_lines_all_pass() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for number in range(5 * REPEAT_BURST):
        log.warn("Could not accept connection {n}", n=number)
    assert len(lines) == 5 * REPEAT_BURST


def test_identical_lines_past_the_burst_are_summed_up_with_a_count() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for _ in range(1000):
        log.info("Received SIGHUP: reloading the config")
    assert lines == REPEAT_BURST * ["Received SIGHUP: reloading the config"]
    clock.advance(REPEAT_INTERVAL)
    assert lines[REPEAT_BURST:] == [
        "Received SIGHUP: reloading the config (repeated "
        f"{1000 - REPEAT_BURST} times in 1.0s, logged as one line)"
    ]
    # Nothing more to say until more come; then one line per interval.
    clock.advance(10 * REPEAT_INTERVAL)
    assert len(lines) == REPEAT_BURST + 1


def test_a_steady_repeat_is_one_line_per_interval() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for _ in range(REPEAT_BURST):
        log.warn("EMFILE encountered")
    # Twenty times a second for ten seconds.
    for _ in range(200):
        clock.advance(REPEAT_INTERVAL / 20)
        log.warn("EMFILE encountered")
    clock.advance(REPEAT_INTERVAL)
    summaries = lines[REPEAT_BURST:]
    assert 9 <= len(summaries) <= 11
    # A line written alone, when its turn came, counts once.
    counts = [
        int(line.split("repeated ")[1].split(" ")[0]) if "repeated" in line else 1
        for line in summaries
    ]
    assert sum(counts) == 200


def test_one_held_line_is_written_as_it_was() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for _ in range(REPEAT_BURST + 1):
        log.warn("disk {what}", what="full")
    clock.advance(REPEAT_INTERVAL)
    assert lines == (REPEAT_BURST + 1) * ["disk full"]


def test_the_allowance_comes_back_with_time() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for _ in range(REPEAT_BURST):
        log.info("tick")
    clock.advance(REPEAT_BURST * REPEAT_INTERVAL)
    for _ in range(REPEAT_BURST):
        log.info("tick")
    assert lines == 2 * REPEAT_BURST * ["tick"]


def test_stopping_the_output_writes_what_is_held_back() -> None:
    clock = Clock()
    out = io.StringIO()
    output = LogOutput("text", clock, out)
    output.startService()
    log = Logger(namespace="ns", observer=output.observer)
    for _ in range(REPEAT_BURST + 3):
        log.info("again")
    assert len(out.getvalue().splitlines()) == REPEAT_BURST
    output.stopService()
    lines = out.getvalue().splitlines()
    assert len(lines) == REPEAT_BURST + 1
    assert lines[-1].endswith(
        "[ns#info] again (repeated 3 times in 0.0s, logged as one line)"
    )
    assert not [call for call in clock.getDelayedCalls() if call.active()]


def test_summary_keeps_the_fields_and_braces_of_the_line() -> None:
    clock = Clock()
    events: list[LogEvent] = []
    log = Logger(namespace="ns", observer=RepeatLimiter(events.append, clock))
    for _ in range(REPEAT_BURST + 2):
        log.error("bad {{x}}: {error}", error="nope")
    clock.advance(REPEAT_INTERVAL)
    summary = events[-1]
    assert formatEvent(summary) == (
        "bad {x}: nope (repeated 2 times in 1.0s, logged as one line)"
    )
    record = json.loads(event_as_json(summary))
    assert (record["error"], record["repeated"]) == ("nope", 2)
    assert record["level"] == "error"


def test_failures_held_back_are_summed_up_without_their_tracebacks() -> None:
    clock = Clock()
    events: list[LogEvent] = []
    log = Logger(namespace="ns", observer=RepeatLimiter(events.append, clock))
    for _ in range(REPEAT_BURST + 2):
        log.failure("crashed", Failure(ValueError("x")))
    clock.advance(REPEAT_INTERVAL)
    assert "log_failure" in events[0]
    assert "log_failure" not in events[-1]


def test_past_many_distinct_lines_the_oldest_is_forgotten() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for _ in range(REPEAT_BURST):
        log.info("first")
    for number in range(REPEAT_KEYS):
        log.info("client {n}", n=number)
    # Remembered, "first" would now be held back: its allowance is spent
    # and no time has passed.
    log.info("first")
    assert lines[-1] == "first"
    assert len(lines) == REPEAT_BURST + REPEAT_KEYS + 1


def test_text_output_is_twisteds_classic_line() -> None:
    out = io.StringIO()
    output = LogOutput("text", Clock(), out)
    Logger(namespace="configmapdemo", observer=output.observer).info(
        "Loaded {path}", path="/x"
    )
    assert out.getvalue().endswith(" [configmapdemo#info] Loaded /x\n")


def test_json_output_is_one_object_per_line() -> None:
    out = io.StringIO()
    output = LogOutput("json", Clock(), out)
    log = Logger(namespace="configmapdemo", observer=output.observer)
    log.info("Loaded {path}", path="/x")
    log.warn("second")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["message"], r["level"]) for r in records] == [
        ("Loaded /x", "info"),
        ("second", "warn"),
    ]


def test_twistd_logs_through_the_observer_it_is_supplied_as() -> None:
    application = Application("configmapdemo")
    output = LogOutput("json", Clock(), io.StringIO())
    output.supply_to(application)
    assert application.getComponent(ILogObserver) is output.observer
    # Outside twistd, the parent is a plain service: nothing to supply to.
    output.supply_to(MultiService())


def test_only_logs_to_standard_output_are_taken_over() -> None:
    stdout = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}
    assert logs_to_stdout(None)
    assert logs_to_stdout(stdout)
    assert logs_to_stdout({**stdout, "logfile": "-"})
    assert not logs_to_stdout({**stdout, "nodaemon": False})
    assert not logs_to_stdout({**stdout, "logfile": "twistd.log"})
    assert not logs_to_stdout({**stdout, "syslog": True})
    assert not logs_to_stdout({**stdout, "logger": object})


def test_allowance_refills_one_line_per_interval_up_to_the_burst() -> None:
    allowance = Allowance(counted_at=0.0, burst=3, interval=2.0)
    assert [allowance.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert allowance.wait() == 2.0
    assert allowance.take(2.0)
    assert not allowance.take(2.0)
    # A long quiet spell earns no more than the burst.
    assert [allowance.take(100.0) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("namespace", "text", "field"),
    [
        (
            "twisted.internet.tcp.Port",
            "EMFILE recovery: Closed socket from {address}",
            "address",
        ),
        # The line README quotes: HTTPChannel's, for each client timed out.
        ("twisted.web.http.HTTPChannel", "Timing out client: {peer}", "peer"),
    ],
)
def test_twisteds_own_lines_that_differ_only_in_a_field_are_summed_up(
    namespace: str, text: str, field: str
) -> None:
    clock = Clock()
    lines: list[str] = []
    limiter = RepeatLimiter(lambda event: lines.append(formatEvent(event)), clock)
    log = Logger(namespace=namespace, observer=limiter)
    for number in range(REPEAT_BURST + 40):
        log.info(text, **{field: ("127.0.0.1", 40000 + number)})
    clock.advance(REPEAT_INTERVAL)
    assert lines[:REPEAT_BURST] == [
        text.replace("{" + field + "}", f"('127.0.0.1', {40000 + number})")
        for number in range(REPEAT_BURST)
    ]
    assert lines[REPEAT_BURST:] == [
        text.replace("{" + field + "}", "…")
        + " (repeated 40 times in 1.0s, logged as one line)"
    ]


def test_the_services_own_lines_are_summed_up_only_word_for_word() -> None:
    clock = Clock()
    lines, log = _limited(clock)
    for number in range(REPEAT_BURST + 40):
        log.error("Config reload failed: {error}", error=f"line {number}")
    assert len(lines) == REPEAT_BURST + 40
