"""
C{configmapdemo check}: config files and the ConfigMaps of Kubernetes
manifests are refused before they are applied, for the same reasons and
with the same words as the service would refuse them once live.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from attrs import frozen
from cryptography.hazmat.primitives import serialization

from tests.bad_configs import BAD_CONTENT, good
from tests.certs import CA, key_pem, mismatched, new_key
from twisted_demo.check import main
from twisted_demo.config import CONFIG_KEY, parse_message
from twisted_demo.live import DEFAULT_MAX_BYTES, LiveConfigService, inline
from twisted_demo.live._command import check_main
from twisted_demo.live._errors import ConfigError
from twisted_demo.testing import AtomicWriter
from twisted_demo.tls import CERT_FILE, KEY_FILE, tls_files

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent

#: Characters YAML cannot hold literally in a block scalar (and line breaks
#: other than \n), so a test value holding one is written quoted instead.
_NOT_LITERAL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]"
)


@frozen
class Run:
    """
    What one run of C{configmapdemo} did.
    """

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Check = Callable[..., Run]


@pytest.fixture
def check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Check:
    """
    Run C{configmapdemo ARGS...} in-process, the console script's own
    C{main}, with C{stdin} bytes on standard input.
    """

    def run(*args: str | Path, stdin: bytes = b"") -> Run:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        assert isinstance(exited.value.code, int)
        return Run(exited.value.code, captured.out, captured.err)

    return run


def manifest(content: bytes, *, key: str = CONFIG_KEY, name: str = "demo") -> bytes:
    """
    A ConfigMap whose C{key} the kubelet would write as exactly C{content}:
    a literal block when the content allows it (as C{kubectl create
    configmap --from-file} writes it), else a double-quoted string, else
    base64 in C{binaryData} for bytes that are not UTF-8.
    """
    section = "data"
    try:
        text: str | None = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if (
        text is not None
        and text.endswith("\n")
        and not text.endswith("\n\n")
        and not text[:1].isspace()
        and "\r" not in text
        and not _NOT_LITERAL.search(text)
    ):
        lines = text[:-1].split("\n")
        value = "|\n" + "".join(f"    {line}\n" if line else "\n" for line in lines)
    elif text is not None:
        # A JSON string is a YAML double-quoted scalar.
        value = json.dumps(text) + "\n"
    else:
        section = "binaryData"
        value = base64.b64encode(content).decode() + "\n"
    document = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        f"{section}:\n  {key}: {value}"
    )
    loaded = yaml.load(document, Loader=yaml.CSafeLoader)[section][key]
    written = base64.b64decode(loaded) if section == "binaryData" else loaded.encode()
    assert written == content, "the test's manifest must hold exactly the content"
    return document.encode()


def services_refusal(path: Path, max_bytes: int | None = None) -> str:
    """
    The error the service itself gives when it loads the file at C{path}.
    """
    live = LiveConfigService(
        path,
        parse_message,
        runner=inline,
        max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
    )
    with pytest.raises(ConfigError) as refused:
        live.load_blocking()
    return str(refused.value)


def kubectl_or(args: Sequence[str], equivalent: Callable[[], bytes]) -> bytes:
    """
    The output of C{kubectl ARGS...}, or when kubectl is not installed, of
    C{equivalent}: the check is meant to read exactly what kubectl prints,
    so CI, where C{.ci/run} installs kubectl, runs the real thing, and a
    machine without kubectl still checks the same structure.
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return equivalent()
    return subprocess.run(
        [kubectl, *args], check=True, capture_output=True, timeout=60
    ).stdout


def kustomize_deploy(directory: Path = DEPLOY) -> bytes:
    """
    C{kubectl kustomize DIRECTORY}, or its equivalent for deploy/'s plain
    resources: their documents joined into one stream.
    """

    def equivalent() -> bytes:
        resources = yaml.safe_load((directory / "Kustomization").read_text())
        return b"---\n".join(
            (directory / name).read_bytes() for name in resources["resources"]
        )

    return kubectl_or(["kustomize", str(directory)], equivalent)


