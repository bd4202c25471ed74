"""The machine and versions a run measured on, and the BENCHMARKS.md it writes."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.context import Context

ANALYSIS = Path(__file__).with_name("analysis.md")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


#: How long C{--quick} takes, which it reports only on its last line: 73 s
#: and 83 s in two runs on the 2-core machine of BENCHMARKS.md, the second
#: beside other work (1-minute load average 11 to 12).
QUICK_DURATION = "1 to 2 minutes"


#: The checkout the benchmarks run from.
ROOT = Path(__file__).resolve().parent.parent


def commit_of(root: Path = ROOT) -> str:
    """
    The commit checked out at C{root}, marked when files differ from it.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # New files not yet committed count too: the code run is not
            # the commit's.
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _libyaml() -> str:
    try:
        import yaml

        return "with libyaml" if getattr(yaml, "__with_libyaml__", False) else "pure"
    except ImportError:
        return "absent"


def environment(ctx: Context, load_description: str) -> list[tuple[str, str]]:
    """What the report says about where and how it was measured."""
    uname = platform.uname()
    return [
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} cores; memory {_memory()}"),
        ("OS", f"{uname.system} {uname.release} ({uname.machine})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        (
            "Packages",
            f"Twisted {_version('Twisted')}, Klein {_version('klein')},"
            f" PyYAML {_version('PyYAML')} ({_libyaml()}),"
            f" attrs {_version('attrs')},"
            f" prometheus-client {_version('prometheus-client')}",
        ),
        ("Commit", commit_of()),
        (
            "Bytecode",
            "written for the checkout's modules before the run, as pip writes"
            " it at install (bench/server.py, `write_bytecode`)",
        ),
        ("Load", load_description),
        (
            "CPUs",
            f"servers pinned to CPU {ctx.server_cpus}; load generator, update"
            f" writer and poller on CPU {ctx.client_cpus}"
            if ctx.server_cpus is not None
            else "not pinned: server, load generator and writer share all CPUs",
        ),
    ]


def markdown(ctx: Context, env: list[tuple[str, str]], elapsed: float) -> str:
    """The whole of BENCHMARKS.md."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m bench` on {when} in {elapsed:.0f} s. Every figure"
        " below comes from one run against a real `twistd -n configmapdemo`"
        " process on a free loopback port; ratios compare servers measured side"
        " by side in that run. The machine is shared with other work, so"
        " absolute figures vary from run to run; the ratios are what to compare.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "apt-get update && apt-get install -y wrk   # optional: without wrk"
        " the suite's own load generator is used",
        "pip install --require-hashes -r requirements/test.txt",
        "pip install --no-deps --no-build-isolation -e .",
        "python -m bench            # from the checkout root, writes"
        f" BENCHMARKS.md: {elapsed / 60:.0f} minutes this time",
        f"python -m bench --quick    # {QUICK_DURATION}; fails only on correctness",
        "```",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in env]
    lines += [
        "",
        "## Results",
        "",
        "| id | what | target | measured | result |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.id} | {r.what} | {r.target} | {r.measured} | {r.verdict} |"
        for r in ctx.rows
    ]
    lines += ["", "## Details", ""]
    lines += [f"- {d}" for d in ctx.details]
    if ctx.failures:
        lines += ["", "## Correctness failures", ""]
        lines += [f"- {f}" for f in ctx.failures]
    if ANALYSIS.exists():
        lines += ["", ANALYSIS.read_text().strip()]
    return "\n".join(lines) + "\n"
