"""
The admission webhook as the API server meets it: C{twistd -n
configmapdemo-webhook} in a subprocess, sent real C{AdmissionReview} JSON
over HTTPS by a client that trusts only the test CA; then the library's
webhook, in-process, for what a process cannot show on time (the deadline)
and for another app's parse function.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from bench.proc import process_tree
from tests.certs import CA, Leaf
from tests.support import (
    DEADLINE,
    Response,
    ServerProcess,
    metric_value,
    result_of,
    wait_for,
)
from twisted_demo.config import parse_message
from twisted_demo.live import (
    AdmissionWebhook,
    ConfigError,
    WebhookMetrics,
    check_configmap,
    inline,
)
from twisted_demo.live._webhook import Answer, review_limit
from twisted_demo.testing import (
    AtomicWriter,
    admission_review,
    configmap_object,
    free_port,
    twistd_executable,
    webhook_argv,
)
from twisted_demo.tls import CERT_FILE, KEY_FILE

ROOT = Path(__file__).resolve().parent.parent

KEY = "configmap-microservice-demo.yaml"

#: Small, so that a value over it and a body over the limit are cheap.
MAX_BYTES = 4096

GOOD = "message: Hello World\n"
DUPLICATE = "message: Hello\nmessage: again\n"
SECRET = "s3cr3t-value"


class WebhookServer(ServerProcess):
    """
    A webhook process run with C{argv} (as L{ServerProcess} runs it),
    serving HTTPS on 127.0.0.1:C{port}, asked by a client that trusts only
    the CA C{ca_pem}.
    """

    def __init__(
        self,
        argv: list[str],
        port: int,
        ca_pem: bytes,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.ca_pem = ca_pem
        self.port = port
        super().__init__(argv, cwd=cwd, env=env)

    @classmethod
    def of_pair(
        cls, cert: Path, key: Path, ca_pem: bytes, *options: str
    ) -> WebhookServer:
        """
        C{twistd -n configmapdemo-webhook} serving the pair C{cert}, C{key}.
        """
        port = free_port()
        return cls(webhook_argv(port, cert, key, *options), port, ca_pem)

    @classmethod
    def of_secret(cls, secret: AtomicWriter, ca: CA, *options: str) -> WebhookServer:
        """
        C{twistd -n configmapdemo-webhook} serving the pair of the Secret
        volume C{secret}.
        """
        return cls.of_pair(
            secret.target_dir / CERT_FILE,
            secret.target_dir / KEY_FILE,
            ca.cert_pem,
            *options,
        )

    def connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        return http.client.HTTPSConnection(
            "localhost", self.port, context=context, timeout=DEADLINE
        )

    def post_as(self, hostname: str, body: bytes) -> Response:
        """
        C{POST /validate} to a server whose certificate must name
        C{hostname}, as the API server checks the Service's DNS name.
        """
        context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        head = (
            f"POST /validate HTTP/1.1\r\nHost: {hostname}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", self.port), DEADLINE) as raw:
            with context.wrap_socket(raw, server_hostname=hostname) as tls:
                tls.sendall(head.encode("ascii") + body)
                received = b""
                while chunk := tls.recv(65536):
                    received += chunk
        head_bytes, _, content = received.partition(b"\r\n\r\n")
        status = int(head_bytes.split(b" ", 2)[1])
        lines = head_bytes.decode("latin-1").split("\r\n")[1:]
        headers = dict(line.split(": ", 1) for line in lines)
        return Response(status, headers, content)

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[Response, str]:
        """
        The response, and the SHA-256 fingerprint of the certificate served.
        """
        connection = self.connection()
        try:
            connection.connect()
            assert connection.sock is not None
            der = connection.sock.getpeercert(binary_form=True)
            assert der is not None
            headers = {"Content-Type": "application/json"} if body else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return (
                Response(response.status, dict(response.getheaders()), response.read()),
                hashlib.sha256(der).hexdigest(),
            )
        finally:
            connection.close()

    def post(self, body: bytes) -> Response:
        return self.request("POST", "/validate", body)[0]

    def get(self, path: str = "/") -> Response:
        return self.request("GET", path)[0]


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.make()


@pytest.fixture(scope="module")
def leaf(ca: CA) -> Leaf:
    return ca.issue("localhost")


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory, leaf: Leaf) -> AtomicWriter:
    writer = AtomicWriter(tmp_path_factory.mktemp("webhook") / "tls")
    writer.write(leaf.files())
    return writer


@pytest.fixture(scope="module")
def webhook(secret: AtomicWriter, ca: CA) -> Iterator[WebhookServer]:
    """
    One webhook process for the reviews below, with a small --max-bytes.
    """
    server = WebhookServer.of_secret(secret, ca, "--max-bytes", str(MAX_BYTES))
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def response_of(answer: Response) -> dict[str, Any]:
    """
    The C{response} of the C{AdmissionReview} in an answer, checked to be
    one.
    """
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "application/json"
    review = json.loads(answer.body)
    assert (review["apiVersion"], review["kind"]) == (
        "admission.k8s.io/v1",
        "AdmissionReview",
    )
    response: dict[str, Any] = review["response"]
    return response


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


# -- over HTTPS, from a real process ------------------------------------------


def _maps_pyyaml(pid: int) -> bool:
    return "/yaml/_yaml." in Path(f"/proc/{pid}/maps").read_text()


def test_only_the_parser_process_loads_pyyaml_and_before_a_review(
    secret: AtomicWriter, ca: CA
) -> None:
    server = WebhookServer.of_secret(secret, ca)
    try:
        server.wait_ready()
        # The config's parser process (the pair's parses PEM) imports what
        # the parse function imports at its first call as it starts; the
        # server hands every review to it and loads no YAML parser itself.
        wait_for(
            lambda: any(map(_maps_pyyaml, process_tree(server.process.pid)[1:])),
            "a parser process with PyYAML",
        )
        assert not _maps_pyyaml(server.process.pid)
    finally:
        server.close()


@pytest.mark.parametrize(
    "review",
    [
        pytest.param(admission_review(configmap_object({KEY: GOOD})), id="good"),
        pytest.param(
            admission_review(configmap_object(binary={KEY: b64(GOOD)})),
            id="binaryData",
        ),
        pytest.param(
            admission_review(
                configmap_object({KEY: GOOD}),
                operation="UPDATE",
                old=configmap_object({KEY: DUPLICATE}),
            ),
            id="update-fixing-a-broken-one",
        ),
    ],
)
def test_a_good_configmap_is_allowed(webhook: WebhookServer, review: bytes) -> None:
    response = response_of(webhook.post(review))
    assert response == {
        "uid": json.loads(review)["request"]["uid"],
        "allowed": True,
    }


@pytest.mark.parametrize(
    ("configmap", "message"),
    [
        pytest.param(
            configmap_object({KEY: DUPLICATE}),
            f"{KEY}: line 2, column 1: duplicate key (first on line 1)",
            id="duplicate-key",
        ),
        pytest.param(
            configmap_object(binary={KEY: b64(DUPLICATE)}),
            f"{KEY}: line 2, column 1: duplicate key (first on line 1)",
            id="binaryData",
        ),
        pytest.param(
            configmap_object({KEY: "greeting: hi\n"}),
            f"{KEY}: 'message' is missing",
            id="schema",
        ),
        pytest.param(
            configmap_object({KEY: "message: " + "x" * MAX_BYTES}),
            f"{KEY}: file is over the limit of {MAX_BYTES} bytes",
            id="over-max-bytes",
        ),
    ],
)
def test_a_configmap_the_service_would_refuse_is_denied_with_its_place(
    webhook: WebhookServer, configmap: dict[str, Any], message: str
) -> None:
    review = admission_review(configmap, operation="UPDATE", old=configmap)
    response = response_of(webhook.post(review))
    assert response["allowed"] is False
    assert response["status"] == {"code": 422, "reason": "Invalid", "message": message}


def test_a_denial_names_the_place_and_never_the_configs_values(
    webhook: WebhookServer,
) -> None:
    config = f"message: hi\npassword: {SECRET}\ntoken: [{SECRET}\n"
    answer = webhook.post(admission_review(configmap_object({KEY: config})))
    response = response_of(answer)
    assert response["allowed"] is False
    assert response["status"]["message"].startswith(f"{KEY}: line 4, column 1: ")
    assert SECRET.encode() not in answer.body
    assert SECRET not in webhook.output


@pytest.mark.parametrize(
    "review",
    [
        pytest.param(
            admission_review(configmap_object({"other-app.yaml": "{{ not yaml"})),
            id="no-such-key",
        ),
        pytest.param(
            admission_review(
                {"metadata": {"name": "x"}, "data": {KEY: DUPLICATE}},
                kind={"group": "", "version": "v1", "kind": "Secret"},
            ),
            id="wrong-kind",
        ),
        pytest.param(
            admission_review(
                None, operation="DELETE", old=configmap_object({KEY: DUPLICATE})
            ),
            id="DELETE",
        ),
    ],
)
def test_what_is_not_the_services_config_is_allowed_unchecked(
    webhook: WebhookServer, review: bytes
) -> None:
    assert response_of(webhook.post(review))["allowed"] is True


def broken_review(**fields: object) -> bytes:
    """
    The C{CREATE} review of a ConfigMap the webhook would deny, with
    C{fields} of its request replaced (L{None}: taken out).
    """
    review = json.loads(admission_review(configmap_object({KEY: DUPLICATE})))
    for name, value in fields.items():
        if value is None:
            del review["request"][name]
        else:
            review["request"][name] = value
    return json.dumps(review).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b'{"apiVersion": ', "the body is not JSON (line 1", id="json"),
        pytest.param(b"\xff\xfe{}", "the body is not", id="not-utf-8"),
        pytest.param(b"[" * 100_000, "the body is JSON nested too deeply", id="deep"),
        pytest.param(
            json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(),
            "the body is not an admission.k8s.io/v1 AdmissionReview",
            id="not-a-review",
        ),
        pytest.param(
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
            ).encode(),
            "the review has no request object",
            id="no-request",
        ),
        pytest.param(
            admission_review(configmap_object({KEY: GOOD}), uid=""),
            "the review's request has no uid",
            id="no-uid",
        ),
        pytest.param(
            admission_review(None, operation="CREATE"),
            "the CREATE review has no object",
            id="no-object",
        ),
        pytest.param(
            broken_review(kind=None),
            "the CREATE review names no kind",
            id="no-kind",
        ),
        pytest.param(
            broken_review(kind={}),
            "the CREATE review names no kind",
            id="empty-kind",
        ),
        pytest.param(
            broken_review(operation=None),
            "the review's request has no operation",
            id="no-operation",
        ),
        pytest.param(
            broken_review(operation="create"),
            "the review's request has no operation",
            id="lower-case-operation",
        ),
    ],
)
def test_a_malformed_review_is_a_clear_400_without_a_traceback(
    webhook: WebhookServer, body: bytes, reason: str
) -> None:
    answer = webhook.post(body)
    assert answer.status == 400
    assert answer.text.startswith(reason)
    assert answer.text.count("\n") == 1
    assert "Traceback" not in webhook.output


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    webhook: WebhookServer,
) -> None:
    configmap = configmap_object({KEY: "message: hi\n"})
    configmap["data"]["padding"] = "x" * review_limit(MAX_BYTES)
    body = admission_review(configmap)
    assert len(body) > review_limit(MAX_BYTES)
    connection = webhook.connection()
    try:
        # Only the head is sent: the answer comes without the body.
        connection.putrequest("POST", "/validate")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        response = connection.getresponse()
        assert (response.status, response.read()) == (413, b"request body too large\n")
    finally:
        connection.close()
    assert "Traceback" not in webhook.output


def test_validate_answers_post_only(webhook: WebhookServer) -> None:
    assert webhook.get("/validate").status == 405


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("POST", "/validate", 400),
        ("GET", "/validate", 405),
        ("GET", "/nowhere", 404),
    ],
)
def test_every_answer_carries_nosniff(
    webhook: WebhookServer, method: str, path: str, status: int
) -> None:
    response, _ = webhook.request(
        method, path, b"not json" if method == "POST" else None
    )
    assert response.status == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_metrics_count_reviews_by_verdict_and_time_the_answers(
    webhook: WebhookServer,
) -> None:
    def count(verdict: str) -> float:
        page = webhook.get("/metrics").text
        return metric_value(
            page.replace(f'{{verdict="{verdict}"}}', f"_{verdict}"),
            f"configmapdemo_webhook_reviews_total_{verdict}",
        )

    def answered() -> float:
        page = webhook.get("/metrics").text
        return metric_value(page, "configmapdemo_webhook_answer_seconds_count")

    before = {v: count(v) for v in ("allowed", "denied", "skipped", "malformed")}
    total = answered()
    webhook.post(admission_review(configmap_object({KEY: GOOD})))
    webhook.post(admission_review(configmap_object({KEY: DUPLICATE})))
    webhook.post(admission_review(configmap_object({"other": "x"})))
    webhook.post(b"not json")
    after = {v: count(v) for v in before}
    assert {v: after[v] - before[v] for v in after} == {
        "allowed": 1,
        "denied": 1,
        "skipped": 1,
        "malformed": 1,
    }
    assert answered() - total == 4
    assert count("failed") == 0


def test_a_rotated_certificate_serves_new_connections(
    tmp_path: Path, ca: CA, leaf: Leaf
) -> None:
    secret = AtomicWriter(tmp_path / "tls")
    secret.write(leaf.files())
    server = WebhookServer.of_secret(secret, ca)
    try:
        server.wait_ready()
        renewed = ca.issue("localhost")
        secret.write(renewed.files())

        def served() -> bool:
            return server.request("GET", "/healthz")[1] == renewed.sha256

        wait_for(served, "the renewed certificate to be served")
        review = admission_review(configmap_object({KEY: GOOD}))
        assert response_of(server.post(review))["allowed"] is True
    finally:
        server.close()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            [],
            "--tls-cert PATH and --tls-key PATH are required: the API server "
            "calls webhooks over HTTPS only",
        ),
        (["--tls-cert", "/etc/tls/tls.crt"], "--tls-cert needs --tls-key too"),
        (
            ["--tls-cert", "c", "--tls-key", "k", "--max-bytes", "0"],
            "--max-bytes must be a whole number of bytes above 0, got '0'",
        ),
        (["--config", "c.yaml"], "option --config not recognized"),
        (
            ["--tls-cert", "c", "--tls-key", "k", "--listen", "ssl:8443"],
            "--listen 'ssl:8443' is TLS already: with --tls-cert, give a tcp: "
            "endpoint, which --tls-cert serves over TLS",
        ),
    ],
)
def test_a_refused_command_line_is_one_line_and_a_pointer_to_help(
    options: list[str], error: str
) -> None:
    argv = webhook_argv(free_port(), "c", "k")
    argv = argv[: argv.index("--tls-cert")] + options
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"configmapdemo-webhook: error: {error}",
        "Try 'twistd configmapdemo-webhook --help'",
    ]


def test_no_certificate_pair_stops_the_start_with_one_line(tmp_path: Path) -> None:
    argv = webhook_argv(free_port(), tmp_path / "tls.crt", tmp_path / "tls.key")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"configmapdemo-webhook: error: {tmp_path}/tls.crt: cannot read: "
        "No such file or directory"
    ]


# -- the library's webhook, in-process ----------------------------------------


def answer_of(webhook: AdmissionWebhook, body: bytes) -> Answer:
    answer = result_of(webhook.answer(body))
    assert isinstance(answer, Answer)
    return answer


def test_a_parse_with_no_answer_by_the_deadline_is_a_503() -> None:
    clock = Clock()
    parses: list[Deferred[object]] = []

    def never(parse: object, data: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        parses.append(d)
        return d

    # The default deadline, as the docs give it.
    webhook = AdmissionWebhook(parse_message_like, key=KEY, reactor=clock, runner=never)
    seen: list[tuple[str, float]] = []
    webhook.observe(lambda answered: seen.append((answered.verdict, answered.seconds)))
    answering = webhook.answer(admission_review(configmap_object({KEY: GOOD})))
    clock.advance(5.9)
    assert not answering.called
    clock.advance(0.1)
    answer = result_of(answering)
    assert (answer.status, answer.body) == (
        503,
        b"could not check the ConfigMap: no answer from the parser in 6s\n",
    )
    assert seen == [("failed", 6.0)]
    # The runner's late answer changes nothing.
    parses[0].callback(None)


def parse_message_like(data: bytes) -> str:
    if b"crash" in data:
        raise ValueError(f"cannot handle {data!r}")
    if b"message:" not in data:
        raise ConfigError("'message' is missing")
    return "ok"


def test_a_parse_that_crashes_is_denied_without_its_text() -> None:
    webhook = AdmissionWebhook(parse_message_like, key=KEY, runner=inline)
    config = f"message: crash {SECRET}\n"
    answer = answer_of(webhook, admission_review(configmap_object({KEY: config})))
    response = json.loads(answer.body)["response"]
    assert response["status"]["message"] == f"{KEY}: the parser crashed on it"
    assert SECRET.encode() not in answer.body


def test_another_apps_webhook_is_one_call_with_its_parse_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "examples"))
    from featureflags.schema import parse_flags

    webhook = AdmissionWebhook(parse_flags, key="flags.yaml", runner=inline)
    registry = CollectorRegistry()
    webhook.observe(WebhookMetrics(registry, "featureflags"))
    good = configmap_object({"flags.yaml": "beta: true\n"}, name="flags")
    bad = configmap_object({"flags.yaml": "beta: true\nbeta: false\n"}, name="flags")
    assert json.loads(answer_of(webhook, admission_review(good)).body)["response"][
        "allowed"
    ]
    denied = json.loads(answer_of(webhook, admission_review(bad)).body)["response"]
    assert denied["status"]["message"] == (
        "flags.yaml: line 2, column 1: duplicate key (first on line 1)"
    )
    page = generate_latest(registry).decode()
    assert 'featureflags_webhook_reviews_total{verdict="denied"} 1.0' in page


def test_check_configmap_gives_the_line_and_column_of_the_failure() -> None:
    configmap = configmap_object({KEY: DUPLICATE})
    result = result_of(check_configmap(parse_message, configmap, key=KEY))
    assert (result.source.configmap, result.source.key) == (
        "default/configmap-microservice-demo",
        KEY,
    )
    assert (str(result.error), result.error.line, result.error.column) == (
        "line 2, column 1: duplicate key (first on line 1)",
        2,
        1,
    )


def test_the_body_limit_is_13_mib_for_the_default_max_bytes() -> None:
    assert review_limit(1024 * 1024) == 13 * 1024 * 1024


def test_the_body_limit_holds_an_update_of_the_largest_configmap() -> None:
    # object and oldObject, each max_bytes of "<", which Go writes as \\u003c.
    value = "<" * MAX_BYTES
    configmap = configmap_object({KEY: value})
    body = admission_review(configmap, operation="UPDATE", old=configmap)
    assert len(body.replace(b"<", b"\\u003c")) <= review_limit(MAX_BYTES)


def test_a_runner_that_cannot_parse_is_a_503_naming_why() -> None:
    from twisted_demo.live._process import ParserUnavailable

    def unavailable(parse: object, data: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        d.errback(ParserUnavailable("the parser process could not start (EAGAIN)"))
        return d

    webhook = AdmissionWebhook(parse_message, key=KEY, runner=unavailable)
    answer = answer_of(webhook, admission_review(configmap_object({KEY: GOOD})))
    assert (answer.status, answer.verdict, answer.body) == (
        503,
        "failed",
        b"could not check the ConfigMap: the parser process could not start (EAGAIN)\n",
    )


def test_the_librarys_webhook_example_runs_as_written(
    tmp_path: Path, ca: CA, leaf: Leaf
) -> None:
    from tests.test_docs import blocks, section

    text = section(
        (ROOT / "docs" / "library.md").read_text(),
        "An admission webhook for your parser",
    )
    tac, quoted = [b for b in blocks(text) if b.language in ("python", "")]
    port = free_port()
    (tmp_path / "flags-webhook.tac").write_text(
        "\n".join(tac.lines).replace("ssl:8443:", f"ssl:{port}:interface=127.0.0.1:")
    )
    for name, content in leaf.files().items():
        (tmp_path / name).write_bytes(content)
    server = WebhookServer(
        [twistd_executable(), "-ny", "flags-webhook.tac", "--pidfile="],
        port,
        ca.cert_pem,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "examples")},
    )
    bad = configmap_object({"flags.yaml": "beta: true\nbeta: false\n"}, name="flags")

    def answered() -> Response | None:
        if server.process.poll() is not None:
            raise AssertionError(server.output)
        try:
            return server.post(admission_review(bad))
        except OSError:
            return None

    try:
        response = response_of(wait_for(answered, "the example to answer"))
    finally:
        server.close()
    assert [response["status"]["message"]] == quoted.lines


def test_the_resource_alone_refuses_a_body_over_the_limit_it_was_given() -> None:
    # Behind a plain Site, with no guard in front: the body is read, then
    # refused.
    webhook = AdmissionWebhook(parse_message, key=KEY, max_bytes=1, runner=inline)
    client: Any = StubTreq(webhook.resource())
    configmap = configmap_object({KEY: GOOD})
    small = admission_review(configmap)
    configmap["data"]["padding"] = "x" * webhook.request_limit
    for body, status in ((small, 200), (admission_review(configmap), 413)):
        d = client.post("https://webhook.example/validate", data=body)
        client.flush()
        response = result_of(d)
        assert response.code == status