def status_lines(run: Run) -> list[str]:
    return [line.split(" ", 1)[0] for line in run.out.splitlines()]


# -- plain files ---------------------------------------------------------------


def test_good_file_passes_with_one_ok_line_and_exit_0(
    check: Check, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("Hello"))

    run = check("check", path)

    assert (run.code, run.out, run.err) == (0, f"OK      {path}\n", "")


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_bad_file_fails_with_the_reason_the_service_gives(
    check: Check, tmp_path: Path, case: str
) -> None:
    bad = BAD_CONTENT[case]
    path = tmp_path / "config.yaml"
    path.write_bytes(bad.content)

    run = check("check", path)

    assert (run.code, run.err) == (1, "")
    [line] = run.out.splitlines()
    assert line.startswith(f"FAILED  {path}: ")
    assert bad.matches(line), line
    reason = line.removeprefix(f"FAILED  {path}: ")
    assert reason in services_refusal(path)


def test_each_file_gets_a_line_and_one_failure_fails_the_run(
    check: Check, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_bytes(good("one"))
    second.write_bytes(BAD_CONTENT["message_missing"].content)

    run = check("check", first, second, first)

    assert run.code == 1
    assert status_lines(run) == ["OK", "FAILED", "OK"]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: None, id="missing"),
        pytest.param(lambda p: p.mkdir(), id="directory"),
        pytest.param(lambda p: p.symlink_to(p), id="symlink_loop"),
    ],
)
def test_unreadable_file_fails_as_the_service_reports_it(
    check: Check, tmp_path: Path, make: Callable[[Path], object]
) -> None:
    path = tmp_path / "config.yaml"
    make(path)

    run = check("check", path)

    assert run.code == 1
    reason = run.out.removeprefix(f"FAILED  {path}: ").rstrip("\n")
    assert reason.startswith("cannot read: ")
    assert reason in services_refusal(path)


def test_max_bytes_is_the_services_limit(check: Check, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("x" * 60))

    assert check("check", path).code == 0
    small = check("check", "--max-bytes", "64", path)

    assert small.code == 1
    assert small.out == f"FAILED  {path}: file is over the limit of 64 bytes\n"
    assert "file is over the limit of 64 bytes" in services_refusal(path, 64)


def test_file_from_stdin(check: Check) -> None:
    assert check("check", "-", stdin=good("Hi")).out == "OK      <stdin>\n"
    run = check("check", "-", stdin=b"message: [oops\n")
    assert run.code == 1
    assert BAD_CONTENT["invalid_yaml_syntax"].matches(run.out)
    assert run.out.startswith("FAILED  <stdin>: line 2, column 1: ")


# -- manifests -----------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_bad_configmap_value_fails_with_the_reason_the_service_gives(
    check: Check, tmp_path: Path, case: str
) -> None:
    bad = BAD_CONTENT[case]
    path = tmp_path / "configmap.yaml"
    path.write_bytes(manifest(bad.content))

    run = check("check", "--manifest", path)

    assert (run.code, run.err) == (1, "")
    [line] = run.out.splitlines()
    assert line.startswith(f"FAILED  {path}: ConfigMap demo, key {CONFIG_KEY}: ")
    assert bad.matches(line), line
    # What the kubelet would write from it, the service refuses alike.
    written = tmp_path / CONFIG_KEY
    written.write_bytes(bad.content)
    [result] = check("check", "--manifest", "--format", "json", path).json()["results"]
    assert result["reason"] in services_refusal(written)
    assert (result["status"], result["configmap"], result["key"]) == (
        "failed",
        "demo",
        CONFIG_KEY,
    )


#: The located cases a manifest can hold as a literal block (a NUL byte
#: cannot be: it is quoted, and located where the value starts).
LITERAL_LOCATED = sorted(
    case
    for case, bad in BAD_CONTENT.items()
    if bad.located and b": |\n" in manifest(bad.content)
)


