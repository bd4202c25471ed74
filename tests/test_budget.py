"""
The connection budget: the memory the process may use, read from fake
cgroup trees, and the arithmetic that turns it into a connection limit.
"""

from __future__ import annotations

from pathlib import Path

from twisted_demo import budget


def _tree(root: Path, cgroup: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_memory_max_is_the_lowest_limit_up_the_tree(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "kubepods/pod1/memory.max": "268435456\n",
            "kubepods/pod1/ctr/memory.max": "max\n",
        },
    )
    assert budget.cgroup_memory(root) == 256 * 2**20


def test_cgroup_v1_memory_limit_in_bytes(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        "12:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n",
        {"memory/docker/x/memory.limit_in_bytes": "134217728\n"},
    )
    assert budget.cgroup_memory(root) == 128 * 2**20


def test_no_cgroup_limit_is_none(tmp_path: Path) -> None:
    unlimited = _tree(tmp_path / "a", "0::/\n", {"memory.max": "max\n"})
    assert budget.cgroup_memory(unlimited) is None
    v1 = _tree(
        tmp_path / "b",
        "4:memory:/\n",
        {"memory/memory.limit_in_bytes": "9223372036854771712\n"},
    )
    assert budget.cgroup_memory(v1) is None
    assert budget.cgroup_memory(tmp_path / "nothing") is None


def test_connections_fit_the_memory_beside_the_baseline_and_the_parsers() -> None:
    memory = 128 * 2**20
    plain = budget.connections_for(memory, tls=False)
    tls = budget.connections_for(memory, tls=True)
    room = memory - budget.BASELINE
    assert plain * budget.PLAIN_CONNECTION <= room - budget.PARSER_SHARE
    assert (plain + 1) * budget.PLAIN_CONNECTION > room - budget.PARSER_SHARE
    parsers = budget.PARSER_SHARE + budget.PAIR_PARSER_SHARE
    assert tls * budget.TLS_CONNECTION <= room - parsers
    assert (tls + 1) * budget.TLS_CONNECTION > room - parsers
    assert budget.connections_for(0, tls=False) == budget.MIN_CONNECTIONS


def test_default_limit_follows_the_cgroup_else_the_documented_default(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path, "0::/\n", {"memory.max": "max\n"})
    assert budget.default_connections(tls=False, root=root) == (
        budget.connections_for(budget.DEFAULT_MEMORY, tls=False)
    )
    (root / "sys/fs/cgroup/memory.max").write_text(f"{512 * 2**20}\n")
    assert budget.default_connections(tls=True, root=root) == (
        budget.connections_for(512 * 2**20, tls=True)
    )


def test_descriptors_keep_the_reserve_free() -> None:
    assert budget.descriptor_ceiling(1024) == 1024 - budget.FD_RESERVE
    assert budget.descriptor_ceiling(9) == 0
