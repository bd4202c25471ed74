"""
What the service loads: a plain-HTTP start imports none of the TLS
machinery and none of the routes past the front, and the parser process
imports only what its parse function needs.  Their cost is measured by
the benchmark B8 (C{bench/footprint.py}).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from bench.proc import stat_fields
from tests import lean_parser
from tests.certs import CA
from tests.support import TwistdServer, until, wait_for
from twisted_demo.config import PARSE_IMPORTS, parse_message
from twisted_demo.live._process import ParserProcess
from twisted_demo.live._spawn import stdin_writer
from twisted_demo.live._watcher import WatchedDirectory
from twisted_demo.testing import AtomicWriter

reactor: Any = _reactor

#: The packages of the TLS machinery: pyOpenSSL, cryptography (its x509
#: layer among them) and service_identity.
TLS_PACKAGES = ("OpenSSL", "cryptography", "service_identity")

#: Modules of ours that plain HTTP must not load, and those only a request
#: past the front (C{/config}, C{/metrics}, C{/-/reload}) needs.
TLS_MODULES = {"twisted_demo.tls", "twisted_demo.tls_pair"}
ROUTE_PACKAGES = ("klein", "werkzeug", "prometheus_client", "twisted_demo.routes")

#: The C{configmapdemo check} command's own modules.
CHECK_MODULES = {
    "twisted_demo.check",
    "twisted_demo.live._check",
    "twisted_demo.live._command",
    "twisted_demo.live._manifest",
    "twisted_demo.live._report",
}


def start_imports(*twistd: str, get: tuple[str, ...] = ()) -> set[str]:
    """
    The modules a C{twistd} start with the arguments C{twistd} imports,
    building the service as C{twistd} does in a fresh interpreter, then
    answering a C{GET} of each path in C{get}.
    """
    gets = [arg for path in get for arg in ("--get", path)]
    result = subprocess.run(
        [sys.executable, "-m", "tests.start_imports", *gets, "--", *twistd],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout)
    return set(modules)


def of(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m.partition(".")[0] in packages or m in packages}


def routes_of(modules: set[str]) -> set[str]:
    return {m for m in modules if m.startswith(ROUTE_PACKAGES)}


def configmap(tmp_path: Path) -> str:
    AtomicWriter(tmp_path / "config").write({"config.yaml": b"message: hi\n"})
    return str(tmp_path / "config" / "config.yaml")


def test_plain_http_start_loads_no_tls_beyond_twisted_web_s(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    floor = start_imports(
        "web", "--listen", "tcp:0", "--path", str(tmp_path / "static")
    )
    plain = start_imports(
        "configmapdemo", "--config", configmap(tmp_path), "--listen", "tcp:0"
    )
    assert "twisted_demo.tap" in plain
    assert plain & TLS_MODULES == set()
    # Nor the check command, whose parser twistd's options used to load.
    assert plain & CHECK_MODULES == set()
    # Twisted's own TCP transport loads part of it, and twistd web pays
    # that too; nothing more.
    assert of(plain, TLS_PACKAGES) - of(floor, TLS_PACKAGES) == set()


def test_https_start_loads_the_tls_modules(tmp_path: Path) -> None:
    # The probe of the test above sees them when they are loaded.
    (tmp_path / "tls").mkdir()
    for name, contents in CA.make().issue("localhost").files().items():
        (tmp_path / "tls" / name).write_bytes(contents)
    https = start_imports(
        "configmapdemo",
        "--config",
        configmap(tmp_path),
        "--listen",
        "tcp:0",
        "--tls-cert",
        str(tmp_path / "tls" / "tls.crt"),
        "--tls-key",
        str(tmp_path / "tls" / "tls.key"),
    )
    assert TLS_MODULES <= https


def test_no_server_loads_a_yaml_parser(tmp_path: Path) -> None:
    # The webhook's server hands each review to its parser process; the
    # service's server has its first config parsed by a parser process too.
    for name, contents in CA.make().issue("localhost").files().items():
        (tmp_path / name).write_bytes(contents)
    webhook = start_imports(
        "configmapdemo-webhook",
        "--listen",
        "tcp:0",
        "--tls-cert",
        str(tmp_path / "tls.crt"),
        "--tls-key",
        str(tmp_path / "tls.key"),
    )
    assert "twisted_demo.webhook_tap" in webhook
    assert of(webhook, ("yaml", "_yaml")) == set()
    service = start_imports(
        "configmapdemo", "--config", configmap(tmp_path), "--listen", "tcp:0"
    )
    assert "twisted_demo.tap" in service
    assert of(service, ("yaml", "_yaml")) == set()


def test_routes_past_the_front_load_at_their_first_request(tmp_path: Path) -> None:
    config = configmap(tmp_path)
    args = ("configmapdemo", "--config", config, "--listen", "tcp:0")
    probed = start_imports(*args, get=("/", "/healthz", "/readyz"))
    assert routes_of(probed) == set()
    scraped = start_imports(*args, get=("/metrics",))
    assert {"klein", "prometheus_client", "twisted_demo.routes"} <= routes_of(scraped)


async def parser_modules(
    preload: list[str], config: bytes | None = None
) -> tuple[object, set[str]]:
    """
    The message of C{config} (if given) parsed by the demo's parse function
    in a parser process started with C{preload}, and the modules that
    process has loaded then.
    """
    parse = ParserProcess(reactor, preload=preload)
    parse.startService()
    try:
        parsed = None
        if config is not None:
            parsed = await parse(parse_message, config).addTimeout(30, reactor)
        listed = parse(lean_parser.modules, b"").addTimeout(30, reactor)
        return parsed, set(await listed)
    finally:
        await parse.stopService()


@pytest_twisted.ensureDeferred
async def test_parser_process_imports_only_what_its_parse_needs() -> None:
    # As the demo runs it: its parse module and what that imports when
    # called loaded as the process starts.
    parsed, modules = await parser_modules(
        ["twisted_demo.config", *PARSE_IMPORTS], b"message: hi\n"
    )
    assert parsed == "hi"
    # __main__ is the few lines that lower the child's priority before
    # importing its module.
    ours = {m for m in modules if m.startswith(("twisted_demo", "tests", "__main__"))}
    assert ours == {
        "twisted_demo",
        "twisted_demo.config",
        "twisted_demo.live",
        "twisted_demo.live._child",
        "twisted_demo.live._errors",
        "twisted_demo.live._yaml",
        "tests",
        "tests.lean_parser",
        "__main__",
    }
    others = {
        m.partition(".")[0]
        for m in modules - ours
        if m.partition(".")[0] not in sys.stdlib_module_names
    }
    # PyYAML, and the runtime of its compiled part.
    assert {m for m in others if not m.startswith("_cython_")} <= {
        "yaml",
        "_yaml",
        "cython_runtime",
    }
    # Neither site, whose start and .pth files add modules, nor typing, nor
    # runpy, which running a module by name (-m) would import.
    assert modules & {"site", "typing", "runpy"} == set()


@pytest_twisted.ensureDeferred
async def test_preload_imports_modules_and_names_before_the_first_parse() -> None:
    # twisted_demo.live loads parse_yaml's module only when the name is
    # looked up: "module:name" does that as the process starts.
    _, modules = await parser_modules(
        ["tests.lean_parser", "twisted_demo.live:parse_yaml"]
    )
    assert {"twisted_demo.live._yaml", "yaml"} <= modules


def test_service_parser_process_has_its_yaml_parser_before_a_reload(
    twistd_server: TwistdServer,
) -> None:
    # The demo's parse function imports the YAML parser at its first call;
    # its parser process imports it as it starts, not at the first reload.
    [child] = wait_for(twistd_server.children, "the parser process")
    wait_for(
        lambda: "/yaml/_yaml." in Path(f"/proc/{child}/maps").read_text(),
        "the parser process to load PyYAML",
    )


@pytest_twisted.ensureDeferred
async def test_certificate_pair_parser_process_loads_no_yaml_parser() -> None:
    # The pair's parser process, started as HTTPS starts it, parses PEM.
    _, modules = await parser_modules(["twisted_demo.tls_pair"])
    assert "twisted_demo.tls_pair" in modules
    assert {m for m in modules if m.partition(".")[0] in ("yaml", "_yaml")} == set()


class _Ends(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_request_reaches_the_idle_parser_before_the_reactor_runs() -> None:
    # stdin_writer reaches into Twisted's process transport, which has no
    # public way to write now: this fails if Twisted moves what it uses.
    ends = _Ends()
    child = reactor.spawnProcess(
        ends,
        sys.executable,
        [sys.executable, "-c", "import sys; sys.stdin.buffer.read(1)"],
        env=None,
        childFDs={0: "w", 1: "r", 2: "r"},
    )
    try:
        child.write(b"x")
        writer = stdin_writer(child)
        assert writer is not None
        writer.doWrite()
        # The child reads its byte and exits while the reactor stands still
        # (it is a zombie until the reactor reaps it).
        wait_for(
            lambda: stat_fields(child.pid)[0] == "Z",
            "the child to read what was written and exit",
        )
    finally:
        await ends.ended


class _Counted(WatchedDirectory):
    made: list[bytes] = []

    def child(self, path: bytes) -> FilePath[bytes]:  # type: ignore[override]
        self.made.append(path)
        return super().child(path)


@pytest_twisted.ensureDeferred
async def test_inotify_names_each_event_through_the_watched_directory(
    tmp_path: Path,
) -> None:
    # The watcher's WatchedDirectory saves FilePath.child's checks only if
    # Twisted's INotify makes each event's path with the watched path's
    # child(): this fails if Twisted stops doing so.
    from twisted.internet import inotify

    seen: list[FilePath[bytes]] = []
    notifier = inotify.INotify(reactor)
    notifier.startReading()
    try:
        notifier.watch(
            _Counted(bytes(tmp_path)),
            mask=inotify.IN_CREATE,
            callbacks=[lambda _, path, mask: seen.append(path)],
        )
        (tmp_path / "config.yaml").write_bytes(b"message: hi\n")
        await until(reactor, lambda: bool(seen), "the event")
    finally:
        notifier.loseConnection()
    assert seen == [FilePath(bytes(tmp_path / "config.yaml"))]
    assert _Counted.made == [b"config.yaml"]
