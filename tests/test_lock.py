"""
The dependency locks in C{requirements/} agree with C{setup.py}'s ranges,
so that what CI, the README and the image install is what the package
declares.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
LOCKS = {
    "service": ROOT / "requirements" / "service.txt",
    "test": ROOT / "requirements" / "test.txt",
}


def declared() -> dict[str, list[Requirement]]:
    """
    C{setup.py}'s C{install_requires} (as C{"service"}) and that plus
    C{extras_require["test"]} (as C{"test"}), read from its source without
    running it.
    """
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    keywords = {
        k.arg: ast.literal_eval(k.value)
        for k in call.keywords
        if k.arg in ("install_requires", "extras_require")
    }
    service = [Requirement(r) for r in keywords["install_requires"]]
    test = [Requirement(r) for r in keywords["extras_require"]["test"]]
    return {"service": service, "test": service + test}


def pins(lock: Path) -> dict[str, Version]:
    """
    The exact version of each package in C{lock}, by canonical name.
    """
    found: dict[str, Version] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_declared_dependency_is_locked_inside_its_range(lock: str) -> None:
    locked = pins(LOCKS[lock])
    for requirement in declared()[lock]:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is missing from {LOCKS[lock].name}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{LOCKS[lock].name} pins {name}=={locked[name]}, outside {requirement}"
        )


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_carries_hashes(lock: str) -> None:
    text = LOCKS[lock].read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    for block in blocks:
        if block.startswith("#"):
            continue
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_service_lock_pins_the_same_versions_as_the_test_lock() -> None:
    service, test = pins(LOCKS["service"]), pins(LOCKS["test"])
    assert {name: test.get(name) for name in service} == service


def _setup_keyword(name: str) -> object:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}=")


def test_setup_states_the_one_python_that_is_tested() -> None:
    # The version the locks are compiled for, the image's base is, and this
    # suite runs on: the one setup.py names.
    compile_script = (ROOT / "requirements" / "compile").read_text()
    [locked] = re.findall(r"--python-version (\d+\.\d+)", compile_script)
    [base] = set(
        re.findall(r"^FROM python:(\d+\.\d+)-", (ROOT / "Dockerfile").read_text(), re.M)
    )
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert locked == base == running
    assert _setup_keyword("python_requires") == f">={locked}"
    classifiers = _setup_keyword("classifiers")
    assert isinstance(classifiers, list)
    versions = [c for c in classifiers if re.fullmatch(r".* :: Python :: 3\.\d+", c)]
    assert versions == [f"Programming Language :: Python :: {locked}"]
