"""
A config file the kubelet can never update: a file that is a mount point
of its own, as a ConfigMap key mounted with C{subPath} is.  The service
says so once at start-up, in the log and in C{/config}.  The mount is made
in a private mount namespace (C{unshare}, as root) around the real
C{twistd}.
"""

from __future__ import annotations

import json
import ssl
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any

from tests.certs import CA
from tests.support import CONFIG_NAME, DEADLINE, TwistdServer, http, wait_for
from twisted_demo.live._mounts import mount_points, never_updated
from twisted_demo.testing import AtomicWriter
from twisted_demo.tls import CERT_FILE, KEY_FILE

#: Runs the command after C{--} with each pair of files before it
#: bind-mounted, the first onto the second, in a mount namespace of its
#: own, as the kubelet mounts a subPath.
_SUBPATH = """
while [ "$1" != -- ]; do mount --bind "$1" "$2" && shift 2 || exit 1; done
shift && exec "$@"
"""


def _subpath(volume: AtomicWriter, names: list[str], directory: Path) -> list[str]:
    """
    The arguments of L{_SUBPATH} that mount the keys C{names} of C{volume}
    as files of C{directory}, where C{subPath} mounts would put them.
    """
    directory.mkdir()
    pairs = []
    for name in names:
        (directory / name).touch()
        pairs += [str((volume.target_dir / name).resolve()), str(directory / name)]
    return pairs


def _in_namespace(*pairs: str) -> list[str]:
    namespace = ["unshare", "--mount", "--propagation", "private"]
    return [*namespace, "bash", "-c", _SUBPATH, "bash", *pairs, "--"]


def _subpath_mounted(configmap: AtomicWriter, tmp_path: Path) -> TwistdServer:
    """
    The service on a file onto which the ConfigMap's key is bind-mounted,
    where a C{subPath} mount would put it.
    """
    etc = tmp_path / "etc"
    pairs = _subpath(configmap, [CONFIG_NAME], etc)
    return TwistdServer(etc / CONFIG_NAME, wrapper=_in_namespace(*pairs))


def test_a_subpath_mounted_config_is_reported_once_with_the_fix(
    configmap: AtomicWriter, tmp_path: Path
) -> None:
    server = _subpath_mounted(configmap, tmp_path)
    try:
        server.wait_ready()
        assert server.get("/").text == "Hello World"
        status = json.loads(server.get("/config").text)
        warning = status["never_updated"]
        target = str(tmp_path / "etc" / CONFIG_NAME)
        assert warning.startswith(f"{target} is a mount point of its own")
        assert "without subPath" in warning
        assert "kubernetes/kubernetes#50345" in warning
        wait_for(lambda: warning in server.output, "the warning in the log")
        # And it is so: even a forced reload does not see the update.
        configmap.write({CONFIG_NAME: b"message: Hello Kubernetes\n"})
        reloaded = http(server.url + "/-/reload", method="POST")
        assert json.loads(reloaded.text)["outcome"] == "unchanged"
        assert server.get("/").text == "Hello World"
        server.stop()
        assert server.output.count(warning) == 1
        assert "[twisted_demo.live#warn]" in server.output
    finally:
        server.close()


def test_a_configmap_mounted_as_a_directory_is_not_reported(
    twistd_server: TwistdServer,
) -> None:
    status = json.loads(twistd_server.get("/config").text)
    assert status["never_updated"] is None
    assert "subPath" not in twistd_server.output


def test_mount_points_are_read_unescaped() -> None:
    mountinfo = (
        "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n"
        "37 35 0:5 / /etc/config/key.yaml ro - tmpfs tmpfs rw\n"
    )
    assert mount_points(mountinfo) == {"/mnt/a b", "/etc/config/key.yaml"}


def test_a_file_listed_as_a_mount_point_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "a b.yaml"
    config.write_text("message: x\n")
    table = tmp_path / "mountinfo"
    escaped = str(config).replace(" ", "\\040")
    table.write_text(f"37 35 0:5 / {escaped} ro - tmpfs tmpfs rw\n")
    warning = never_updated([str(config)], mountinfo=str(table))
    assert warning is not None
    assert warning.startswith(f"{config} is a mount point of its own")
    table.write_text(f"37 35 0:5 / {tmp_path} ro - tmpfs tmpfs rw\n")
    assert never_updated([str(config)], mountinfo=str(table)) is None


def test_a_subpath_mounted_certificate_pair_is_reported_under_tls(
    configmap: AtomicWriter, tmp_path: Path
) -> None:
    ca = CA.make()
    secret = AtomicWriter(tmp_path / "secret")
    secret.write(ca.issue("localhost").files())
    tls = tmp_path / "tls"
    pairs = _subpath(secret, [CERT_FILE, KEY_FILE], tls)
    server = TwistdServer(
        configmap.target_dir / CONFIG_NAME,
        extra=["--tls-cert", str(tls / CERT_FILE), "--tls-key", str(tls / KEY_FILE)],
        wrapper=_in_namespace(*pairs),
    )
    context = ssl.create_default_context(cadata=ca.cert_pem.decode("ascii"))

    def config() -> dict[str, Any] | None:
        if server.process.poll() is not None:
            raise AssertionError(f"twistd exited early:\n{server.output}")
        connection = HTTPSConnection(
            "localhost", server.port, context=context, timeout=DEADLINE
        )
        try:
            connection.request("GET", "/config")
            body: dict[str, Any] = json.loads(connection.getresponse().read())
            return body
        except OSError:
            return None
        finally:
            connection.close()

    try:
        status = wait_for(config, "GET /config over HTTPS")
        # The config is a ConfigMap directory; only the pair is subPath.
        assert status["never_updated"] is None
        warning = status["tls"]["never_updated"]
        assert warning.startswith(
            f"{tls / CERT_FILE}, {tls / KEY_FILE} are mount points of their own"
        )
        assert "without subPath" in warning
        server.stop()
        assert server.output.count(warning) == 1
    finally:
        server.close()
