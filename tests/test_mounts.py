"""
A config file the kubelet can never update: a file that is a mount point
of its own, as a ConfigMap key mounted with C{subPath} is.  The service
says so once at start-up, in the log and in C{/config}.  The mount is made
in a private mount namespace (C{unshare}, as root) around the real
C{twistd}.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import CONFIG_NAME, TwistdServer, http, wait_for
from twisted_demo.live._mounts import mount_points, never_updated
from twisted_demo.testing import AtomicWriter

#: Runs the command after it with C{$1} bind-mounted onto C{$2}, in a
#: mount namespace of its own, as the kubelet mounts a subPath.
_SUBPATH = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'


def _subpath_mounted(configmap: AtomicWriter, tmp_path: Path) -> TwistdServer:
    """
    The service on a file onto which the ConfigMap's key is bind-mounted,
    where a C{subPath} mount would put it.
    """
    target = tmp_path / "etc" / CONFIG_NAME
    target.parent.mkdir()
    target.touch()
    source = (configmap.target_dir / CONFIG_NAME).resolve()
    wrapper = ["unshare", "--mount", "--propagation", "private"]
    wrapper += ["bash", "-c", _SUBPATH, "bash", str(source), str(target)]
    return TwistdServer(target, wrapper=wrapper)


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
