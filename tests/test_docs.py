"""
The docs quote the program's output: these tests run the real service the
way the docs do and check every quoted line against what it prints, so the
docs cannot drift from the program, whichever of the two changes.

A quoted line may elide with C{…}; timestamps, C{..data} generations and
paths under C{/etc/config/} stand for any such value.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from attrs import frozen

from tests.support import CONFIG_NAME, DEADLINE, TwistdServer, git, http, wait_for
from twisted_demo.testing import AtomicWriter

ROOT = Path(__file__).resolve().parent.parent

# What stands for a value that differs from run to run, and the pattern
# that matches any such value.
_VARYING = [
    ("…", ".*"),
    (
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)",
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)",
    ),
    (r"\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}", r"\.\.\d{4}(?:_\d\d){5}\.\d{9}"),
    ("/etc/config/", "/.*/"),
]
_TOKEN = re.compile("|".join(f"({quoted})" for quoted, _ in _VARYING))


def pattern(quoted: str) -> re.Pattern[str]:
    """
    The pattern of the output that C{quoted} stands for.
    """
    parts: list[str] = []
    end = 0
    for match in _TOKEN.finditer(quoted):
        parts.append(re.escape(quoted[end : match.start()]))
        group = next(i for i, text in enumerate(match.groups()) if text is not None)
        parts.append(_VARYING[group][1])
        end = match.end()
    parts.append(re.escape(quoted[end:]))
    return re.compile("".join(parts))


@frozen
class Block:
    """
    A fenced block of a Markdown file: its language and its lines.
    """

    language: str
    lines: list[str]


def blocks(markdown: str) -> list[Block]:
    """
    The fenced blocks of C{markdown}, in order.
    """
    found = re.findall(r"^```(\w*)\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)
    return [Block(language, text.splitlines()) for language, text in found]


def section(markdown: str, heading: str) -> str:
    """
    The text of the C{## heading} section of C{markdown}.
    """
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : None if end == -1 else end]


def _lines_match(quoted: list[str], printed: list[str]) -> bool:
    return len(quoted) == len(printed) and all(
        pattern(q).fullmatch(p) for q, p in zip(quoted, printed, strict=True)
    )


def _in_log(quoted: str, log: str) -> bool:
    expected = pattern(quoted)
    return any(expected.search(line) for line in log.splitlines())


def _json_matches(quoted: dict[str, Any], record: dict[str, Any]) -> bool:
    """
    Whether C{record} has C{quoted}'s keys, in its order, each with a value
    it stands for.
    """
    return list(quoted) == list(record) and all(
        pattern(json.dumps(value, ensure_ascii=False)).fullmatch(
            json.dumps(record[key], ensure_ascii=False)
        )
        for key, value in quoted.items()
    )


def _in_json_log(quoted: str, log: str) -> bool:
    records = [json.loads(line) for line in log.splitlines()]
    return any(_json_matches(json.loads(quoted), record) for record in records)


def _on_port(text: str, port: int) -> str:
    """
    C{text} of a console block, with the demo's port 8080 as the test
    server's C{port}.
    """
    text = text.replace("localhost:8080", f"127.0.0.1:{port}")
    return text.replace("tcp:8080", f"tcp:{port}")


def _run(command: str, cwd: Path, port: int) -> list[str]:
    """
    Run one C{$} line of a console block as a user would, on the test's
    server, and return what it printed.
    """
    command = _on_port(command, port)
    # The venv's commands come first, as once it is activated.
    bin_dir = str(Path(sys.executable).parent)
    # At a terminal curl shows no progress meter; into a pipe it would.
    curl_home = cwd / "curl-home"
    curl_home.mkdir(exist_ok=True)
    (curl_home / ".curlrc").write_text("silent\nshow-error\n")
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DEADLINE,
        env={
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ["PATH"],
            "CURL_HOME": str(curl_home),
        },
    )
    return result.stdout.splitlines()


def run_console(block: Block, cwd: Path, port: int) -> None:
    """
    Run C{block}'s commands in order, each checked against the lines quoted
    after it.
    """
    steps: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, quoted in steps:
        printed = _run(command, cwd, port)
        quoted = [_on_port(line, port) for line in quoted]
        assert _lines_match(quoted, printed), (
            f"$ {command}\nquoted:  {quoted}\nprinted: {printed}"
        )


@contextmanager
def servers(config: Path) -> Iterator[tuple[TwistdServer, TwistdServer]]:
    """
    The service on C{config}, logging as text and as JSON.
    """
    text = TwistdServer(config)
    as_json = TwistdServer(config, extra=["--log-format", "json"])
    try:
        text.wait_ready()
        as_json.wait_ready()
        yield text, as_json
    finally:
        text.close()
        as_json.close()


def _wait_in_log(quoted: str, server: TwistdServer) -> None:
    if quoted.startswith("{"):
        wait_for(lambda: _in_json_log(quoted, server.output), f"JSON line {quoted}")
    else:
        wait_for(lambda: _in_log(quoted, server.output), f"log line {quoted}")


def check_quoted_log(block: Block, text: TwistdServer, as_json: TwistdServer) -> None:
    """
    Wait until each line of C{block} is in the log it quotes: JSON lines in
    the JSON log, others in the text log.
    """
    for line in block.lines:
        _wait_in_log(line, as_json if line.startswith("{") else text)


def _checkout_of_examples(directory: Path) -> None:
    """
    A git checkout in C{directory} holding the repository's C{examples/},
    and this interpreter's environment as C{.venv}, as in a clone where
    the README's set-up was run.
    """
    shutil.copytree(ROOT / "examples", directory / "examples", symlinks=True)
    (directory / ".venv").symlink_to(Path(sys.executable).parent.parent)
    git(directory, "init", "-q")
    git(directory, "add", "examples")
    git(directory, "commit", "-q", "-m", "examples")


def test_readme_demo_logs_and_errors_print_what_is_quoted(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    _checkout_of_examples(tmp_path)
    config = tmp_path / "examples" / "config" / CONFIG_NAME
    with servers(config) as (text, as_json):
        # The Logs section quotes the start-up, before the demo's edits.
        for block in blocks(section(readme, "Logs")):
            check_quoted_log(block, text, as_json)
        demo = blocks(section(readme, "The 30-second demo"))
        assert [block.language for block in demo] == [
            *["console", "", "console", "console", "console"]
        ]
        for block in demo:
            if block.language == "console":
                run_console(block, tmp_path, text.port)
            else:
                check_quoted_log(block, text, as_json)
        # The last block put the example back: nothing changed, nothing new.
        assert git(tmp_path, "status", "--porcelain", "examples") == ""
        text.wait_message("Hello World")
        # Beside the demo: a refused command line, then a start on its port.
        options = blocks(section(readme, "Options"))
        assert [block.language for block in options] == ["console", "console"]
        for block in options:
            run_console(block, tmp_path, text.port)


def test_deploy_readme_log_and_config_are_what_the_service_shows(
    configmap: AtomicWriter,
) -> None:
    deploy = (ROOT / "deploy" / "README.md").read_text()
    update = blocks(section(deploy, "4. Change the ConfigMap and watch it arrive"))
    quoted_logs = [block for block in update if block.language == ""]
    [quoted_config] = [
        block
        for block in blocks(section(deploy, "Which version does each pod serve?"))
        if block.language == "json"
    ]
    # The answer to POST /-/reload, quoted as a comment after the command.
    [quoted_answer] = [
        line.removeprefix("# ")
        for block in update
        if any("/-/reload" in line for line in block.lines)
        for line in block.lines
        if line.startswith("# {")
    ]
    assert quoted_logs
    with servers(configmap.target_dir / CONFIG_NAME) as (text, as_json):
        configmap.write({CONFIG_NAME: b"message: Hello Kubernetes\n"})
        text.wait_message("Hello Kubernetes")
        for block in quoted_logs:
            check_quoted_log(block, text, as_json)
        config = json.loads(http(text.url + "/config").text)
        answer = json.loads(http(text.url + "/-/reload", method="POST").text)
    assert _json_matches(json.loads("\n".join(quoted_config.lines)), config)
    assert _json_matches(json.loads(quoted_answer), answer), answer


def test_the_commands_the_docs_run_by_name_are_in_the_venv_they_activate() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    deploy = " ".join((ROOT / "deploy" / "README.md").read_text().split())
    assert "first `. .venv/bin/activate`" in readme
    assert "first `. .venv/bin/activate`" in deploy
    # The venv these tests run in, as the README's install makes it.
    bin_dir = Path(sys.executable).parent
    for name in ("activate", "twistd", "configmapdemo"):
        assert (bin_dir / name).is_file(), name


def test_quoted_values_stand_for_the_values_that_vary() -> None:
    quoted = (
        "2026-11-22T10:00:00+0000 [x#info] Loaded /etc/config/a.yaml: "
        "generation ..2026_11_22_10_00_00.000000001 (…)"
    )
    printed = (
        "2027-01-02T03:04:05+0000 [x#info] Loaded /tmp/y/a.yaml: "
        "generation ..2027_01_02_03_04_05.123456789 (anything)"
    )
    assert pattern(quoted).fullmatch(printed)
    assert not pattern(quoted).fullmatch(printed.replace("[x#info]", "[y#info]"))
    assert not pattern("sha256 c6d9c4c0f882").fullmatch("sha256 18142f7fc8b7")


def test_benchmarks_md_carries_the_analysis_as_it_stands() -> None:
    # python -m bench appends bench/analysis.md to the figures of its run;
    # an analysis edited since must be carried into BENCHMARKS.md too.
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    analysis = (ROOT / "bench" / "analysis.md").read_text().strip()
    assert benchmarks.rstrip().endswith("\n" + analysis)


def test_readme_pre_commit_snippet_names_a_commit_with_its_hooks() -> None:
    readme = (ROOT / "README.md").read_text()
    [snippet] = [
        block
        for block in blocks(section(readme, "Validate before you apply"))
        if block.language == "yaml"
    ]
    [repo] = yaml.safe_load("\n".join(snippet.lines))["repos"]
    # What pre-commit fetches and checks out: a commit of this repository.
    rev = repo["rev"]
    assert re.fullmatch(r"[0-9a-f]{40}", rev), rev
    hooks = yaml.safe_load(git(ROOT, "show", f"{rev}:.pre-commit-hooks.yaml"))
    ids = {hook["id"] for hook in hooks}
    for hook in repo["hooks"]:
        assert hook["id"] in ids
        assert re.search(hook["files"], "deploy/configmap.yaml")
    # The check it runs is this one: an older commit's may show values
    # from the file that this one never shows.
    check = [
        "twisted_demo/check.py",
        "twisted_demo/config.py",
        *(
            f"twisted_demo/live/{name}.py"
            for name in (
                "_check",
                "_child",
                "_command",
                "_errors",
                "_manifest",
                "_process",
                "_reader",
                "_report",
                "_spawn",
                "_yaml",
            )
        ),
    ]
    assert git(ROOT, "diff", "--stat", rev, "--", *check) == ""


def test_kubelet_command_swaps_data_and_refuses_a_bad_command_line(
    tmp_path: Path,
) -> None:
    def kubelet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "twisted_demo.kubelet", *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )

    started = time.time()
    done = kubelet(str(tmp_path), "a.yaml=message: one", "b.yaml=message: two")
    assert done.returncode == 0, done.stderr
    generation = os.readlink(tmp_path / "..data")
    assert done.stdout == f"..data -> {generation}\n"
    # Named after the time of the update, as the README says, then a number.
    stamp, number = generation.removeprefix("..").split(".")
    named = datetime.strptime(stamp, "%Y_%m_%d_%H_%M_%S").replace(tzinfo=timezone.utc)
    assert int(started) <= named.timestamp() <= time.time()
    assert re.fullmatch(r"\d{9}", number)
    assert (tmp_path / "a.yaml").read_bytes() == b"message: one\n"
    assert os.readlink(tmp_path / "a.yaml") == "..data/a.yaml"
    again = kubelet(str(tmp_path), "a.yaml=message: three")
    assert again.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["..data", os.readlink(tmp_path / "..data"), "a.yaml"]
    )
    refused = kubelet(str(tmp_path), "a.yaml")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.startswith("usage: python -m twisted_demo.kubelet ")


def test_library_errors_example_prints_what_is_quoted() -> None:
    errors = section((ROOT / "docs" / "library.md").read_text(), "Errors")
    program, printed = [
        b for b in blocks(errors) if b.language in ("python", "console")
    ]
    assert (program.language, printed.language) == ("python", "console")

    run = subprocess.run(
        [sys.executable, "-c", "\n".join(program.lines)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert run.stdout.splitlines() == printed.lines


def test_every_public_name_of_the_library_is_documented() -> None:
    import twisted_demo.live

    library = (ROOT / "docs" / "library.md").read_text()
    undocumented = [
        name
        for name in twisted_demo.live.__all__
        if not re.search(rf"`{re.escape(name)}\b", library)
    ]
    assert undocumented == []


def test_readme_quotes_the_parser_process_defaults() -> None:
    from twisted_demo.live import PARSER_MEMORY
    from twisted_demo.live._child import CPU_SECONDS, NICENESS
    from twisted_demo.live._service import DEADLINE

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (
        f"it runs at nice +{NICENESS}, set before its imports, with at most "
        f"{PARSER_MEMORY // 2**20} MiB of "
        f"address space and {CPU_SECONDS} s of CPU a parse; a parse that has not "
        f"answered in {DEADLINE:g} s and used no CPU meanwhile is killed" in readme
    )


def test_docs_quote_the_parser_process_s_command_line() -> None:
    # As ps shows it; e2e checks that the parser process runs BOOTSTRAP.
    from twisted_demo.live._spawn import BOOTSTRAP

    first, nice, *rest = (part.strip() for part in BOOTSTRAP.split(";"))
    assert nice.startswith("os.nice(")
    [module] = [part for part in rest if part.startswith("from ")]
    quoted = f"python -S -c {first}; os.nice(…); {module}; …"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"`{quoted}`" in readme
    reliability = " ".join((ROOT / "docs" / "reliability.md").read_text().split())
    assert quoted.replace(" -c ", ' -c "').replace("; …", '; …"') in reliability


def test_every_test_reliability_md_names_exists() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    files = dict(re.findall(r"^\| `(\w+)` \| `(tests/test_\w+\.py)` \|$", text, re.M))
    cited = set(re.findall(r"`([a-z_]+)::(test_\w+)", text))
    assert cited
    missing = [
        f"{prefix}::{name}"
        for prefix, name in sorted(cited)
        if prefix not in files
        or f"def {name}(" not in (ROOT / files[prefix]).read_text()
    ]
    assert missing == []
