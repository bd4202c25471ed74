"""
HTTPS with a certificate pair that can be replaced while serving: parsing
and refusing pairs, and real TLS over loopback on the real reactor, read by
Python's own C{ssl} client.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import pickle
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IOpenSSLServerConnectionCreator
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel
from twisted.python.usage import UsageError
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface.verify import verifyObject

from tests.certs import CA, Leaf, flight_of, leaf_with_flight, mismatched
from tests.support import captured_log
from twisted_demo.live import Failed, Loaded, Unchanged, Updated
from twisted_demo.live._errors import ConfigError
from twisted_demo.tls import (
    CERT_FILE,
    KEY_FILE,
    NOT_BEFORE_LEEWAY,
    RotatingServerTLS,
    TLSFiles,
    TLSLog,
    TLSMetrics,
    TLSPair,
    TLSServerEndpoint,
    parse_tls_files,
    parse_tls_pair,
    tls_files,
    tls_server_factory,
    tls_status,
)
from twisted_demo.tls_pair import FLIGHT_LIMIT

reactor: Any = _reactor


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.make()


@pytest.fixture(scope="module")
def leaf_a(ca: CA) -> Leaf:
    return ca.issue("pair A")


@pytest.fixture(scope="module")
def leaf_b(ca: CA) -> Leaf:
    return ca.issue("pair B")


def refusal(files: dict[str, bytes], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_tls_pair(files, **kwargs)
    reason = str(caught.value)
    assert "\n" not in reason
    return reason


# -- parsing a pair ----------------------------------------------------------


def test_pair_describes_its_certificate(leaf_a: Leaf) -> None:
    pair = parse_tls_pair(leaf_a.files())
    assert pair.sha256 == leaf_a.sha256
    assert pair.subject == "CN=pair A"
    assert pair.serial == leaf_a.certificate.serial_number
    assert pair.not_before == leaf_a.certificate.not_valid_before_utc
    assert pair.not_after == leaf_a.certificate.not_valid_after_utc
    assert (pair.certificate_pem, pair.key_pem) == (leaf_a.cert_pem, leaf_a.key_pem)


def test_parsing_a_pair_imports_neither_twisted_nor_prometheus(
    leaf_a: Leaf, tmp_path: Path
) -> None:
    # What the parser process holds in memory to parse a pair.
    for name, data in leaf_a.files().items():
        (tmp_path / name).write_bytes(data)
    code = (
        "import pathlib, sys\n"
        "from twisted_demo.tls_pair import parse_tls_pair\n"
        "here = pathlib.Path(sys.argv[1])\n"
        "files = {p.name: p.read_bytes() for p in here.iterdir()}\n"
        "print(parse_tls_pair(files).sha256)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}\n"
        "    & {'twisted', 'prometheus_client', 'zope', 'klein'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [leaf_a.sha256, "[]"]


def test_pair_comes_back_whole_from_another_process(leaf_a: Leaf) -> None:
    pair = parse_tls_pair(leaf_a.files())
    assert pickle.loads(pickle.dumps(pair)) == pair


def test_chain_after_the_certificate_describes_the_first(ca: CA) -> None:
    leaf = ca.issue("chained", with_chain=True)
    pair = parse_tls_pair(leaf.files())
    assert pair.sha256 == leaf.sha256
    assert pair.certificate_pem == leaf.cert_pem


def test_key_of_another_certificate_is_refused(leaf_a: Leaf) -> None:
    reason = refusal(mismatched(leaf_a))
    assert reason.startswith(f"{KEY_FILE}: ")
    assert "does not match" in reason and CERT_FILE in reason


def test_key_matching_only_the_chain_is_refused(ca: CA) -> None:
    leaf = ca.issue("chained", with_chain=True)
    files = {CERT_FILE: leaf.cert_pem, KEY_FILE: ca.key_pem}
    assert "does not match" in refusal(files)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a key\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_garbage_key_is_refused(leaf_a: Leaf, garbage: bytes) -> None:
    reason = refusal({CERT_FILE: leaf_a.cert_pem, KEY_FILE: garbage})
    assert reason == f"{KEY_FILE}: no PEM private key could be read"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_certificate_is_refused(leaf_a: Leaf, garbage: bytes) -> None:
    reason = refusal({CERT_FILE: garbage, KEY_FILE: leaf_a.key_pem})
    assert reason == f"{CERT_FILE}: no PEM certificate could be read"


def test_certificate_given_as_the_key_is_refused(leaf_a: Leaf) -> None:
    reason = refusal({CERT_FILE: leaf_a.cert_pem, KEY_FILE: leaf_a.cert_pem})
    assert reason.startswith(f"{KEY_FILE}: ")


def test_password_protected_key_is_refused(leaf_a: Leaf) -> None:
    encrypted = leaf_a.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    reason = refusal({CERT_FILE: leaf_a.cert_pem, KEY_FILE: encrypted})
    assert reason.startswith(f"{KEY_FILE}: ") and "encrypted" in reason


def test_missing_file_is_refused(leaf_a: Leaf) -> None:
    assert refusal({CERT_FILE: leaf_a.cert_pem}) == f"{KEY_FILE}: missing"


def test_expired_certificate_is_refused(ca: CA) -> None:
    expired = ca.expired()
    reason = refusal(expired.files())
    assert reason.startswith(f"{CERT_FILE}: ") and "expired" in reason
    assert expired.certificate.not_valid_after_utc.isoformat() in reason


def test_expiry_is_judged_at_the_time_given(leaf_a: Leaf) -> None:
    end = leaf_a.certificate.not_valid_after_utc
    parse_tls_pair(leaf_a.files(), now=end - timedelta(seconds=1))
    assert "expired" in refusal(leaf_a.files(), now=end)


def test_certificate_valid_only_later_is_refused(ca: CA) -> None:
    start = datetime.now(timezone.utc) + timedelta(days=1)
    later = ca.issue(not_before=start, not_after=start + timedelta(days=7))
    reason = refusal(later.files())
    assert reason.startswith(f"{CERT_FILE}: ") and "not valid until" in reason


def test_certificate_issued_by_a_clock_slightly_ahead_is_taken(ca: CA) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now + timedelta(minutes=1)
    fresh = ca.issue(not_before=start, not_after=start + timedelta(days=7))
    assert NOT_BEFORE_LEEWAY > start - now
    # README: refused when it becomes valid more than five minutes from now.
    assert NOT_BEFORE_LEEWAY == timedelta(minutes=5)
    assert parse_tls_pair(fresh.files(), now=now).sha256 == fresh.sha256
    beyond = start - NOT_BEFORE_LEEWAY - timedelta(seconds=1)
    assert "not valid until" in refusal(fresh.files(), now=beyond)


def test_certificate_too_large_for_one_handshake_is_refused(ca: CA) -> None:
    # About 2,500 host names: a first flight past what Twisted sends at once.
    large = ca.issue(names=2500)
    assert flight_of(large) > 2**15
    size = len(large.certificate.public_bytes(serialization.Encoding.DER))
    assert refusal(large.files()) == (
        f"{CERT_FILE}: the certificate chain is too large to serve ({size} bytes): "
        f"a handshake with it takes more than the {FLIGHT_LIMIT} bytes the server "
        "can send at once (twisted/twisted#5095); use fewer names or a shorter chain"
    )


def test_long_chain_too_large_for_one_handshake_is_refused(ca: CA) -> None:
    leaf = ca.issue()
    # The leaf again and again after itself: a chain OpenSSL sends as given.
    chained = Leaf(leaf.certificate, leaf.key, (leaf.certificate,) * 150)
    assert flight_of(chained) > 2**15
    reason = refusal(chained.files())
    assert reason.startswith(f"{CERT_FILE}: the certificate chain is too large")


def test_certificate_just_within_one_handshake_is_taken(ca: CA) -> None:
    leaf = leaf_with_flight(ca, FLIGHT_LIMIT)
    assert parse_tls_pair(leaf.files()).sha256 == leaf.sha256


def test_served_context_releases_the_buffers_of_idle_connections(
    leaf_a: Leaf,
) -> None:
    pair = parse_tls_pair(leaf_a.files())
    context = RotatingServerTLS(lambda: pair).context()
    assert context is not None
    # set_mode adds nothing here and answers with the mode set.
    assert context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS


def test_a_pair_the_service_failed_to_read_is_logged_with_its_retry(
    leaf_a: Leaf,
) -> None:
    # The parser process died: not the pair's fault, tried again.
    with captured_log() as log:
        TLSLog()(Failed("/etc/tls: cannot parse: killed", None, retry_in=0.5))
    assert log.messages() == [
        "TLS certificate reload failed (trying again in 0.5s): "
        "/etc/tls: cannot parse: killed; none loaded yet"
    ]


# -- the options ---------------------------------------------------------------


def test_no_tls_options_mean_plain_http() -> None:
    assert tls_files(None, None) is None


def test_secret_volume_files_are_parsed_by_parse_tls_pair(leaf_a: Leaf) -> None:
    files = tls_files("/etc/tls/tls.crt", "/etc/tls/tls.key")
    assert files == TLSFiles("/etc/tls", CERT_FILE, KEY_FILE)
    assert files.names == [CERT_FILE, KEY_FILE]
    assert files.parse is parse_tls_pair


def test_other_file_names_are_parsed_under_those_names(leaf_a: Leaf) -> None:
    files = tls_files("/srv/certs/server.pem", "/srv/certs/server-key.pem")
    assert files is not None
    assert (files.directory, files.names) == (
        "/srv/certs",
        ["server.pem", "server-key.pem"],
    )
    # Found by its import path (module and name), as the parser process
    # finds a parse function.
    parse = files.parse
    module = importlib.import_module(parse.__module__)
    assert getattr(module, parse.__qualname__) is parse
    contents = {"server.pem": leaf_a.cert_pem, "server-key.pem": leaf_a.key_pem}
    assert parse(contents).sha256 == leaf_a.sha256
    with pytest.raises(ConfigError, match=r"^server-key\.pem: "):
        parse({"server.pem": leaf_a.cert_pem, "server-key.pem": b""})


def test_files_under_other_names_are_taken_certificate_first(leaf_a: Leaf) -> None:
    assert (
        parse_tls_files({"a.pem": leaf_a.cert_pem, "b.pem": leaf_a.key_pem}).sha256
        == leaf_a.sha256
    )
    # The other way round, the key file is read as the certificate.
    with pytest.raises(ConfigError, match=r"^a\.pem: no PEM certificate"):
        parse_tls_files({"a.pem": leaf_a.key_pem, "b.pem": leaf_a.cert_pem})
    with pytest.raises(ConfigError, match="expected a certificate file and a key"):
        parse_tls_files({"a.pem": leaf_a.cert_pem})


def test_relative_paths_are_taken_from_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    files = tls_files("tls.crt", "./tls.key")
    assert files is not None and files.directory == str(tmp_path)


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("/etc/tls/tls.crt", None, "--tls-cert needs --tls-key too"),
        (None, "/etc/tls/tls.key", "--tls-key needs --tls-cert too"),
        (
            "/etc/tls/tls.crt",
            "/etc/keys/tls.key",
            "--tls-cert and --tls-key must be in one directory",
        ),
        ("/etc/tls/both.pem", "/etc/tls/both.pem", "are the same file"),
    ],
)
def test_tls_options_that_cannot_be_one_pair_are_a_usage_error(
    cert: str | None, key: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        tls_files(cert, key)


# -- what /config and /metrics show -------------------------------------------


def serial_hex(serial: int) -> str:
    """
    The serial number as OpenSSL prints it: the big-endian bytes, in
    upper-case hex.
    """
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex().upper()


@pytest.mark.parametrize(
    "serial", [0, 0x0A, 0xFF, 0x100, 0x0123456789ABCDEF, 2**159 - 1]
)
def test_serial_is_shown_in_whole_bytes_of_upper_case_hex(
    leaf_a: Leaf, serial: int
) -> None:
    pair = attrs.evolve(parse_tls_pair(leaf_a.files()), serial=serial)
    assert tls_status(pair, None)["serial"] == serial_hex(serial)


def test_config_object_describes_the_pair_served(leaf_a: Leaf) -> None:
    pair = parse_tls_pair(leaf_a.files())
    status = tls_status(pair, "tls.key: no PEM private key could be read")
    certificate = leaf_a.certificate
    assert status == {
        "sha256": leaf_a.sha256,
        "subject": "CN=pair A",
        "serial": serial_hex(certificate.serial_number),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "last_error": "tls.key: no PEM private key could be read",
    }


def test_config_object_before_any_pair_is_all_null() -> None:
    assert set(tls_status(None, None).values()) == {None}


def test_metrics_show_expiry_and_count_reloads_and_refusals(
    leaf_a: Leaf, leaf_b: Leaf
) -> None:
    registry = CollectorRegistry()
    metrics = TLSMetrics(registry)
    a, b = parse_tls_pair(leaf_a.files()), parse_tls_pair(leaf_b.files())

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = registry.get_sample_value(
            f"configmapdemo_tls_{name}", labels
        )
        return value

    first = Loaded(a, "sha-a", None, 0.0, "/etc/tls")
    metrics(Updated(None, first))
    assert sample("certificate_expiry_timestamp_seconds") == a.not_after.timestamp()
    assert sample("reloads_total") == 0
    assert (
        sample(
            "certificate_info",
            sha256=a.sha256,
            subject=a.subject,
            serial=serial_hex(a.serial),
        )
        == 1
    )
    metrics(Failed("/etc/tls: tls.key: no PEM private key could be read", first))
    assert sample("reload_failures_total") == 1
    assert sample("last_reload_successful") == 0
    assert sample("certificate_expiry_timestamp_seconds") == a.not_after.timestamp()
    metrics(Updated(first, Loaded(b, "sha-b", None, 1.0, "/etc/tls")))
    assert sample("certificate_expiry_timestamp_seconds") == b.not_after.timestamp()
    assert sample("reloads_total") == 1
    assert sample("last_reload_successful") == 1


def test_metrics_follow_the_outcomes_of_the_pair_s_reloads(
    leaf_a: Leaf, leaf_b: Leaf
) -> None:
    registry = CollectorRegistry()
    metrics = TLSMetrics(registry)
    a = Loaded(parse_tls_pair(leaf_a.files()), "sha-a", None, 0.0, "/etc/tls")
    b = Loaded(parse_tls_pair(leaf_b.files()), "sha-b", None, 1.0, "/etc/tls")

    def sample(name: str) -> float | None:
        value: float | None = registry.get_sample_value(f"configmapdemo_tls_{name}")
        return value

    metrics(Updated(None, a))
    metrics(Failed("/etc/tls: tls.key: no PEM private key could be read", a))
    # The same files read again: not a second refusal.
    metrics(Failed("/etc/tls: tls.key: no PEM private key could be read", a, True))
    assert (sample("reload_failures_total"), sample("last_reload_successful")) == (
        1,
        0,
    )
    # The files went back to pair A.
    metrics(Unchanged(a, recovered=True))
    assert sample("last_reload_successful") == 1
    metrics(Updated(a, b))
    assert sample("reloads_total") == 1
    assert sample("certificate_expiry_timestamp_seconds") == (
        leaf_b.certificate.not_valid_after_utc.timestamp()
    )
    # As the config's metrics, the counters have no _created series.
    assert "_created" not in generate_latest(registry).decode()


# -- HTTPS over loopback ------------------------------------------------------


class LivePair:
    """
    The state a live config of the pair holds (C{current}, C{last_error})
    and the subscriber calls it makes, driven by offering it files as a
    new generation of the Secret volume would.
    """

    def __init__(self, files: dict[str, bytes], metrics: TLSMetrics) -> None:
        self.metrics = metrics
        self.loaded: Loaded[TLSPair] | None = None
        self.current: TLSPair | None = None
        self.last_error: str | None = None
        self.offer(files)

    def offer(self, files: dict[str, bytes]) -> None:
        try:
            pair = parse_tls_pair(files)
        except ConfigError as e:
            self.last_error = str(e)
            self.metrics(Failed(self.last_error, self.loaded))
            return
        old = self.loaded
        self.loaded = Loaded(pair, pair.sha256, None, 0.0, "/etc/tls")
        self.current, self.last_error = pair, None
        self.metrics(Updated(old, self.loaded))


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello over " + (b"https" if request.isSecure() else b"http")


class HTTPS:
    """
    A web site served over TLS on a loopback port, with the pair that
    C{live} holds when each connection is accepted.
    """

    def __init__(self, live: LivePair, ca: CA, port: IListeningPort) -> None:
        self.live = live
        self.ca = ca
        self.port = port
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        self.address = address

    def connection(self) -> ContextManager[http.client.HTTPSConnection]:
        return client(self.address.port, self.ca)


@contextmanager
def client(port: int, ca: CA) -> Iterator[http.client.HTTPSConnection]:
    """
    A client connection to localhost that trusts only C{ca} and checks the
    server's name, as a browser would.
    """
    context = ssl.create_default_context(cadata=ca.cert_pem.decode("ascii"))
    connection = http.client.HTTPSConnection(
        "localhost", port, context=context, timeout=30
    )
    try:
        yield connection
    finally:
        connection.close()


def get(connection: http.client.HTTPSConnection) -> tuple[int, bytes, str, int]:
    """
    GET / on C{connection}: the status, the body, the SHA-256 fingerprint of
    the certificate the server presented, and the client's local port (the
    same port means the same connection).  Blocking: run it in a thread.
    """
    connection.request("GET", "/")
    response = connection.getresponse()
    body = response.read()
    assert connection.sock is not None
    der = connection.sock.getpeercert(binary_form=True)
    assert der is not None
    port: int = connection.sock.getsockname()[1]
    return response.status, body, hashlib.sha256(der).hexdigest(), port


@pytest_twisted.async_yield_fixture
async def https(ca: CA, leaf_a: Leaf) -> AsyncIterator[HTTPS]:
    live = LivePair(leaf_a.files(), TLSMetrics(CollectorRegistry()))
    # As --listen with --tls-cert and --tls-key: the endpoint from its
    # description, the site wrapped in TLS.
    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    creator = RotatingServerTLS(lambda: live.current)
    port = await endpoint.listen(tls_server_factory(creator, Site(Hello())))
    try:
        yield HTTPS(live, ca, port)
    finally:
        await maybeDeferred(port.stopListening)


def test_rotating_tls_is_a_server_connection_creator() -> None:
    assert verifyObject(
        IOpenSSLServerConnectionCreator, RotatingServerTLS(lambda: None)
    )


@pytest_twisted.ensureDeferred
async def test_https_is_served_with_the_current_pair(
    https: HTTPS, leaf_a: Leaf
) -> None:
    with https.connection() as connection:
        status, body, sha256, _ = await deferToThread(get, connection)
    assert (status, body, sha256) == (200, b"hello over https", leaf_a.sha256)


@pytest_twisted.ensureDeferred
async def test_new_connections_get_the_new_pair_and_open_ones_keep_theirs(
    https: HTTPS, leaf_a: Leaf, leaf_b: Leaf
) -> None:
    with https.connection() as before:
        first = await deferToThread(get, before)
        https.live.offer(leaf_b.files())
        with https.connection() as after:
            rotated = await deferToThread(get, after)
        again = await deferToThread(get, before)

    assert first[:3] == (200, b"hello over https", leaf_a.sha256)
    assert rotated[:3] == (200, b"hello over https", leaf_b.sha256)
    # The same connection, still on pair A, answers after the rotation.
    assert again[:3] == (200, b"hello over https", leaf_a.sha256)
    assert again[3] == first[3]


@pytest.mark.parametrize("with_chain", [True, False])
@pytest_twisted.ensureDeferred
async def test_chain_in_the_certificate_file_is_sent_to_clients(
    https: HTTPS, ca: CA, with_chain: bool
) -> None:
    # The client trusts only the root, so it needs the intermediate from
    # the server to verify the leaf.
    leaf = ca.intermediate().issue("chained", with_chain=with_chain)
    https.live.offer(leaf.files())
    assert https.live.last_error is None
    with https.connection() as connection:
        if with_chain:
            status, _, sha256, _ = await deferToThread(get, connection)
            assert (status, sha256) == (200, leaf.sha256)
        else:
            with pytest.raises(ssl.SSLCertVerificationError):
                await deferToThread(get, connection)


def refused(connection: http.client.HTTPSConnection) -> Exception:
    """
    Send a request, expecting the server to close the connection instead;
    the error the client saw.  Blocking: run it in a thread.
    """
    try:
        connection.request("GET", "/")
    except (ssl.SSLError, ConnectionError) as e:
        return e
    raise AssertionError("the connection was not closed")


@pytest_twisted.ensureDeferred
async def test_connections_before_the_first_pair_are_closed_then_served(
    ca: CA, leaf_a: Leaf
) -> None:
    pairs: list[TLSPair] = []
    endpoint = TLSServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
        RotatingServerTLS(lambda: pairs[-1] if pairs else None),
    )
    with captured_log() as log:
        port = await endpoint.listen(Site(Hello()))
        try:
            address = port.getHost()
            assert isinstance(address, IPv4Address)
            for _ in range(2):
                with client(address.port, ca) as connection:
                    await deferToThread(refused, connection)
            pairs.append(parse_tls_pair(leaf_a.files()))
            with client(address.port, ca) as connection:
                status, _, sha256, _ = await deferToThread(get, connection)
        finally:
            await maybeDeferred(port.stopListening)
    assert (status, sha256) == (200, leaf_a.sha256)
    assert log.messages(LogLevel.warn) == [
        "Closing connections until a TLS certificate pair is loaded"
    ]
    assert log.messages(at_least=LogLevel.error) == []


def _garbage_key(leaf: Leaf) -> dict[str, bytes]:
    return {CERT_FILE: leaf.cert_pem, KEY_FILE: b"not a key\n"}


def _garbage_certificate(leaf: Leaf) -> dict[str, bytes]:
    return {CERT_FILE: b"not a certificate\n", KEY_FILE: leaf.key_pem}


@pytest.mark.parametrize(
    ("bad", "reason_starts"),
    [
        (mismatched, f"{KEY_FILE}: the private key does not match"),
        (_garbage_key, f"{KEY_FILE}: no PEM private key"),
        (_garbage_certificate, f"{CERT_FILE}: no PEM certificate"),
        (
            lambda leaf: CA.make().expired().files(),
            f"{CERT_FILE}: the certificate expired",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refused_pair_leaves_the_old_one_served_and_says_why(
    https: HTTPS, leaf_a: Leaf, leaf_b: Leaf, bad: Any, reason_starts: str
) -> None:
    https.live.offer(bad(leaf_b))
    with https.connection() as connection:
        status, _, sha256, _ = await deferToThread(get, connection)
    assert (status, sha256) == (200, leaf_a.sha256)

    status_object = tls_status(https.live.current, https.live.last_error)
    assert status_object["sha256"] == leaf_a.sha256
    assert status_object["last_error"].startswith(reason_starts)
    registry = https.live.metrics.registry
    assert registry.get_sample_value("configmapdemo_tls_reload_failures_total") == 1
    assert (
        registry.get_sample_value(
            "configmapdemo_tls_certificate_expiry_timestamp_seconds"
        )
        == leaf_a.certificate.not_valid_after_utc.timestamp()
    )

    # The next good pair is taken as usual.
    https.live.offer(leaf_b.files())
    with https.connection() as connection:
        _, _, sha256, _ = await deferToThread(get, connection)
    assert sha256 == leaf_b.sha256
    assert https.live.last_error is None


def test_pair_in_a_plain_directory_is_logged_without_a_generation(
    leaf_a: Leaf,
) -> None:
    pair = parse_tls_pair(leaf_a.files())
    plain = Loaded(pair, "sha-a", None, 0.0, "/etc/tls")
    secret = Loaded(pair, "sha-a", "..2026_12_07_00_00_00.1", 0.0, "/etc/tls")
    with captured_log() as log:
        TLSLog()(Updated(None, plain))
        TLSLog()(Updated(None, secret))
    [in_plain, in_secret] = log.messages()
    assert in_plain.endswith("(/etc/tls)")
    assert in_secret.endswith("(/etc/tls, generation ..2026_12_07_00_00_00.1)")
