"""
The benchmark suite's own logic: the parts that decide whether a run found
a correctness failure must be right, whatever the timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.configs import CONFIG_KEY, TimedAtomicWriter, config_yaml
from bench.context import Context
from bench.forced import forced_reloads_logged
from bench.load import parse_result
from bench.loadgen import _parse_response
from bench.report import QUICK_DURATION, commit_of, markdown
from bench.stats import percentile
from tests.support import git
from twisted_demo.config import CONFIG_KEY as CONFIG_KEY_OF_SERVICE
from twisted_demo.config import parse_message


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_padded_config_keeps_its_message_and_size() -> None:
    raw = config_yaml("big one", 1024 * 1024 - 1024)
    assert len(raw) >= 1024 * 1024 - 1024
    assert len(raw) <= 1024 * 1024
    assert parse_message(raw) == "big one"


def test_timed_writer_stamps_the_commit(tmp_path: Path) -> None:
    writer = TimedAtomicWriter(tmp_path)
    committed = writer.publish("first")
    assert committed == writer.committed_at > 0
    assert (tmp_path / CONFIG_KEY).read_bytes() == config_yaml("first")


def test_result_block_lists_every_distinct_body() -> None:
    output = "\n".join(
        [
            "Running 1s test @ http://127.0.0.1:1/",
            "bench-result",
            "requests 30",
            "duration_us 2000000",
            "socket_errors 1",
            "latency_us 1000 5000 9000",
            "non200 2",
            "unrecorded 0",
            f"body 20 {b'old'.hex()}",
            f"body 8 {b'new'.hex()}",
            "end",
        ]
    )
    result = parse_result("wrk", output)
    assert result.rps == 15.0
    assert (result.socket_errors, result.non_200) == (1, 2)
    assert (result.p50, result.p99, result.max) == (0.001, 0.005, 0.009)
    assert result.bodies == {b"old": 20, b"new": 8}
    assert result.unexpected_bodies({b"old"}) == {b"new": 8}


def test_builtin_generator_parses_fixed_and_chunked_bodies() -> None:
    fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert _parse_response(fixed + chunked) == (200, b"hello", chunked)
    assert _parse_response(chunked) == (503, b"abcde", b"")
    assert _parse_response(fixed[:-1]) is None
    assert _parse_response(chunked[:-3]) is None


def test_report_states_its_own_runs_duration(tmp_path: Path) -> None:
    ctx = Context(
        quick=False,
        workdir=tmp_path,
        load_tool="builtin",
        server_cpus=None,
        client_cpus=None,
    )
    text = markdown(ctx, [("Commit", "abc1234")], elapsed=423.4)
    assert "in 423 s." in text
    assert "writes BENCHMARKS.md: 7 minutes this time" in text
    assert f"python -m bench --quick    # {QUICK_DURATION};" in text
    assert "under a minute" not in text


def test_report_marks_a_checkout_that_differs_from_its_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("a = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "a")
    head = git(tmp_path, "rev-parse", "--short", "HEAD").strip()
    assert commit_of(tmp_path) == head
    # A new module not yet committed is code the run used, too.
    (tmp_path / "b.py").write_text("b = 1\n")
    assert commit_of(tmp_path) == f"{head} (with uncommitted changes)"


def test_webhook_reviews_hold_configs_the_service_would_judge_as_expected() -> None:
    from bench.webhook import reviews
    from twisted_demo.live import DEFAULT_MAX_BYTES, ConfigError
    from twisted_demo.live._webhook import review_limit

    for name, (body, allowed) in reviews().items():
        request = json.loads(body)["request"]
        config = request["object"]["data"][CONFIG_KEY_OF_SERVICE].encode()
        assert len(config) <= DEFAULT_MAX_BYTES, name
        assert len(body) <= review_limit(DEFAULT_MAX_BYTES), name
        try:
            parse_message(config)
        except ConfigError:
            assert not allowed, name
        else:
            assert allowed, name


def test_forced_reloads_are_counted_from_the_log_summed_up_lines_too() -> None:
    log = (
        "2026-12-07T00:00:00+0000 [configmapdemo#info] Forced reload (POST "
        "/-/reload): config unchanged (sha256 0123456789ab)\n"
        "2026-12-07T00:00:01+0000 [configmapdemo#info] Forced reload (SIGHUP): "
        "config unchanged (sha256 0123456789ab)\n"
        "2026-12-07T00:00:02+0000 [configmapdemo#info] Forced reload (POST "
        "/-/reload): config unchanged (sha256 0123456789ab) (repeated 37 times "
        "in 1.0s, logged as one line)\n"
    )
    assert forced_reloads_logged(log) == 38


def test_bytecode_is_written_for_the_checkouts_modules(tmp_path: Path) -> None:
    from bench.server import write_bytecode

    for module in ("twisted_demo/a.py", "twisted/plugins/b.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("x = 1\n")
    # Written even where the environment says not to write bytecode.
    assert write_bytecode(tmp_path)
    assert {p.name.partition(".")[0] for p in tmp_path.rglob("*.pyc")} == {"a", "b"}
    (tmp_path / "twisted_demo" / "broken.py").write_text("x = (\n")
    assert not write_bytecode(tmp_path)


def test_footprint_runs_the_earlier_versions_from_this_checkouts_history(
    tmp_path: Path,
) -> None:
    from bench.footprint import VERSIONS, checkout

    for revision in VERSIONS:
        tree = checkout(revision, tmp_path)
        assert tree is not None, revision
        assert (tree / "twisted_demo" / "tap.py").is_file()
        assert (tree / "twisted" / "plugins" / "configmapdemo.py").is_file()
        assert list((tree / "twisted_demo" / "__pycache__").glob("tap.*.pyc"))
    assert checkout("0" * 40, tmp_path) is None
