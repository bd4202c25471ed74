"""
The connection budget: the memory the process may use, read from fake
cgroup trees, and the arithmetic that turns it into a connection limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.server import REPO_ROOT
from bench.treepeak import pod_limit
from twisted_demo import budget
from twisted_demo.live import PARSER_MEMORY


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


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("mebibytes", [96, 128, 144, 208, 512])
def test_the_parsers_and_the_connections_add_up_to_the_memory(
    tls: bool, mebibytes: int
) -> None:
    memory = mebibytes * 2**20
    shares = budget.plan(memory, tls=tls)
    each = budget.TLS_CONNECTION if tls else budget.PLAIN_CONNECTION
    used = (
        budget.BASELINE
        + shares.parser_memory
        + shares.pair_parser_memory
        + shares.connections * each
    )
    assert shares.connections >= budget.MIN_CONNECTIONS
    if memory >= budget.BASELINE + shares.pair_parser_memory + 16 * each:
        # Room enough for the least: everything fits, and no room is left
        # for one more connection.
        assert used <= memory
        assert used + each > memory
    assert shares.parser_memory <= PARSER_MEMORY
    assert shares.pair_parser_memory == (budget.PAIR_PARSER_MEMORY if tls else 0)


def test_the_parser_keeps_its_usual_bound_where_memory_allows() -> None:
    assert budget.plan(budget.DEFAULT_MEMORY, tls=False).parser_memory == (
        PARSER_MEMORY
    )
    assert budget.plan(budget.DEFAULT_TLS_MEMORY, tls=True).parser_memory == (
        PARSER_MEMORY
    )
    # Less memory: the parser's bound gives way first, down to what leaves
    # the fewest connections room.
    small = budget.plan(96 * 2**20, tls=False)
    assert small.parser_memory < PARSER_MEMORY
    assert small.connections == budget.MIN_CONNECTIONS


def test_default_budget_follows_the_cgroup_else_the_deployment(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path, "0::/\n", {"memory.max": "max\n"})
    assert budget.default_plan(tls=False, root=root) == (
        budget.plan(budget.DEFAULT_MEMORY, tls=False)
    )
    assert budget.default_plan(tls=True, root=root) == (
        budget.plan(budget.DEFAULT_TLS_MEMORY, tls=True)
    )
    (root / "sys/fs/cgroup/memory.max").write_text(f"{512 * 2**20}\n")
    assert budget.default_plan(tls=True, root=root) == (
        budget.plan(512 * 2**20, tls=True)
    )


def test_descriptors_keep_the_reserve_free() -> None:
    assert budget.descriptor_ceiling(1024) == 1024 - budget.FD_RESERVE
    assert budget.descriptor_ceiling(9) == 0


def test_the_default_memory_is_what_the_deployment_gives() -> None:
    deploy = REPO_ROOT / "deploy"
    assert pod_limit(deploy / "deployment.yaml") == budget.DEFAULT_MEMORY
    assert pod_limit(deploy / "tls" / "deployment-patch.yaml") == (
        budget.DEFAULT_TLS_MEMORY
    )


def test_readme_quotes_the_budget_the_code_makes() -> None:
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    section = readme[readme.index("### Connections and memory") :]
    MiB, KiB = 2**20, 2**10
    plain = budget.plan(budget.DEFAULT_MEMORY, tls=False)
    tls = budget.plan(budget.DEFAULT_TLS_MEMORY, tls=True)
    assert (
        f"the Deployment's ({budget.DEFAULT_MEMORY // MiB} MiB, "
        f"{budget.DEFAULT_TLS_MEMORY // MiB} MiB with `--tls-cert`" in section
    )
    assert f"less the server at rest ({budget.BASELINE // MiB} MiB)" in section
    assert f"({PARSER_MEMORY // MiB} MiB of address space for the config's" in section
    assert (
        f"{budget.PAIR_PARSER_MEMORY // MiB} MiB for the certificate pair's" in section
    )
    assert (
        f"({budget.PLAIN_CONNECTION / KiB:g} KiB plain, "
        f"{budget.TLS_CONNECTION // KiB} KiB over TLS;" in section
    )
    assert f"at least {budget.MIN_CONNECTIONS} connections" in section
    assert (
        f"`Serving at most {plain.connections} connections at once` with "
        f"{budget.DEFAULT_MEMORY // MiB} MiB, plain; {tls.connections} over TLS"
        in section
    )


@pytest.mark.parametrize(
    "limit", [[], ["--max-connections", "20"], ["--max-connections", "5000"]]
)
def test_the_site_holds_its_connections_to_the_budget_s_share(
    tmp_path: Path, limit: list[str]
) -> None:
    from twisted.application.service import IServiceCollection

    from twisted_demo.listening import WebService
    from twisted_demo.tap import Options, makeService

    config = tmp_path / "config.yaml"
    config.write_text("message: hi\n")
    options = Options()
    options.parseOptions(["--config", str(config), *limit])
    service = makeService(options)

    def web(parent: IServiceCollection) -> list[WebService]:
        found = []
        for child in parent:
            if isinstance(child, WebService):
                found.append(child)
            elif IServiceCollection.providedBy(child):
                found.extend(web(child))
        return found

    [served] = web(service)
    site = served.site
    shares = budget.default_plan(tls=False)
    # The memory share is the budget's, or a higher --max-connections's
    # worth of idle connections (docs/reliability.md).
    assert site.connection_cost == budget.PLAIN_CONNECTION
    assert site.connection_memory == budget.PLAIN_CONNECTION * max(
        shares.connections, site.max_connections
    )
