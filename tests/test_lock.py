"""requirements/lock-cpu.txt (what CI installs) agrees with pyproject.toml (what a library install asks for):
the same packages, every pinned version inside its declared range, no package in the lock that nothing
requires; and the environment the suite runs in is the lock's."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock-cpu.txt"
PROJECT = "visrl-bench (pyproject.toml)"
CONSTRAINTS = "-c constraints.txt"


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def _locked() -> dict[str, tuple[Version, set[str]]]:
    """name -> (pinned version, what it is there for), from pip-compile's `# via` annotations."""
    locked: dict[str, tuple[Version, set[str]]] = {}
    current = None
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip():  # a blank line ends a package's annotations (pip-compile's footer follows)
            current = None
        elif pin := re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()):
            current = canonicalize_name(pin[1])
            assert current not in locked, f"{LOCK}:{number}: {pin[1]} pinned twice"
            locked[current] = (Version(pin[2]), set())
        elif current and (via := re.fullmatch(r"#\s+(?:via\s+)?(\S.*)", line.strip())):
            if via[1] != "via":
                locked[current][1].add(via[1].strip())
        elif line.strip() and not line.startswith("#"):
            raise AssertionError(f"{LOCK}:{number}: not a `name==version` pin: {line!r}")
    return locked


def test_every_declared_dependency_is_locked_inside_its_range():
    declared, locked = _declared(), _locked()
    missing = sorted(set(declared) - set(locked))
    assert not missing, f"in pyproject.toml, not in {LOCK.name}: {missing} (run requirements/refresh-lock)"
    outside = {
        name: (str(req.specifier), str(locked[name][0]))
        for name, req in declared.items()
        if not req.specifier.contains(locked[name][0], prereleases=True)
    }
    assert not outside, f"locked versions outside pyproject.toml's ranges: {outside}"
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            assert pin.specifier.contains(locked[canonicalize_name(pin.name)][0]), f"constraints.txt: {line}"


def test_the_lock_holds_nothing_that_nothing_requires():
    declared, locked = _declared(), _locked()
    direct = {name for name, (_, via) in locked.items() if PROJECT in via}
    assert direct == set(declared), (
        f"the lock's direct dependencies differ from pyproject.toml: only in the lock "
        f"{sorted(direct - set(declared))}, only in pyproject.toml {sorted(set(declared) - direct)}"
    )
    for name, (_, via) in locked.items():
        parents = {canonicalize_name(v) for v in via if v not in (PROJECT, CONSTRAINTS)}
        assert via and parents <= set(locked), f"{name}: required by {sorted(via)}, which the lock lacks"


def test_the_suite_runs_on_the_locked_versions():
    """What CI tests is what the lock says; a locally upgraded package is named here, not found later. An
    install with another torch build (a GPU machine, from pyproject.toml's ranges) is not the lock's."""
    locked = _locked()
    if Version(version("torch")) != locked["torch"][0]:
        pytest.skip(f"torch {version('torch')} is not the lock's {locked['torch'][0]}: not a locked install")
    drifted = {}
    for name, (pinned, _) in locked.items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:  # the lmms-eval extra is optional
            continue
        if installed != pinned:
            drifted[name] = f"installed {installed}, locked {pinned}"
    assert not drifted, (
        f"installed versions differ from {LOCK.name}: {drifted}; install with "
        '`python -m pip install -c requirements/lock-cpu.txt -e ".[dev,lmms-eval]"`'
    )