@pytest.mark.parametrize("case", LITERAL_LOCATED)
def test_error_in_a_literal_block_is_located_in_the_manifest_too(
    check: Check, tmp_path: Path, case: str
) -> None:
    document = manifest(BAD_CONTENT[case].content)
    path = tmp_path / "configmap.yaml"
    path.write_bytes(document)

    [result] = check("check", "--manifest", "--format", "json", path).json()["results"]

    header = document.split(b"\n").index(f"  {CONFIG_KEY}: |".encode()) + 1
    assert result["manifest"] == {
        "line": header + result["line"],
        "column": 4 + result["column"],
        "exact": True,
        "style": "literal",
    }


def test_literal_block_error_points_at_the_same_character_in_the_manifest(
    check: Check, tmp_path: Path
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_text(
        "# The demo's config.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: demo\n"
        "data:\n"
        "  other.yaml: |\n"
        "    a: 1\n"
        f"  {CONFIG_KEY}: |  # served at /\n"
        "    message: hello\n"
        "    when: 2026-13-01\n"
    )

    run = check("check", "--manifest", path)

    assert run.out == (
        f"FAILED  {path}: ConfigMap demo, key {CONFIG_KEY}: line 2, column 7: "
        "not a valid timestamp (manifest line 11, column 11)\n"
    )
    assert path.read_text().splitlines()[10][10:] == "2026-13-01"


def test_explicit_indentation_of_a_literal_block_is_followed(
    check: Check, tmp_path: Path
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\ndata:\n"
        f"  {CONFIG_KEY}: |2-\n"
        "      message: indented on purpose\n"
        "    message: twice\n"
    )

    [result] = check("check", "--manifest", "--format", "json", path).json()["results"]

    assert (result["line"], result["column"]) == (2, 1)
    assert result["manifest"]["line"] == 7
    assert result["manifest"]["column"] == 5


@pytest.mark.parametrize(
    ("value", "style", "column"),
    [
        ('"message: a\\nmessage: b\\n"', "double-quoted", 37),
        ("'message: [oops'", "single-quoted", 37),
        (">\n    message: [oops\n", "folded", 37),
    ],
)
def test_error_in_any_other_style_is_given_where_the_value_starts(
    check: Check, tmp_path: Path, value: str, style: str, column: int
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\ndata:\n"
        f"  {CONFIG_KEY}: {value}\n"
    )

    run = check("check", "--manifest", path)
    [result] = check("check", "--manifest", "--format", "json", path).json()["results"]

    assert result["manifest"] == {
        "line": 5,
        "column": column,
        "exact": False,
        "style": style,
    }
    assert run.out.endswith(
        f" (in the manifest: {style} value at line 5, column {column})\n"
    )
    assert re.search(r": line \d+, column \d+: ", run.out)


def test_binary_data_is_decoded_and_checked(check: Check, tmp_path: Path) -> None:
    path = tmp_path / "configmap.yaml"
    encoded = base64.b64encode(good("from binaryData")).decode()
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n"
        f"binaryData:\n  {CONFIG_KEY}: {encoded}\n"
    )
    assert check("check", "--manifest", path).code == 0

    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n"
        f"binaryData:\n  {CONFIG_KEY}: not*base64\n"
    )
    run = check("check", "--manifest", path)
    assert run.code == 1
    assert "the value in binaryData is not base64" in run.out


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (f"  {CONFIG_KEY}: 42\n", "the value in data is not a string"),
        (f"  {CONFIG_KEY}:\n    message: a\n", "the value in data is not a string"),
        (
            f'  {CONFIG_KEY}: "message: a"\n  {CONFIG_KEY}: "message: b"\n',
            "the key appears more than once in the manifest (lines 5 and 6)",
        ),
    ],
)
def test_value_kubernetes_would_not_mount_as_written_fails(
    check: Check, tmp_path: Path, data: str, reason: str
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: demo}}\ndata:\n{data}"
    )

    run = check("check", "--manifest", path)

    assert run.code == 1
    assert f"ConfigMap demo, key {CONFIG_KEY}: {reason} (in the manifest:" in run.out


