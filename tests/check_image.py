"""
The container image, run the way C{deploy/deployment.yaml} runs it and
checked from outside: what it serves, a live update through a kubelet-style
ConfigMap volume, its log, how it stops, and that it writes nothing.

It needs podman and a built image, so a plain C{pytest} does not collect
this module (its name does not start with C{test_}): C{deploy/test-image}
builds the image and then runs it with C{CONFIGMAPDEMO_IMAGE} naming the
image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from attrs import frozen
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import CONFIG_NAME, Response, http, wait_for
from tests.test_lock import pins
from twisted_demo.testing import AtomicWriter, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = ROOT / "deploy" / "deployment.yaml"
SERVICE_LOCK = ROOT / "requirements" / "service.txt"

#: Kubernetes' grace period when a pod sets no terminationGracePeriodSeconds.
DEFAULT_GRACE_PERIOD = 30

#: How much older than the plugin cache the plugin modules must be for
#: rounding of file times, by any builder or registry, to keep it fresh.
PLUGIN_CACHE_MARGIN = 60

#: Label of the containers started here, so that a killed run's leftovers
#: can be found and removed.
LABEL = "configmapdemo.check"

HELLO = b"message: Hello World\n"


def image() -> str:
    name = os.environ.get("CONFIGMAPDEMO_IMAGE")
    if not name:
        pytest.fail("CONFIGMAPDEMO_IMAGE is not set: run deploy/test-image")
    return name


def podman(*args: str, timeout: float = 120) -> str:
    """
    Run C{podman} with C{args} and return its standard output; fail the
    test with its standard error if it fails.
    """
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}"
        )
    return result.stdout


def image_python(*args: str) -> str:
    """
    The output of the image's Python run with C{args}, in a throwaway
    container with a read-only root.
    """
    return podman(
        "run",
        "--rm",
        "--pull=never",
        "--read-only",
        "--entrypoint=python",
        image(),
        *args,
    )


def container_python(container: Container, code: str) -> str:
    """
    The output of C{code} run by the image's Python inside the running
    C{container}, as C{kubectl exec} runs a command in a pod.
    """
    return podman("exec", container.name, "python", "-c", code).strip()


#: Forces a reload over the container's loopback; prints the status.
POST_RELOAD = (
    "import urllib.request as u; print(u.urlopen(u.Request("
    "'http://127.0.0.1:8080/-/reload', method='POST')).status)"
)


# -- the Deployment, as podman options ----------------------------------------


def pod_spec() -> dict[str, Any]:
    spec = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def pod_container() -> dict[str, Any]:
    [only] = pod_spec()["containers"]
    assert isinstance(only, dict)
    return only


def mount_path() -> PurePosixPath:
    [mount] = pod_container()["volumeMounts"]
    return PurePosixPath(mount["mountPath"])


def grace_period() -> int:
    return int(pod_spec().get("terminationGracePeriodSeconds", DEFAULT_GRACE_PERIOD))


_QUANTITY_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}


def quantity(value: object) -> float:
    """
    A Kubernetes resource quantity (C{128Mi}, C{50m}, C{1}) as a number.
    """
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _QUANTITY_SUFFIXES, value
    return float(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2)]


# What of the pod spec the options below carry out; anything else in it
# would be a difference between this run and the cluster's.
_SCHEDULING_ONLY = {"topologySpreadConstraints"}
_POD_FIELDS = {
    "automountServiceAccountToken",
    "containers",
    "securityContext",
    # podman stop --time, in the stop test.
    "terminationGracePeriodSeconds",
    "volumes",
} | _SCHEDULING_ONLY
_CONTAINER_FIELDS = {
    "name",
    # podman run --entrypoint, and the arguments after the image.
    "command",
    "args",
    "image",
    "imagePullPolicy",
    "ports",
    "readinessProbe",
    "livenessProbe",
    "resources",
    "securityContext",
    "volumeMounts",
}
_SECURITY_FIELDS = {
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seccompProfile",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "capabilities",
}


def run_options(config_dir: Path, host_port: int) -> list[str]:
    """
    The C{podman run} options that give a container what the Deployment
    gives its pod: user, security context, resources, the ConfigMap volume
    (here C{config_dir}) and the container port (here published on
    C{host_port} of the loopback interface).
    """
    spec = pod_spec()
    container = pod_container()
    context = {**spec.get("securityContext", {}), **container["securityContext"]}
    for fields, known in (
        (spec, _POD_FIELDS),
        (container, _CONTAINER_FIELDS),
        (context, _SECURITY_FIELDS),
    ):
        unknown = sorted(set(fields) - known)
        assert not unknown, f"run_options() does not carry out {unknown} yet"
    # No token is mounted, and none is needed here.
    assert spec.get("automountServiceAccountToken") is False

    options = [f"--user={context['runAsUser']}"]
    if "runAsGroup" in context:
        options[0] += f":{context['runAsGroup']}"
    # The kubelet refuses to start a runAsNonRoot container as root.
    assert not context.get("runAsNonRoot") or int(context["runAsUser"]) != 0
    # podman's default seccomp profile is its RuntimeDefault.
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    if context.get("readOnlyRootFilesystem"):
        # Kubernetes mounts no tmpfs on /tmp or /run, so neither does podman.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    capabilities = context.get("capabilities", {})
    options += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
    options += [f"--cap-add={c}" for c in capabilities.get("add", [])]

    resources = container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    if "memory" in limits:
        options.append(f"--memory={int(quantity(limits['memory']))}")
    if "cpu" in limits:
        options.append(f"--cpus={quantity(limits['cpu'])}")
    if "cpu" in requests:
        # The kubelet's conversion of a CPU request into cgroup shares.
        options.append(f"--cpu-shares={max(2, int(quantity(requests['cpu']) * 1024))}")

    volumes = {v["name"]: v for v in spec["volumes"]}
    [mount] = container["volumeMounts"]
    assert set(volumes[mount["name"]]) == {"name", "configMap"}
    mode = "ro" if mount.get("readOnly") else "rw"
    options.append(f"--volume={config_dir}:{mount['mountPath']}:{mode}")
    [port] = container["ports"]
    options.append(f"--publish=127.0.0.1:{host_port}:{port['containerPort']}")
    return options


def entrypoint_option() -> list[str]:
    """
    The Deployment's C{command}, which replaces the image's ENTRYPOINT (its
    C{args} replace the CMD), as a C{podman run} option.
    """
    command = pod_container().get("command")
    return [] if command is None else [f"--entrypoint={json.dumps(command)}"]


def container_command() -> list[str]:
    """
    What the container runs, by Kubernetes' rules: the Deployment's
    C{command} or else the image's ENTRYPOINT, then the Deployment's
    C{args}, or else the image's CMD where the Deployment sets no command.
    """
    config = image_config()
    container = pod_container()
    command = container.get("command", config.get("Entrypoint") or [])
    if "args" in container:
        args = container["args"]
    elif "command" in container:
        args = []
    else:
        args = config.get("Cmd") or []
    return [str(word) for word in [*command, *args]]


# -- the log -------------------------------------------------------------------

_TEXT_LINE = re.compile(r"\S+ \[([^\]#]*)(?:#(\w+))?\] (.*)")


@frozen
class LogLine:
    """
    One line of the service's log, in either of its formats: the level
    (C{-} for a line without one) and the message.
    """

    level: str
    message: str


def log_lines(output: str) -> list[LogLine]:
    """
    Parse twistd's standard output, text (C{TIME [namespace#level] message})
    or JSON (one object per line), into L{LogLine}s; a line of neither form,
    such as a traceback's, is kept whole as a message without a level.
    """
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            message = record["message"] + "\n" + record.get("traceback", "")
            lines.append(LogLine(record.get("level", "-"), message.strip()))
        elif match := _TEXT_LINE.fullmatch(line):
            lines.append(LogLine(match.group(2) or "-", match.group(3)))
        else:
            lines.append(LogLine("-", line))
    return lines


# -- one container -----------------------------------------------------------


class Container:
    """
    A container of the image, started with L{run_options}, serving the
    ConfigMap volume that C{configmap} writes.
    """

    def __init__(self, configmap: AtomicWriter) -> None:
        self.configmap = configmap
        self.name = f"configmapdemo-check-{uuid.uuid4().hex[:12]}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        podman(
            "run",
            "--detach",
            "--pull=never",
            # Whose container it is: deploy/test-image removes only those
            # of runs that have ended.
            f"--label={LABEL}={os.environ.get('CONFIGMAPDEMO_RUN', '')}",
            f"--name={self.name}",
            *run_options(configmap.target_dir, self.port),
            *entrypoint_option(),
            image(),
            *pod_container().get("args", []),
        )

    def state(self, field: str) -> str:
        return podman("inspect", f"--format={{{{.State.{field}}}}}", self.name).strip()

    def logs(self) -> tuple[str, str]:
        """
        What the container wrote so far to its standard output and error.
        """
        result = subprocess.run(
            ["podman", "logs", self.name], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout, result.stderr

    def get(self, path: str) -> Response:
        return http(self.base + path)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.state("Running") != "true":
                stdout, stderr = self.logs()
                raise AssertionError(f"the container stopped:\n{stdout}{stderr}")
            try:
                return self.get("/").status == 200
            except OSError:
                return False

        wait_for(ready, "GET / to answer", timeout=60)

    def log(self) -> list[LogLine]:
        return log_lines(self.logs()[0])

    def logged(self, text: str) -> bool:
        """
        Whether a message in the log holds C{text}.
        """
        return any(text in line.message for line in self.log())

    def wait_logged(self, text: str) -> None:
        wait_for(lambda: self.logged(text), f"{text!r} in the log")

    def remove(self) -> None:
        subprocess.run(
            ["podman", "rm", "--force", "--time=0", self.name],
            capture_output=True,
            timeout=60,
        )


@pytest.fixture
def configmap(tmp_path: Path) -> AtomicWriter:
    """
    A ConfigMap volume directory holding C{message: Hello World}.
    """
    writer = AtomicWriter(tmp_path / "config")
    writer.write({CONFIG_NAME: HELLO})
    return writer


@pytest.fixture
def container(configmap: AtomicWriter) -> Iterator[Container]:
    running = Container(configmap)
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


def short_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def config_of(container: Container) -> dict[str, Any]:
    response = container.get("/config")
    assert response.status == 200, response.text
    config = json.loads(response.body)
    assert isinstance(config, dict)
    return config


# -- the image ---------------------------------------------------------------


def image_config() -> dict[str, Any]:
    config = json.loads(
        podman("image", "inspect", "--format={{json .Config}}", image())
    )
    assert isinstance(config, dict)
    return config


def test_image_runs_as_the_deployments_non_root_user_by_default() -> None:
    # The pod sets its user; `docker run` and other runtimes take the
    # image's, which must be the same unprivileged one.
    config = image_config()
    context = {**pod_spec()["securityContext"], **pod_container()["securityContext"]}
    uid, _, gid = str(config.get("User", "")).partition(":")
    assert uid == str(context["runAsUser"]), f"the image's USER is {uid or 'root'}"
    assert gid == str(context.get("runAsGroup", "")), f"the image's group is {gid}"


def test_container_reads_the_config_where_the_deployment_mounts_it() -> None:
    command = container_command()
    assert command[:2] == ["twistd", "-n"], command
    assert command[command.index("--config") + 1] == str(mount_path() / CONFIG_NAME)


def test_image_holds_the_locked_versions_and_nothing_else() -> None:
    # Two builds of one commit hold the same packages: the lock's, the
    # project, and the pip that came with the base.
    listed = json.loads(image_python("-m", "pip", "list", "--format=json"))
    installed: dict[str, Version] = {
        canonicalize_name(p["name"]): Version(p["version"]) for p in listed
    }
    locked = pins(SERVICE_LOCK)
    assert {n: installed.get(n) for n in locked} == locked
    assert set(installed) - set(locked) == {"configmapdemo", "pip"}


_PLUGIN_TIMES = """\
import json, os, twisted.plugins
print(json.dumps({
    os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime
    for d in twisted.plugins.__path__ if os.path.isdir(d)
    for n in os.listdir(d) if n.endswith(".py") or n == "dropin.cache"
}))
"""


def test_plugin_cache_stays_fresh_whatever_the_builder_rounds_file_times() -> None:
    # twistd rewrites dropin.cache when a plugin module's mtime is not older
    # than the cache's; in a read-only image it cannot, and would try at
    # every start. Modules dated well before the cache keep it fresh when a
    # builder or registry rounds file times.
    times = json.loads(image_python("-c", _PLUGIN_TIMES))
    modules: dict[str, dict[str, float]] = {}
    for path, mtime in times.items():
        modules.setdefault(os.path.dirname(path), {})[path] = mtime
    assert modules, "no twisted/plugins directory in the image"
    for directory, entries in modules.items():
        cache = os.path.join(directory, "dropin.cache")
        assert cache in entries, f"the image has no {cache}"
        cached_at = entries.pop(cache)
        newest = max(entries, key=entries.__getitem__)
        assert cached_at - entries[newest] >= PLUGIN_CACHE_MARGIN, (
            f"{newest} is only {cached_at - entries[newest]:.0f} s older than "
            f"{cache}: a builder that rounds file times can make them equal, "
            "and twistd then tries to rewrite the cache at every start"
        )


# -- the running container ---------------------------------------------------


def test_serves_the_message_and_answers_the_probes(container: Container) -> None:
    assert container.get("/").body == b"Hello World"
    for probe in ("readinessProbe", "livenessProbe"):
        path = pod_container()[probe]["httpGet"]["path"]
        response = container.get(path)
        assert response.status == 200, (path, response.status, response.text)


def test_starts_without_a_warning(container: Container) -> None:
    stdout, stderr = container.logs()
    assert stderr == ""
    log = log_lines(stdout)
    port = pod_container()["ports"][0]["containerPort"]
    assert any(f"starting on {port}" in line.message for line in log), stdout
    # twistd names dropin.cache when it finds the plugin cache stale and
    # cannot rewrite it in the read-only image.
    assert not [line for line in log if "dropin.cache" in line.message]
    assert not [line for line in log if line.level in ("warn", "error", "critical")]
    assert "Traceback" not in stdout


def test_kubelet_update_is_served_within_a_second_and_logged(
    container: Container,
) -> None:
    updated = b"message: Updated\n"
    written_at = time.monotonic()
    generation = container.configmap.write({CONFIG_NAME: updated})
    wait_for(lambda: container.get("/").body == b"Updated", "the update served")
    served_after = time.monotonic() - written_at
    print(f"\nupdate served {served_after * 1000:.0f} ms after the write")
    assert served_after <= 1.0
    container.wait_logged(
        f"Config file updated: sha256 {short_sha256(HELLO)} -> "
        f"{short_sha256(updated)} ({mount_path() / CONFIG_NAME}, "
        f"generation {generation})"
    )
    assert config_of(container)["generation"] == generation


def test_broken_update_keeps_the_message_and_shows_last_error(
    container: Container,
) -> None:
    container.configmap.write({CONFIG_NAME: b"message: [unclosed\n"})
    config = wait_for(
        lambda: (c := config_of(container))["last_error"] and c,
        "last_error in /config",
    )
    assert config["sha256"] == hashlib.sha256(HELLO).hexdigest()
    assert container.get("/").body == b"Hello World"
    container.wait_logged("Config reload failed, still serving the last good config")


def _in_flight(container: Container) -> socket.socket:
    """
    A connection whose request head the server has read (it answered
    "100 Continue") and whose body has not been sent yet.
    """
    s = socket.create_connection(("127.0.0.1", container.port), timeout=10)
    s.sendall(
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\n"
        b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    return s


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_podman_stop_drains_and_exits_within_the_grace_period(
    container: Container,
) -> None:
    posting = _in_flight(container)
    grace = grace_period()
    sent_at = time.monotonic()
    # SIGTERM, then SIGKILL if the container is still running after `grace`,
    # as the kubelet does.
    stop = subprocess.Popen(
        ["podman", "stop", f"--time={grace}", container.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        container.wait_logged("Finishing 1 open connection(s) before stopping")
        posting.sendall(b"abcd")
        answer = _read_all(posting)
        _, stop_error = stop.communicate(timeout=grace + 30)
    finally:
        posting.close()
        if stop.poll() is None:
            stop.kill()
            stop.wait()
    stopped_after = time.monotonic() - sent_at
    print(f"\nstopped {stopped_after:.1f} s after SIGTERM (grace period {grace} s)")
    assert stop.returncode == 0, stop_error
    # Refused, since the client is not on the container's loopback
    # (--reload-from loopback), but answered all the same while draining.
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    # Killed after the grace period, the exit status would be 137.
    assert container.state("ExitCode") in ("0", "143")
    assert stopped_after < grace
    stdout, stderr = container.logs()
    assert container.logged("Server Shut Down."), stdout
    assert "Traceback" not in stdout + stderr


def test_container_file_system_is_unchanged_after_serving(
    container: Container,
) -> None:
    container.configmap.write({CONFIG_NAME: b"message: Updated\n"})
    wait_for(lambda: container.get("/").body == b"Updated", "the update served")
    # From outside the container, refused; from inside it, as kubectl
    # exec would, taken.
    assert http(container.base + "/-/reload", method="POST").status == 403
    assert container_python(container, POST_RELOAD) == "200"
    container.configmap.write({CONFIG_NAME: b"message: [unclosed\n"})
    wait_for(lambda: config_of(container)["last_error"], "last_error in /config")
    for path in ("/readyz", "/healthz", "/metrics", "/config"):
        assert container.get(path).status == 200, path
    podman("stop", f"--time={grace_period()}", container.name)
    changes = set(podman("diff", container.name).splitlines())
    assert changes <= runtime_changes(), changes - runtime_changes()


def runtime_changes() -> set[str]:
    """
    What C{podman diff} shows that the runtime, not the service, made: the
    mount point of each volume, and C{/etc}, where podman adds C{/etc/mtab}
    and the mount points of C{/etc/hosts}, C{/etc/hostname} and
    C{/etc/resolv.conf} if the image lacks them (it lists none of those).
    """
    changes = {"C /etc"}
    for mount in pod_container()["volumeMounts"]:
        path = PurePosixPath(mount["mountPath"])
        changes.add(f"A {path}")
        changes |= {f"C {parent}" for parent in path.parents if parent.name}
    return changes
