"""
B11: the admission webhook's answer time for a 1 MiB ConfigMap, the
largest the API server stores, against the 10 s C{timeoutSeconds} of
deploy/webhook/, and the webhook's memory.

A real C{twistd -n configmapdemo-webhook} over HTTPS, with the certificate
deploy/webhook/make-cert makes, is sent the C{UPDATE} review the API server
sends (the ConfigMap as C{object} and as C{oldObject}) over one kept-alive
connection; each answer is timed from the request's first byte to the
response's last, as the API server waits for it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import time

from bench.configs import config_yaml
from bench.context import Context, Row
from bench.parsecost import shapes
from bench.proc import holdings
from bench.server import REPO_ROOT
from bench.stats import Summary, ms
from twisted_demo.config import CONFIG_KEY
from twisted_demo.live._webhook import DEFAULT_DEADLINE
from twisted_demo.testing import (
    admission_review,
    configmap_object,
    free_port,
    webhook_argv,
)

#: Just under 1 MiB, so that the default C{--max-bytes} accepts it.
SIZE = 1024 * 1024 - 1024

#: The C{timeoutSeconds} of deploy/webhook/validatingwebhookconfiguration.yaml.
TIMEOUT_SECONDS = 10.0

_MiB = 1024 * 1024


def reviews() -> dict[str, tuple[bytes, bool]]:
    """
    Each review measured, by name, with whether it must be allowed: the
    benchmarks' padded config, the same with its last key repeated (found
    only at the end), and B9's costliest shape, 51k short keys.
    """
    padded = config_yaml("big review", SIZE)
    shorter = config_yaml("big review", SIZE - 8192)
    broken = shorter + shorter.splitlines(keepends=True)[-1]
    configs = {
        "padded": (padded, True),
        "padded, duplicate key at the end": (broken, False),
        "51k keys": (shapes(SIZE)["keys"], True),
    }
    documents = {}
    for name, (config, allowed) in configs.items():
        configmap = configmap_object({CONFIG_KEY: config.decode("utf-8")})
        documents[name] = (
            admission_review(configmap, operation="UPDATE", old=configmap),
            allowed,
        )
    return documents


class _Webhook:
    """
    The webhook process, and an HTTPS connection to it that trusts the CA
    make-cert made (its certificate names the Service, not 127.0.0.1).
    """

    def __init__(self, ctx: Context) -> None:
        certs = ctx.workdir / "b10-certs"
        subprocess.run(
            [str(REPO_ROOT / "deploy" / "webhook" / "make-cert"), str(certs)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        self._context.check_hostname = False
        self.port = free_port()
        self._log = open(ctx.workdir / "b10.log", "ab")
        self.process = subprocess.Popen(
            webhook_argv(self.port, certs / "tls.crt", certs / "tls.key"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.connection = self._connect()

    def _connect(self, timeout: float = 20.0) -> http.client.HTTPSConnection:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"webhook exited with {self.process.returncode}")
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self._context, timeout=30
            )
            try:
                connection.request("GET", "/readyz")
                if connection.getresponse().read() == b"ready\n":
                    return connection
            except OSError:
                connection.close()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"webhook not ready after {timeout} s")
            time.sleep(0.01)

    def post(self, body: bytes) -> tuple[float, int, bytes]:
        """
        The seconds the answer took, its status and its body.
        """
        started = time.perf_counter()
        self.connection.request(
            "POST", "/validate", body, {"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        answer = response.read()
        return time.perf_counter() - started, response.status, answer

    def close(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def run(ctx: Context) -> None:
    """B11."""
    rounds = 3 if ctx.quick else 20
    documents = reviews()
    webhook = _Webhook(ctx)
    timings: dict[str, Summary] = {}
    late: dict[str, int] = {}
    try:
        idle = holdings(webhook.process.pid).rss_each
        # The first review starts nothing: the parser process started with
        # the webhook.  It is measured like the others.
        for name, (body, allowed) in documents.items():
            seconds: list[float] = []
            for _ in range(rounds):
                took, status, answer = webhook.post(body)
                seconds.append(took)
                if status == 503 and b"deadline" in answer:
                    # Past the webhook's own deadline: a timing, not a
                    # wrong answer.
                    late[name] = late.get(name, 0) + 1
                    continue
                verdict = status == 200 and json.loads(answer)["response"]["allowed"]
                if status != 200 or verdict is not allowed:
                    ctx.fail(f"B11 {name}: answered {status} {answer[:200]!r}")
            timings[name] = Summary.of(seconds)
        busy = holdings(webhook.process.pid).rss_each
    finally:
        webhook.close()
    body_size = max(len(body) for body, _ in documents.values())
    worst = max(t.max for t in timings.values())
    ctx.detail(
        f"B11: UPDATE reviews of {body_size / _MiB:.1f} MiB (a {SIZE:,}-byte"
        " config as object and oldObject), answer times: "
        + "; ".join(f"{name} {t.describe_ms()}" for name, t in timings.items())
    )
    ctx.detail(
        "B11: webhook RSS idle "
        + " + ".join(f"{r / _MiB:.1f}" for r in idle)
        + " MiB, after the reviews "
        + " + ".join(f"{r / _MiB:.1f}" for r in busy)
        + " MiB (the server, then its two parser processes: the certificate"
        " pair's and the reviews')"
    )
    ctx.row(
        Row(
            "B11",
            f"admission webhook: answer time for an UPDATE of a 1 MiB ConfigMap"
            f" ({rounds} reviews of each of {len(documents)} configs), over HTTPS",
            f"max <= {TIMEOUT_SECONDS / 2:g} s, half the webhook's timeoutSeconds",
            "; ".join(
                f"{name} p50 {ms(t.p50)} / max {ms(t.max)} ms"
                + (
                    f" ({late[name]} past the {DEFAULT_DEADLINE:g} s deadline: 503)"
                    if name in late
                    else ""
                )
                for name, t in timings.items()
            ),
            "pass" if worst <= TIMEOUT_SECONDS / 2 and not late else "miss",
        )
    )