def test_manifest_that_is_not_yaml_fails_with_its_own_line(
    check: Check, tmp_path: Path
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\ndata: [\n")

    run = check("check", "--manifest", path)

    assert run.code == 1
    assert run.out.startswith(f"FAILED  {path}: line 4, column")
    assert ": not a valid manifest: " in run.out
    assert len(run.out.splitlines()) == 1


def test_max_bytes_applies_to_the_value_and_an_unreadable_manifest_fails_alone(
    check: Check, tmp_path: Path
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_bytes(manifest(good("x" * 60)))
    missing = tmp_path / "missing.yaml"

    run = check("check", "--manifest", "--max-bytes", "64", path, missing)

    assert run.code == 1
    over, unreadable = run.out.splitlines()
    assert over == (
        f"FAILED  {path}: ConfigMap demo, key {CONFIG_KEY}: "
        "file is over the limit of 64 bytes "
        "(in the manifest: literal value at line 6, column 37)"
    )
    assert unreadable.startswith(f"FAILED  {missing}: cannot read: ")


def test_multi_document_manifest_checks_every_configmap_and_passes_over_the_rest(
    check: Check,
) -> None:
    stream = b"---\n".join(
        [
            b"apiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
            manifest(good("first"), name="first"),
            b"# only a comment\n",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n"
            b"data: {prometheus.yml: 'x: 1'}\n",
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            b"apiVersion: v1\nkind: List\nitems:\n- "
            + manifest(BAD_CONTENT["message_null"].content, name="listed")
            .replace(b"\n", b"\n  ")
            .rstrip(b" "),
            manifest(good("third"), name="third").replace(
                b"  name: third\n", b"  name: third\n  namespace: prod\n"
            ),
        ]
    )

    run = check("check", "--manifest", "-", stdin=stream)

    where = f"key {CONFIG_KEY}"
    assert run.code == 1
    assert run.out.splitlines() == [
        f"OK      <stdin>: ConfigMap first, {where}",
        f"SKIPPED <stdin>: ConfigMap other, {where}: no such key in data or binaryData",
        f"FAILED  <stdin>: ConfigMap listed, {where}: 'message' must be a string, "
        "got null (in the manifest: literal value at line 33, column 39)",
        f"OK      <stdin>: ConfigMap prod/third, {where}",
    ]
    documents = [
        r["document"]
        for r in check(
            "check", "--manifest", "--format", "json", "-", stdin=stream
        ).json()["results"]
    ]
    assert documents == [2, 4, 6, 7]


def test_configmap_without_the_key_is_skipped_but_none_with_it_fails(
    check: Check, tmp_path: Path
) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_bytes(manifest(good("hi"), key="flags.yaml"))
    service = tmp_path / "service.yaml"
    service.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")

    run = check("check", "--manifest", path, service)

    assert run.code == 1
    assert run.out.splitlines() == [
        f"SKIPPED {path}: ConfigMap demo, key {CONFIG_KEY}: "
        "no such key in data or binaryData",
        f"FAILED  {path}, {service}: no ConfigMap holds the key {CONFIG_KEY}",
    ]
    assert check("check", "--manifest", "--key", "flags.yaml", path).out == (
        f"OK      {path}: ConfigMap demo, key flags.yaml\n"
    )


def test_deploy_configmap_and_kubectl_create_output_pass(check: Check) -> None:
    assert check("check", "--manifest", DEPLOY / "configmap.yaml").code == 0
    config = ROOT / "examples" / "config" / CONFIG_KEY
    created = kubectl_or(
        [
            "create",
            "configmap",
            "configmap-microservice-demo",
            f"--from-file={CONFIG_KEY}={config}",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        lambda: manifest(config.read_bytes(), name="configmap-microservice-demo"),
    )

    run = check("check", "--manifest", "-", stdin=created)

    assert (run.code, run.out) == (
        0,
        f"OK      <stdin>: ConfigMap configmap-microservice-demo, key {CONFIG_KEY}\n",
    )


def test_kustomize_output_of_deploy_is_checked(check: Check, tmp_path: Path) -> None:
    run = check("check", "--manifest", "-", stdin=kustomize_deploy())
    assert (run.code, run.out) == (
        0,
        f"OK      <stdin>: ConfigMap configmap-microservice-demo, key {CONFIG_KEY}\n",
    )

    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    configmap = broken / "configmap.yaml"
    configmap.write_text(
        configmap.read_text().replace(
            "message: Hello World", "message: Hello World\n    when: 2026-13-01"
        )
    )
    rendered = kustomize_deploy(broken)

    run = check("check", "--manifest", "-", stdin=rendered)

    assert run.code == 1
    [failed] = check(
        "check", "--manifest", "--format", "json", "-", stdin=rendered
    ).json()["results"]
    at = failed["manifest"]
    assert at["exact"]
    line = rendered.decode().splitlines()[at["line"] - 1]
    assert line[at["column"] - 1 :] == "2026-13-01"


# -- exit codes, JSON, the console script ----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["chek", "config.yaml"],
        ["check"],
        ["check", "--manifest"],
        ["check", "--no-such-option", "config.yaml"],
        ["check", "--format", "xml", "config.yaml"],
        ["check", "--max-bytes", "0", "config.yaml"],
        ["check", "--max-bytes", "lots", "config.yaml"],
        ["check", "--key", "flags.yaml", "config.yaml"],
        ["check", "-", "-"],
    ],
    ids=lambda args: " ".join(args) or "nothing",
)
def test_usage_error_is_one_line_and_exit_2(check: Check, args: list[str]) -> None:
    run = check(*args)

    assert (run.code, run.out) == (2, "")
    [line] = run.err.splitlines()
    assert re.match(r"configmapdemo( check)?: error: \S", line), line


def test_help_exits_0_and_names_the_options(check: Check) -> None:
    run = check("check", "--help")

    assert run.code == 0
    for option in (
        "--manifest",
        "--key",
        "--format",
        "--max-bytes",
        "--tls-cert",
        "--tls-key",
    ):
        assert option in run.out
    top = check("--help")
    assert (top.code, top.err) == (0, "")
    assert top.out.startswith("usage: configmapdemo check ")


def test_json_output_says_what_the_text_says(check: Check, tmp_path: Path) -> None:
    ok, bad = tmp_path / "ok.yaml", tmp_path / "bad.yaml"
    ok.write_bytes(good("fine"))
    bad.write_bytes(BAD_CONTENT["duplicate_keys"].content)

    run = check("check", "--format", "json", ok, bad)

    assert run.code == 1
    assert run.json() == {
        "ok": False,
        "results": [
            {
                "status": "ok",
                "file": str(ok),
                "configmap": None,
                "key": None,
                "document": None,
                "files": None,
                "reason": None,
                "line": None,
                "column": None,
                "error": None,
                "manifest": None,
            },
            {
                "status": "failed",
                "file": str(bad),
                "configmap": None,
                "key": None,
                "document": None,
                "files": None,
                "reason": "line 2, column 1: duplicate key (first on line 1)",
                "line": 2,
                "column": 1,
                "error": {
                    "problem": "duplicate key (first on line 1)",
                    "file": None,
                    "key": None,
                    "line": 2,
                    "column": 1,
                },
                "manifest": None,
            },
        ],
    }
    assert check("check", "--format", "json", ok).json()["ok"] is True


def test_installed_console_script_checks_kustomize_output_from_a_pipe(
    tmp_path: Path,
) -> None:
    script = BIN / "configmapdemo"
    assert script.exists(), "pip install -e . installs the configmapdemo script"
    good_run = subprocess.run(
        [script, "check", "--manifest", "-"],
        input=kustomize_deploy(),
        capture_output=True,
        timeout=60,
    )
    assert (good_run.returncode, good_run.stderr) == (0, b"")
    assert good_run.stdout.startswith(b"OK      <stdin>: ConfigMap ")

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(BAD_CONTENT["alias_bomb"].content)
    bad_run = subprocess.run(
        [script, "check", bad], capture_output=True, text=True, timeout=60
    )
    assert bad_run.returncode == 1
    assert BAD_CONTENT["alias_bomb"].matches(bad_run.stdout)
    assert "Traceback" not in bad_run.stderr

    usage = subprocess.run(
        [script, "check"], capture_output=True, text=True, timeout=60
    )
    assert (usage.returncode, usage.stdout, len(usage.stderr.splitlines())) == (
        2,
        "",
        1,
    )


def test_pre_commit_hooks_run_the_installed_check(tmp_path: Path) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(manifest(BAD_CONTENT["message_missing"].content))
    examples = {
        "configmapdemo-check": ROOT / "examples" / "config" / CONFIG_KEY,
        "configmapdemo-check-manifest": DEPLOY / "configmap.yaml",
    }
    assert sorted(hook["id"] for hook in hooks) == sorted(examples)

    for hook in hooks:
        assert hook["language"] == "python"
        # pre-commit runs the entry with the hook's args and then the files.
        entry = shlex.split(hook["entry"]) + hook.get("args", [])
        assert entry[0] == "configmapdemo"
        argv = [str(BIN / entry[0]), *entry[1:]]
        passed = subprocess.run(
            [*argv, examples[hook["id"]]], capture_output=True, timeout=60
        )
        assert passed.returncode == 0, passed.stdout
        failed = subprocess.run([*argv, bad], capture_output=True, timeout=60)
        assert failed.returncode == 1


# -- a certificate pair ----------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.make()


def pair_in(directory: Path, files: dict[str, bytes]) -> list[str]:
    """
    C{files} written into C{directory} as a TLS Secret volume is, and the
    options that name them.
    """
    AtomicWriter(directory).write(files)
    return [
        "--tls-cert",
        str(directory / CERT_FILE),
        "--tls-key",
        str(directory / KEY_FILE),
    ]


def servers_refusal(directory: Path) -> str:
    """
    The error the server itself gives when it loads the pair in C{directory}.
    """
    files = tls_files(str(directory / CERT_FILE), str(directory / KEY_FILE))
    assert files is not None
    live = LiveConfigService(
        files.directory, files.parse, files=files.names, runner=inline
    )
    with pytest.raises(ConfigError) as refused:
        live.load_blocking()
    return str(refused.value)


def test_good_pair_passes_beside_a_config_file(
    check: Check, tmp_path: Path, ca: CA
) -> None:
    options = pair_in(tmp_path / "tls", ca.issue().files())
    config = tmp_path / "config.yaml"
    config.write_bytes(good("Hi"))

    assert (
        check("check", *options).out == f"OK      {tmp_path}/tls/{{tls.crt,tls.key}}\n"
    )
    run = check("check", config, *options)
    assert (run.code, status_lines(run)) == (0, ["OK", "OK"])


@pytest.mark.parametrize(
    "case",
    [
        "mismatched",
        "garbage key",
        "garbage certificate",
        "expired",
        "not valid yet",
        "encrypted key",
        "too large to send in one handshake",
    ],
)
def test_bad_pair_fails_with_the_reason_the_server_gives(
    check: Check, tmp_path: Path, ca: CA, case: str
) -> None:
    leaf = ca.issue()
    files = {
        "mismatched": lambda: mismatched(leaf),
        "garbage key": lambda: {CERT_FILE: leaf.cert_pem, KEY_FILE: b"junk\n"},
        "garbage certificate": lambda: {CERT_FILE: b"junk\n", KEY_FILE: leaf.key_pem},
        "expired": lambda: ca.expired().files(),
        "not valid yet": lambda: ca.issue(
            not_before=datetime.now(timezone.utc) + timedelta(days=1)
        ).files(),
        "encrypted key": lambda: {
            CERT_FILE: leaf.cert_pem,
            KEY_FILE: leaf.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
        },
        "too large to send in one handshake": lambda: ca.issue(names=2500).files(),
    }[case]()
    directory = tmp_path / "tls"
    options = pair_in(directory, files)

    run = check("check", *options)

    assert run.code == 1
    # The server names the directory, then the same reason.
    assert run.out == (
        f"FAILED  {directory}/{{tls.crt,tls.key}}: "
        f"{servers_refusal(directory).removeprefix(f'{directory}: ')}\n"
    )


def test_missing_key_file_fails_naming_it(check: Check, tmp_path: Path, ca: CA) -> None:
    options = pair_in(tmp_path / "tls", {CERT_FILE: ca.issue().cert_pem})

    run = check("check", "--format", "json", *options)

    assert run.code == 1
    [result] = run.json()["results"]
    assert result == {
        "status": "failed",
        "file": str(tmp_path / "tls"),
        "configmap": None,
        "key": None,
        "document": None,
        "files": [CERT_FILE, KEY_FILE],
        "reason": f"{KEY_FILE}: cannot read: No such file or directory",
        "line": None,
        "column": None,
        "error": {
            "problem": "cannot read: No such file or directory",
            "file": KEY_FILE,
            "key": None,
            "line": None,
            "column": None,
        },
        "manifest": None,
    }


def test_pair_under_other_names_is_read_under_them(
    check: Check, tmp_path: Path, ca: CA
) -> None:
    leaf = ca.issue()
    (tmp_path / "server.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "server-key.pem").write_bytes(leaf.key_pem)
    cert, key = tmp_path / "server.pem", tmp_path / "server-key.pem"

    assert check("check", "--tls-cert", cert, "--tls-key", key).code == 0
    key.write_bytes(key_pem(new_key()))
    run = check("check", "--tls-cert", cert, "--tls-key", key)
    assert run.code == 1
    assert "server-key.pem: the private key does not match the certificate in " in (
        run.out
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--tls-cert", "/etc/tls/tls.crt"],
        ["--tls-key", "/etc/tls/tls.key", "config.yaml"],
        ["--tls-cert", "/etc/a/tls.crt", "--tls-key", "/etc/b/tls.key"],
        ["--manifest", "--tls-cert", "/etc/tls/tls.crt", "--tls-key", "/etc/tls/k"],
    ],
    ids=" ".join,
)
def test_tls_options_that_are_not_one_pair_are_a_usage_error(
    check: Check, args: list[str]
) -> None:
    run = check("check", *args)

    assert (run.code, run.out) == (2, "")
    [line] = run.err.splitlines()
    assert line.startswith("configmapdemo check: error: "), line


# -- the library's door ----------------------------------------------------------


def parse_flags(data: bytes) -> object:
    """
    Another app's parser: lines of C{name=on|off}.
    """
    flags = {}
    for number, line in enumerate(data.decode().splitlines(), 1):
        name, _, value = line.partition("=")
        if value not in ("on", "off"):
            raise ConfigError("on or off", line=number, column=len(name) + 2)
        flags[name] = value == "on"
    return flags


def test_any_apps_parser_gets_the_same_command() -> None:
    stdin = io.BytesIO(
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata:\n"
        b"  flags.txt: |\n    dark=on\n    beta=maybe\n"
    )
    out, err = io.StringIO(), io.StringIO()

    code = check_main(
        parse_flags,
        ["--manifest", "-"],
        prog="flags check",
        key="flags.txt",
        stdin=stdin,
        stdout=out,
        stderr=err,
    )

    assert (code, err.getvalue()) == (1, "")
    assert out.getvalue() == (
        "FAILED  <stdin>: ConfigMap flags, key flags.txt: line 2, column 6: "
        "on or off (manifest line 7, column 10)\n"
    )


# -- the docs quote real output ---------------------------------------------------


def test_readme_examples_print_what_the_readme_shows() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Validate before you apply\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    examples = re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", block, re.MULTILINE)
    assert len(examples) == 2
    for command, shown in examples:
        ran = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env={"PATH": f"{BIN}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (ran.stdout, ran.stderr) == (shown, ""), command


def test_deploy_readme_quotes_the_checks_output_on_deploy(check: Check) -> None:
    run = check("check", "--manifest", "-", stdin=kustomize_deploy())
    [line] = run.out.splitlines()
    assert f"```\n{line}\n```" in (DEPLOY / "README.md").read_text()


def _crashes_on_secrets(data: bytes) -> object:
    """
    Another app's parser, with a bug that the word C{hunter2} finds.
    """
    if b"hunter2" in data:
        raise KeyError(data.decode())
    return data


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_parser_that_crashes_fails_its_file_and_the_others_are_still_checked(
    tmp_path: Path, output: str
) -> None:
    crashing, fine = tmp_path / "a.yaml", tmp_path / "b.yaml"
    crashing.write_bytes(b"password: hunter2\n")
    fine.write_bytes(b"message: hi\n")
    out, err = io.StringIO(), io.StringIO()

    code = check_main(
        _crashes_on_secrets,
        ["--format", output, str(crashing), str(fine)],
        prog="app check",
        key="app.yaml",
        stdout=out,
        stderr=err,
    )

    assert (code, err.getvalue()) == (1, "")
    assert "hunter2" not in out.getvalue()
    # Its import path, then the exception's type and where it was raised.
    reason = (
        r"cannot parse: tests\.test_check:_crashes_on_secrets: KeyError "
        r"\(test_check\.py line \d+, in _crashes_on_secrets\)"
    )
    if output == "json":
        results = json.loads(out.getvalue())["results"]
        assert [r["status"] for r in results] == ["failed", "ok"]
        assert re.fullmatch(reason, results[0]["reason"])
    else:
        failed, passed = out.getvalue().splitlines()
        assert re.fullmatch(f"FAILED  {re.escape(str(crashing))}: {reason}", failed)
        assert passed == f"OK      {fine}"


def test_a_value_its_tag_cannot_convert_fails_without_a_traceback(
    check: Check, tmp_path: Path
) -> None:
    bad, fine = tmp_path / "bad.yaml", tmp_path / "fine.yaml"
    bad.write_bytes(b"message: hi\nflag: !!bool hunter2\n")
    fine.write_bytes(good("hi"))

    text = check("check", bad, fine)
    as_json = check("check", "--format", "json", bad, fine)

    assert (text.code, text.err) == (1, "")
    assert text.out == (
        f"FAILED  {bad}: line 2, column 7: not a valid boolean\nOK      {fine}\n"
    )
    [failed, passed] = as_json.json()["results"]
    assert (failed["line"], failed["column"], passed["status"]) == (2, 7, "ok")
    assert "hunter2" not in text.out + as_json.out


def test_a_file_too_costly_for_the_parser_process_fails_as_the_service_refuses_it(
    tmp_path: Path,
) -> None:
    # Under the 1 MiB limit, but PyYAML needs about 150 MiB to build it: a
    # running service's parser process refuses it, and so does the check.
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: hi\nk: [" + b"0," * 520_000 + b"0]\n")
    out = io.StringIO()

    code = check_main(
        parse_message, [str(path)], prog="app check", key=CONFIG_KEY, stdout=out
    )

    assert (code, out.getvalue()) == (
        1,
        f"FAILED  {path}: parsing it needed more than 72 MiB of memory, "
        "the parser process's limit\n",
    )


def test_a_parse_function_the_parser_process_cannot_import_runs_here(
    tmp_path: Path,
) -> None:
    good_file, crashing = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good_file.write_bytes(b"message: hi\n")
    crashing.write_bytes(b"password: hunter2\n")
    out = io.StringIO()

    def parse(data: bytes) -> object:
        if b"hunter2" in data:
            raise KeyError(data.decode())
        return data

    code = check_main(
        parse,
        [str(good_file), str(crashing)],
        prog="app check",
        key="app.yaml",
        stdout=out,
    )

    passed, failed = out.getvalue().splitlines()
    assert (code, passed) == (1, f"OK      {good_file}")
    assert re.fullmatch(
        rf"FAILED  {re.escape(str(crashing))}: cannot parse: KeyError "
        r"\(test_check\.py line \d+, in parse\)",
        failed,
    )
