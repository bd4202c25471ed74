"""
The first minutes with C{twistd configmapdemo}, run for real: a refused
command line, a start that fails, and the log as text or JSON lines.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support import (
    CONFIG_NAME,
    DEADLINE,
    TwistdServer,
    http,
    logged_times,
    signal_until_summed_up,
    wait_for,
)
from tests.test_docs import ROOT, section
from twisted_demo.logs import REPEAT_BURST
from twisted_demo.testing import (
    AtomicWriter,
    configmapdemo_argv,
    free_port,
    twistd_executable,
)

TRY_HELP = "Try 'twistd configmapdemo --help'"


def _twistd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [twistd_executable(), "-n", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--config", "c.yaml", "--tick", "0"],
            "--tick must be a number of seconds above 0, got '0'",
        ),
        (
            ["--config", "c.yaml", "--tick", "abc"],
            "--tick must be a number of seconds above 0, got 'abc'",
        ),
        ([], "--config PATH is required: the YAML file to serve"),
        (["--config", "c.yaml", "--bogus"], "option --bogus not recognized"),
        (
            ["--config", "c.yaml", "--max-bytes", "0"],
            "--max-bytes must be a whole number of bytes above 0, got '0'",
        ),
        (
            ["--config", "c.yaml", "--log-format", "xml"],
            "--log-format must be text or json, got 'xml'",
        ),
    ],
)
def test_a_refused_command_line_is_one_line_and_a_pointer_to_help(
    args: list[str], error: str
) -> None:
    result = _twistd("--pidfile=", "configmapdemo", *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"configmapdemo: error: {error}", TRY_HELP]


@pytest.mark.parametrize("config", ["c.yaml", None])
def test_a_listen_that_is_no_endpoint_is_refused_with_a_pointer_to_help(
    configmap: AtomicWriter, config: str | None
) -> None:
    # Before the config is read: a missing config is not reported instead.
    path = config or str(configmap.target_dir / CONFIG_NAME)
    result = _twistd(
        "--pidfile=", "configmapdemo", "--config", path, "--listen", "tcp:notaport"
    )
    assert result.returncode == 1
    first, second = result.stderr.splitlines()
    assert first.startswith(
        "configmapdemo: error: --listen 'tcp:notaport' is not a server endpoint: "
    )
    assert second == TRY_HELP


def test_help_names_every_option_of_the_readme_and_each_default_once() -> None:
    readme = (ROOT / "README.md").read_text()
    table = re.findall(r"^\| `(--[\w-]+)", section(readme, "Options"), re.MULTILINE)
    shown = _twistd("--pidfile=", "configmapdemo", "--help")
    assert shown.returncode == 0
    usage_line, *options = shown.stdout.splitlines()
    assert sorted(re.findall(r"--[\w-]+", usage_line)) == sorted(table)
    # Each option's text, from its name to the next option's.
    for entry in re.split(r"\n(?=\s+(?:-\w, )?--)", "\n".join(options)):
        text = " ".join(entry.split())
        assert len(re.findall(r"[(\[]default:", text)) <= 1, text


def test_json_logs_need_standard_output(tmp_path: Path) -> None:
    result = _twistd(
        "--pidfile=",
        "--logfile",
        str(tmp_path / "twistd.log"),
        "configmapdemo",
        "--config",
        "c.yaml",
        "--log-format",
        "json",
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith(
        "configmapdemo: error: --log-format json writes to standard output"
    )


def _ready(port: int) -> bool:
    try:
        return http(f"http://127.0.0.1:{port}/readyz").status == 200
    except OSError:
        return False


def test_a_start_that_fails_leaves_no_pid_file(
    tmp_path: Path, configmap: AtomicWriter
) -> None:
    config = configmap.target_dir / CONFIG_NAME
    running, failing = tmp_path / "running", tmp_path / "failing"
    running.mkdir()
    failing.mkdir()
    port = free_port()
    # twistd's default pid file, twistd.pid in the current directory.
    argv = configmapdemo_argv(config, port)
    argv.remove("--pidfile=")
    first = subprocess.Popen(
        argv, cwd=running, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # A start that succeeds writes it (so the check below means something).
        pid_file = running / "twistd.pid"
        wait_for(
            lambda: pid_file.exists() and pid_file.read_text() == str(first.pid),
            "the running server's pid file",
        )
        wait_for(lambda: _ready(port), "the first server to listen")
        second = _twistd(*argv[2:], cwd=failing)
        assert second.returncode == 1
        assert "Address already in use" in second.stdout
        assert "Traceback" not in second.stdout + second.stderr
        assert list(failing.iterdir()) == []
    finally:
        first.terminate()
        first.wait(10)
    assert not pid_file.exists()


def _records(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


def test_a_port_in_use_is_logged_last_as_one_critical_json_object(
    twistd_server: TwistdServer,
) -> None:
    argv = configmapdemo_argv(
        twistd_server.config, twistd_server.port, "--log-format", "json"
    )
    failed = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert (failed.returncode, failed.stderr) == (1, "")
    *started, refusal = _records(failed.stdout)
    assert [record["level"] for record in started] == ["info"] * len(started)
    listen = f"tcp:{twistd_server.port}:interface=127.0.0.1"
    assert {key: refusal[key] for key in ("level", "logger", "listen")} == {
        "level": "critical",
        "logger": "configmapdemo",
        "listen": listen,
    }
    assert refusal["message"] == (
        f"configmapdemo: error: cannot listen on {listen}: {refusal['error']}"
    )


def test_json_log_lines_carry_the_message_and_the_fields(
    configmap: AtomicWriter,
) -> None:
    server = TwistdServer(
        configmap.target_dir / CONFIG_NAME, extra=["--log-format", "json"]
    )
    try:
        server.wait_ready()
        generation = configmap.write({CONFIG_NAME: b"message: Hello JSON\n"})
        server.wait_message("Hello JSON")
        configmap.write({CONFIG_NAME: b"message: [oops\n"})
        wait_for(lambda: "Config reload failed" in server.output, "the failure")
        assert server.stop(signal.SIGTERM, timeout=10) == -signal.SIGTERM
        records = _records(server.output)
    finally:
        server.close()

    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert not [key for key in record if key.startswith("log_")]
        time = str(record["time"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", time)
        moment = datetime.fromisoformat(time.replace("Z", "+00:00"))
        assert moment.tzinfo == timezone.utc
    by_start = {str(r["message"]).split(":")[0]: r for r in records}
    loaded = by_start["Loaded " + str(configmap.target_dir / CONFIG_NAME)]
    assert loaded["level"] == "info"
    assert {"sha256", "generation", "path"} <= loaded.keys()
    updated = by_start["Config file updated"]
    assert updated["generation"] == generation
    assert updated["path"] == str(configmap.target_dir / CONFIG_NAME)
    failed = by_start["Config reload failed, still serving the last good config"]
    assert failed["level"] == "error"
    assert "line 2, column 1" in str(failed["error"])
    assert records[-1]["message"] == "Server Shut Down."


def test_repeated_sighups_are_summed_up_with_a_count(
    twistd_server: TwistdServer,
) -> None:
    line = "Received SIGHUP: reloading the config"
    sent = signal_until_summed_up(twistd_server, line)
    twistd_server.stop(signal.SIGTERM, timeout=10)
    plain, counts = logged_times(twistd_server.output, line)
    assert plain >= REPEAT_BURST
    assert all(count >= 2 for count in counts)
    # Signals sent close together may arrive as one; none is counted twice.
    assert plain + sum(counts) <= sent


def _serves(server: TwistdServer, message: str) -> bool:
    try:
        return server.get("/").text == message
    except OSError:
        return False


def _access_lines(server: TwistdServer, count: int) -> list[str]:
    def found() -> list[str] | None:
        lines = [
            line
            for line in server.output.splitlines()
            if "configmapdemo.access" in line
        ]
        return lines if len(lines) >= count else None

    return wait_for(found, f"{count} access-log line(s)")


def test_json_access_log_lines_carry_the_request_as_fields(
    configmap: AtomicWriter,
) -> None:
    server = TwistdServer(
        configmap.target_dir / CONFIG_NAME,
        extra=["--access-log", "--log-format", "json"],
    )
    try:
        server.wait_ready()
        response = http(
            server.url + "/nowhere?a={b}", headers={"User-Agent": "probe/1.0"}
        )
        assert response.status == 404
        [record] = [
            json.loads(line)
            for line in _access_lines(server, 2)
            if '"/nowhere"' in line
        ]
    finally:
        server.close()
    assert record["logger"] == "configmapdemo.access"
    assert record["level"] == "info"
    assert {key: record[key] for key in record if key not in ("time", "duration")} == {
        "level": "info",
        "logger": "configmapdemo.access",
        "message": record["message"],
        "method": "GET",
        "path": "/nowhere",
        "protocol": "HTTP/1.1",
        "status": 404,
        "bytes": len(response.body),
        "client": "127.0.0.1",
        "referrer": None,
        "user_agent": "probe/1.0",
    }
    assert isinstance(record["duration"], float)
    assert 0 <= record["duration"] < 10
    # The message is the combined log format, as in the text log.
    assert re.fullmatch(
        r'"127\.0\.0\.1" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
        rf'"GET /nowhere\?a=\{{b\}} HTTP/1\.1" 404 {len(response.body)} '
        r'"-" "probe/1\.0"',
        record["message"],
    )


def test_text_access_log_keeps_the_combined_format_and_every_request(
    configmap: AtomicWriter,
) -> None:
    server = TwistdServer(configmap.target_dir / CONFIG_NAME, extra=["--access-log"])
    try:
        server.wait_ready()
        # Past the burst of identical lines that other lines are rationed to.
        for _ in range(REPEAT_BURST + 5):
            assert server.get("/").text == "Hello World"
        lines = _access_lines(server, REPEAT_BURST + 5)
    finally:
        server.close()
    served = [line for line in lines if '"GET / HTTP/1.1"' in line]
    assert len(served) == REPEAT_BURST + 5
    for line in served:
        assert re.fullmatch(
            r"\S+ \[configmapdemo\.access#info\] "
            r'"127\.0\.0\.1" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
            r'"GET / HTTP/1\.1" 200 11 "-" "Python-urllib/3\.\d+"',
            line,
        ), line
    assert "repeated" not in "\n".join(lines)


def test_metrics_carry_the_process_and_platform_collectors(
    twistd_server: TwistdServer,
) -> None:
    exposition = twistd_server.get("/metrics").text
    started = twistd_server.metric("process_start_time_seconds")
    assert time.time() - DEADLINE * 6 < started <= time.time()
    assert twistd_server.metric("process_resident_memory_bytes") > 1_000_000
    assert twistd_server.metric("process_open_fds") >= 3
    assert twistd_server.metric("process_max_fds") >= 64
    assert twistd_server.metric("process_cpu_seconds_total") > 0
    assert re.search(r"^python_info\{.*implementation=", exposition, re.MULTILINE)
