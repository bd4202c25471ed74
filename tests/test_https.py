"""
HTTPS as a user runs it: C{twistd -n configmapdemo --tls-cert --tls-key}
in a subprocess, its certificate pair rotated the way the kubelet updates
a C{kubernetes.io/tls} Secret volume, read by Python's own C{ssl} client;
then the options and the wiring behind it, in-process.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import MultiService

from tests.certs import CA, Leaf, key_pem, leaf_with_flight, mismatched, new_key
from tests.support import (
    CONFIG_NAME,
    DEADLINE,
    InProcessService,
    Response,
    TwistdServer,
    metric_value,
    wait_for,
)
from twisted_demo.live import LiveConfigService
from twisted_demo.options import Options
from twisted_demo.tap import makeService
from twisted_demo.testing import AtomicWriter, twistd_executable
from twisted_demo.tls import CERT_FILE, KEY_FILE, TLSFiles
from twisted_demo.tls_pair import FLIGHT_LIMIT

EXPIRY = "configmapdemo_tls_certificate_expiry_timestamp_seconds"
TLS_RELOADS = "configmapdemo_tls_reloads_total"
TLS_FAILURES = "configmapdemo_tls_reload_failures_total"
TLS_LAST_SUCCESSFUL = "configmapdemo_tls_last_reload_successful"


class HTTPSServer(TwistdServer):
    """
    C{twistd -n configmapdemo} serving HTTPS with the pair in the Secret
    volume C{secret}, under the file names C{cert} and C{key}, asked by a
    client that trusts only C{ca} and checks the server's name.
    """

    def __init__(
        self,
        config: Path,
        secret: AtomicWriter,
        ca: CA,
        cert: str = CERT_FILE,
        key: str = KEY_FILE,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(
            config,
            extra=[
                "--tls-cert",
                str(secret.target_dir / cert),
                "--tls-key",
                str(secret.target_dir / key),
                *extra,
            ],
        )
        self.ca = ca

    @contextmanager
    def connection(
        self, alpn: list[str] | None = None, version: ssl.TLSVersion | None = None
    ) -> Iterator[http.client.HTTPSConnection]:
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode("ascii"))
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        if version is not None:
            context.minimum_version = context.maximum_version = version
        connection = http.client.HTTPSConnection(
            "localhost", self.port, context=context, timeout=DEADLINE
        )
        try:
            yield connection
        finally:
            connection.close()

    def get(self, path: str = "/") -> Response:
        with self.connection() as connection:
            return request(connection, path)

    def fingerprint(self) -> str:
        """
        The SHA-256 fingerprint of the certificate a new connection gets.
        """
        with self.connection() as connection:
            connection.connect()
            return peer_sha256(connection)

    def tls(self) -> dict[str, Any]:
        """
        The C{tls} object of C{GET /config}.
        """
        status: dict[str, Any] = json.loads(self.get("/config").body)["tls"]
        return status

    def metrics(self) -> str:
        return self.get("/metrics").text


def request(connection: http.client.HTTPSConnection, path: str = "/") -> Response:
    connection.request("GET", path)
    response = connection.getresponse()
    return Response(response.status, dict(response.getheaders()), response.read())


def peer_sha256(connection: http.client.HTTPSConnection) -> str:
    assert connection.sock is not None
    der = connection.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def local_port(connection: http.client.HTTPSConnection) -> int:
    assert connection.sock is not None
    port: int = connection.sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.make()


@pytest.fixture(scope="module")
def leaf_a(ca: CA) -> Leaf:
    return ca.issue("localhost")


@pytest.fixture(scope="module")
def leaf_b(ca: CA) -> Leaf:
    return ca.issue("localhost")


@pytest.fixture
def secret(tmp_path: Path, leaf_a: Leaf) -> AtomicWriter:
    """
    A TLS Secret volume holding pair A.
    """
    writer = AtomicWriter(tmp_path / "tls")
    writer.write(leaf_a.files())
    return writer


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b"message: Hello HTTPS\n")
    return path


@pytest.fixture
def server(config: Path, secret: AtomicWriter, ca: CA) -> Iterator[HTTPSServer]:
    server = HTTPSServer(config, secret, ca)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def test_clients_offering_alpn_are_served_http_1_1(server: HTTPSServer) -> None:
    """
    Browsers, curl and most HTTP clients offer ALPN; the handshake used to
    fail for them with an internal-error alert, since the protocols to
    offer were asked of the connection guard rather than the site.
    """
    with server.connection(alpn=["h2", "http/1.1"]) as connection:
        response = request(connection)
        assert connection.sock is not None
        assert connection.sock.selected_alpn_protocol() == "http/1.1"
    assert (response.status, response.body) == (200, b"Hello HTTPS")


def test_rotation_serves_new_connections_the_new_pair_and_open_ones_finish(
    server: HTTPSServer, secret: AtomicWriter, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    with server.connection() as before:
        first = request(before)
        assert (first.status, first.body) == (200, b"Hello HTTPS")
        assert peer_sha256(before) == leaf_a.sha256
        port = local_port(before)

        rotated_at = time.monotonic()
        secret.write(leaf_b.files())
        wait_for(
            lambda: server.fingerprint() == leaf_b.sha256,
            "a new connection to get pair B",
        )
        # Printed, not asserted: timings on a shared machine are noise.
        print(f"pair B served {time.monotonic() - rotated_at:.3f}s after the write")

        # The connection opened before the rotation goes on, on pair A.
        again = request(before)
        assert (again.status, again.body) == (200, b"Hello HTTPS")
        assert (peer_sha256(before), local_port(before)) == (leaf_a.sha256, port)

    tls = server.tls()
    assert (tls["sha256"], tls["last_error"]) == (leaf_b.sha256, None)
    exposition = server.metrics()
    assert metric_value(exposition, TLS_RELOADS) == 1
    assert metric_value(exposition, TLS_FAILURES) == 0
    assert metric_value(exposition, EXPIRY) == (
        leaf_b.certificate.not_valid_after_utc.timestamp()
    )
    assert "Traceback" not in server.output


def _garbage_key(leaf: Leaf) -> dict[str, bytes]:
    return {CERT_FILE: leaf.cert_pem, KEY_FILE: b"-----BEGIN PRIVATE KEY-----\nno\n"}


def _expired(leaf: Leaf) -> dict[str, bytes]:
    return CA.make().expired().files()


def _too_large(leaf: Leaf) -> dict[str, bytes]:
    # About 2,500 host names: the handshake Twisted would stall on.
    return CA.make().issue(names=2500).files()


#: Pairs the server must refuse, and how its reason starts.
REFUSED: list[tuple[str, Callable[[Leaf], dict[str, bytes]], str]] = [
    ("mismatched", mismatched, f"{KEY_FILE}: the private key does not match"),
    ("garbage key", _garbage_key, f"{KEY_FILE}: no PEM private key could be read"),
    ("expired", _expired, f"{CERT_FILE}: the certificate expired at "),
    ("too large", _too_large, f"{CERT_FILE}: the certificate chain is too large"),
]


def refused_for(server: HTTPSServer, reason: str) -> dict[str, Any] | None:
    """
    The C{tls} object of C{/config} if its last error starts with C{reason}.
    """
    tls = server.tls()
    error = tls["last_error"]
    return tls if error is not None and error.startswith(reason) else None


def test_refused_pairs_leave_the_old_one_served_and_say_why(
    server: HTTPSServer, secret: AtomicWriter, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    where = f"{secret.target_dir}: "
    for count, (name, bad, reason) in enumerate(REFUSED, 1):
        secret.write(bad(leaf_b))
        tls = wait_for(
            functools.partial(refused_for, server, where + reason),
            f"the {name} pair to be refused",
        )
        assert tls["sha256"] == leaf_a.sha256, name
        assert server.fingerprint() == leaf_a.sha256, name
        assert server.get("/").body == b"Hello HTTPS"
        exposition = server.metrics()
        assert metric_value(exposition, TLS_FAILURES) == count, name
        assert metric_value(exposition, TLS_LAST_SUCCESSFUL) == 0, name
        assert metric_value(exposition, EXPIRY) == (
            leaf_a.certificate.not_valid_after_utc.timestamp()
        )
        # Logged once, however many times the files are read again.
        assert server.output.count(tls["last_error"]) == 1, name

    # The next good pair is taken as usual, and the error clears.
    secret.write(leaf_b.files())
    wait_for(lambda: server.fingerprint() == leaf_b.sha256, "pair B to be served")
    assert server.tls()["last_error"] is None
    exposition = server.metrics()
    assert metric_value(exposition, TLS_LAST_SUCCESSFUL) == 1
    assert metric_value(exposition, TLS_RELOADS) == 1
    assert "Traceback" not in server.output


def described(leaf: Leaf) -> str:
    """
    How a certificate event describes C{leaf}: as C{/config} does.
    """
    certificate = leaf.certificate
    return (
        f"sha256 {leaf.sha256}, subject {certificate.subject.rfc4514_string()}, "
        f"not_after {certificate.not_valid_after_utc.isoformat()}"
    )


def test_certificate_events_are_logged_as_such_with_the_fingerprint_config_shows(
    server: HTTPSServer, secret: AtomicWriter, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    assert f"TLS certificate loaded: {described(leaf_a)}" in server.output
    secret.write(leaf_b.files())
    wait_for(lambda: server.tls()["sha256"] == leaf_b.sha256, "pair B taken")
    wait_for(
        lambda: f"TLS certificate updated: {described(leaf_b)}" in server.output,
        "the update logged",
    )
    secret.write(mismatched(leaf_a))
    error = wait_for(lambda: server.tls()["last_error"], "the mismatch refused")
    wait_for(
        lambda: (
            f"TLS certificate refused: {error}; still serving sha256 {leaf_b.sha256}"
            in server.output
        ),
        "the refusal logged",
    )
    secret.write(leaf_b.files())
    wait_for(lambda: server.tls()["last_error"] is None, "the error cleared")
    wait_for(
        lambda: (
            "TLS certificate files are back to the pair being served "
            f"(sha256 {leaf_b.sha256}); last error cleared" in server.output
        ),
        "the recovery logged",
    )
    # Grepping for the fingerprint /config shows finds the events.
    lines = [line for line in server.output.splitlines() if leaf_b.sha256 in line]
    assert len(lines) == 3, lines
    # The pair's reloads are never logged as a config file's.
    directory = str(secret.target_dir)
    assert not [
        line
        for line in server.output.splitlines()
        if directory in line and ("Config file" in line or "Config reload" in line)
    ]


def test_forced_reload_answers_with_the_refused_pair_s_outcome(
    server: HTTPSServer, secret: AtomicWriter, leaf_a: Leaf
) -> None:
    secret.write(mismatched(leaf_a))
    error = wait_for(lambda: server.tls()["last_error"], "the mismatch refused")
    with server.connection() as connection:
        connection.request("POST", "/-/reload")
        response = connection.getresponse()
        answer = json.loads(response.read())
    # The config is unchanged, the pair refused: 422, saying which.
    assert response.status == 422
    assert answer["outcome"] == "unchanged"
    assert answer["tls"] == {
        "outcome": "failed",
        "error": error,
        "sha256": leaf_a.sha256,
    }
    wait_for(
        lambda: "Forced reload (POST /-/reload): config unchanged" in server.output,
        "the forced reload logged",
    )
    [line] = [line for line in server.output.splitlines() if "Forced reload" in line]
    assert line.endswith(
        f", TLS certificate refused, still serving sha256 {leaf_a.sha256}: {error}"
    )


def test_certificate_events_carry_their_fields_in_json(
    config: Path, secret: AtomicWriter, ca: CA, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    server = HTTPSServer(config, secret, ca, extra=["--log-format", "json"])
    try:
        server.wait_ready()
        secret.write(leaf_b.files())
        wait_for(lambda: server.tls()["sha256"] == leaf_b.sha256, "pair B taken")
        tls = server.tls()

        def updated() -> dict[str, Any] | None:
            for line in server.output.splitlines():
                event = json.loads(line)
                if event["message"].startswith("TLS certificate updated"):
                    return dict(event)
            return None

        event = wait_for(updated, "the update logged")
        assert event["message"] == (
            f"TLS certificate updated: {described(leaf_b)} "
            f"({secret.target_dir}, generation {event['generation']})"
        )
        assert (event["sha256"], event["subject"], event["not_after"]) == (
            tls["sha256"],
            tls["subject"],
            tls["not_after"],
        )
        assert event["level"] == "info"
    finally:
        server.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_pair_just_within_the_handshake_limit_is_served_whole(
    server: HTTPSServer, secret: AtomicWriter, ca: CA, version: ssl.TLSVersion
) -> None:
    large = leaf_with_flight(ca, FLIGHT_LIMIT)
    secret.write(large.files())
    wait_for(lambda: server.tls()["sha256"] == large.sha256, "the large pair taken")
    # A handshake that stalled would time out and fail the test.
    with server.connection(version=version) as connection:
        response = request(connection)
        assert peer_sha256(connection) == large.sha256
    assert (response.status, response.body) == (200, b"Hello HTTPS")


class Handshakes:
    """
    New connection after new connection, in a thread, each verified by the
    client, until stopped: which certificate each got, in order, and any
    that failed.
    """

    def __init__(self, server: HTTPSServer) -> None:
        self._server = server
        self._stop = threading.Event()
        self.seen: list[str] = []
        self.errors: list[Exception] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append(self._server.fingerprint())
            except (OSError, ssl.SSLError) as e:
                self.errors.append(e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)


def test_key_written_before_its_certificate_never_mismatches_a_handshake(
    server: HTTPSServer, secret: AtomicWriter, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    handshakes = Handshakes(server)
    try:
        wait_for(lambda: len(handshakes.seen) >= 3, "handshakes on pair A")
        # One update with B's key beside A's certificate, the next with
        # both of B: each generation is read whole, so the first is
        # refused and A is served until B arrives complete.
        secret.write({CERT_FILE: leaf_a.cert_pem, KEY_FILE: leaf_b.key_pem})
        wait_for(lambda: server.tls()["last_error"], "the half-written pair refused")
        during = len(handshakes.seen)
        wait_for(lambda: len(handshakes.seen) >= during + 3, "handshakes meanwhile")
        secret.write(leaf_b.files())
        wait_for(lambda: handshakes.seen[-1] == leaf_b.sha256, "handshakes on pair B")
        after = len(handshakes.seen)
        wait_for(lambda: len(handshakes.seen) >= after + 3, "more on pair B")
    finally:
        handshakes.stop()

    assert handshakes.errors == []
    switch = handshakes.seen.index(leaf_b.sha256)
    assert set(handshakes.seen[:switch]) == {leaf_a.sha256}
    assert set(handshakes.seen[switch:]) == {leaf_b.sha256}
    assert server.tls()["last_error"] is None


def test_pair_under_other_file_names_is_served_and_rotated(
    tmp_path: Path, config: Path, ca: CA, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    # Names other than a Secret's tls.crt and tls.key reach the parser
    # process too.
    secret = AtomicWriter(tmp_path / "pem")
    secret.write({"server.pem": leaf_a.cert_pem, "server-key.pem": leaf_a.key_pem})
    server = HTTPSServer(config, secret, ca, cert="server.pem", key="server-key.pem")
    try:
        server.wait_ready()
        assert server.fingerprint() == leaf_a.sha256
        secret.write(
            {"server.pem": leaf_b.cert_pem, "server-key.pem": key_pem(new_key())}
        )
        wait_for(
            lambda: server.tls()["last_error"],
            "the mismatched pair to be refused",
        )
        assert server.tls()["last_error"].endswith(
            "server-key.pem: the private key does not match the certificate "
            "in server.pem"
        )
        secret.write({"server.pem": leaf_b.cert_pem, "server-key.pem": leaf_b.key_pem})
        wait_for(lambda: server.fingerprint() == leaf_b.sha256, "pair B to be served")
        assert "Config parser process" not in server.output
    finally:
        server.close()


@pytest.mark.parametrize(("name", "bad", "reason"), REFUSED)
def test_bad_pair_at_startup_exits_with_one_clear_line(
    tmp_path: Path,
    config: Path,
    ca: CA,
    leaf_a: Leaf,
    name: str,
    bad: Callable[[Leaf], dict[str, bytes]],
    reason: str,
) -> None:
    secret = AtomicWriter(tmp_path / "tls")
    secret.write(bad(leaf_a))
    server = HTTPSServer(config, secret, ca)
    try:
        assert server.process.wait(DEADLINE) == 1
        [line] = server.output.strip().splitlines()
        assert line.startswith(f"configmapdemo: error: {secret.target_dir}: {reason}")
    finally:
        server.close()


def test_missing_key_file_at_startup_exits_with_one_clear_line(
    tmp_path: Path, config: Path, ca: CA, leaf_a: Leaf
) -> None:
    secret = AtomicWriter(tmp_path / "tls")
    secret.write({CERT_FILE: leaf_a.cert_pem})
    server = HTTPSServer(config, secret, ca)
    try:
        assert server.process.wait(DEADLINE) == 1
        assert server.output.strip().splitlines() == [
            f"configmapdemo: error: {secret.target_dir / KEY_FILE}: cannot read: "
            "No such file or directory"
        ]
    finally:
        server.close()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--tls-cert", "/etc/tls/tls.crt"], "--tls-cert needs --tls-key too"),
        (["--tls-key", "/etc/tls/tls.key"], "--tls-key needs --tls-cert too"),
        (
            ["--tls-cert", "/etc/a/tls.crt", "--tls-key", "/etc/b/tls.key"],
            "--tls-cert and --tls-key must be in one directory",
        ),
    ],
)
def test_tls_options_that_are_not_one_pair_exit_naming_the_problem(
    args: list[str], error: str
) -> None:
    result = subprocess.run(
        [
            twistd_executable(),
            "-n",
            "--pidfile=",
            "configmapdemo",
            "-c",
            "c.yaml",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert error in result.stdout + result.stderr


# -- the options and the wiring, in-process -------------------------------------


def options(*args: str) -> Options:
    parsed = Options()
    parsed.parseOptions(list(args))
    return parsed


def test_help_documents_the_tls_options() -> None:
    text = str(Options())
    assert "--tls-cert" in text and "--tls-key" in text


def test_tls_is_off_without_its_options() -> None:
    assert options("--config", "c.yaml")["tls"] is None


def test_tls_options_name_the_pair_s_directory_and_files() -> None:
    parsed = options(
        "--config", "c.yaml", "--tls-cert", "/etc/tls/tls.crt",
        "--tls-key", "/etc/tls/tls.key",
    )  # fmt: skip
    assert parsed["tls"] == TLSFiles("/etc/tls", CERT_FILE, KEY_FILE)


def test_https_service_follows_the_pair_too(tmp_path: Path, leaf_a: Leaf) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    AtomicWriter(tmp_path / "tls").write(leaf_a.files())
    tls = tmp_path / "tls"
    parsed = options(
        "--config", str(config), "--listen", "tcp:0",
        "--tls-cert", str(tls / CERT_FILE), "--tls-key", str(tls / KEY_FILE),
    )  # fmt: skip
    service = makeService(parsed)
    # The config and the pair stop together: one parent holds both.
    [configs] = [child for child in service if isinstance(child, MultiService)]
    lives = [child for child in configs if isinstance(child, LiveConfigService)]
    assert len(lives) == 2
    pair = lives[1].current
    assert pair is not None and pair.value.sha256 == leaf_a.sha256


def test_config_has_no_tls_object_over_plain_http(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    service = InProcessService(config)
    service.live.load_blocking()
    assert "tls" not in service.config()
