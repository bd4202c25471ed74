"""
B10: the peak resident memory of the whole process tree (the server and
its parser process, the sum of their C{VmRSS}) while a real
C{twistd configmapdemo} reloads 1 MiB files, the hostile shapes included,
against the pod's memory limit in C{deploy/deployment.yaml}.

A thread samples C{/proc} every millisecond from the update until the
reload's outcome shows in C{/config}, and a while after.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import yaml

from bench.client import Client
from bench.configs import CONFIG_KEY, TimedAtomicWriter, config_yaml
from bench.context import Context, Row, parser_ready
from bench.parsecost import shapes
from bench.proc import process_tree, rss_bytes
from bench.server import REPO_ROOT

_MiB = 1024 * 1024

#: Just under 1 MiB, so that the default C{--max-bytes} accepts it.
SIZE = _MiB - 1024

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def pod_limit(manifest: Path = REPO_ROOT / "deploy" / "deployment.yaml") -> int:
    """
    The memory limit of the Deployment's container, in bytes.
    """
    deployment = yaml.safe_load(manifest.read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    text = str(container["resources"]["limits"]["memory"])
    for suffix, unit in _UNITS.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * unit
    return int(text)


class TreePeak:
    """
    The largest sum of C{VmRSS} over C{pid}'s tree seen while running, and
    each process's share of it.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0
        self.each: tuple[int, ...] = ()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            each = []
            for member in process_tree(self._pid):
                try:
                    each.append(rss_bytes(member))
                except (OSError, RuntimeError):
                    # Ended between listing and reading.
                    continue
            if sum(each) > self.peak:
                self.peak, self.each = sum(each), tuple(each)
            time.sleep(0.001)


def _outcome(client: Client, raw: bytes, timeout: float = 60.0) -> str:
    """
    Wait until C{/config} serves C{raw} or names an error; which.
    """
    sha256 = hashlib.sha256(raw).hexdigest()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = client.get("/config")
        state = json.loads(body)
        if state["sha256"] == sha256:
            return "served"
        if state["last_error"]:
            return "refused"
        time.sleep(0.02)
    return "no outcome"


def run(ctx: Context) -> None:
    """B10."""
    limit = pod_limit()
    files = {"b5_config": config_yaml("big", SIZE), **shapes(SIZE)}
    if ctx.quick:
        files = {name: files[name] for name in ("keys", "empty_maps")}
    base = ctx.workdir / "b10"
    writer = TimedAtomicWriter(base)
    writer.publish("start")
    app = ctx.app("b10", base / CONFIG_KEY)
    described: list[str] = []
    worst = 0
    with app:
        client = Client(app.port)
        parser_ready(app)
        for name, raw in files.items():
            with TreePeak(app.pid) as tree:
                writer.write({CONFIG_KEY: raw})
                outcome = _outcome(client, raw)
                # The parser's heap is freed, or its process ends, after the
                # reply: a little longer catches what comes after it.
                time.sleep(0.3)
            if outcome == "no outcome":
                ctx.fail(f"B10 {name}: no outcome in /config")
            worst = max(worst, tree.peak)
            shares = " + ".join(f"{r / _MiB:.0f}" for r in tree.each)
            described.append(f"{name} {outcome}, {tree.peak / _MiB:.0f} MiB ({shares})")
            writer.publish("start")
            _outcome(client, config_yaml("start"))
        client.close()
    ctx.detail(
        "B10: peak RSS of the process tree (server + parser process) per"
        " 1 MiB file: " + "; ".join(described)
    )
    ctx.row(
        Row(
            "B10",
            "peak RSS of the process tree reloading 1 MiB files, hostile"
            " shapes included (`k: [0,0,...]`, `k: [{},{},...]`, repeated keys)",
            f"<= {limit // _MiB} MiB (the pod limit in deploy/deployment.yaml)",
            f"max {worst / _MiB:.1f} MiB; " + "; ".join(described),
            "pass" if worst <= limit else "miss",
        )
    )
