"""The lock files (`make lock`) are in step with pyproject.toml, and this suite runs on them:
requirements-dev.lock pins what the venv holds, requirements.lock (the image's) pins exactly
what the runtime dependencies need, each file with hashes. Offline: the closure of the
requirements is read from the installed packages' metadata."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.tools import REPO

RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(line) for line in PROJECT["dependencies"]]
EXTRAS = {
    extra: [Requirement(line) for line in lines]
    for extra, lines in PROJECT["optional-dependencies"].items()
}
DEV_SET = [*RUNTIME, *EXTRAS["dev"], *EXTRAS["sandbox"]]


@dataclass(frozen=True)
class Pin:
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]


def _pins(path: Path) -> dict[str, Pin]:
    """name -> its pin, from a `uv pip compile --generate-hashes` file."""
    pins: dict[str, Pin] = {}
    entries = re.split(r"\n(?=\S)", path.read_text())
    for entry in entries:
        if entry.startswith("#"):
            continue
        head, *rest = entry.split("\n")
        found = re.fullmatch(r"([\w.-]+)==(\S+?)(?: ; (.+?))? \\", head)
        assert found is not None, f"{path.name}: not a hashed pin: {head!r}"
        hashes = tuple(re.findall(r"--hash=(sha256:[0-9a-f]{64})", "\n".join(rest)))
        marker = Marker(found.group(3)) if found.group(3) else None
        pins[canonicalize_name(found.group(1))] = Pin(found.group(2), marker, hashes)
    return pins


def _applies(marker: Marker | None, extras: Iterable[str] = ()) -> bool:
    """Whether a marker holds on this machine, for any of the requested extras."""
    return marker is None or any(marker.evaluate({"extra": e}) for e in ("", *extras))


def _closure(requirements: Iterable[Requirement]) -> dict[str, str]:
    """name -> installed version of everything `requirements` pull in on this machine."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(requirement, frozenset[str]()) for requirement in requirements]
    while todo:
        requirement, parent_extras = todo.pop()
        if not _applies(requirement.marker, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        installed = metadata.distribution(name)
        found[name] = installed.version
        for line in installed.requires or ():
            todo.append((Requirement(line), frozenset(requirement.extras)))
    return found


def _here(pins: dict[str, Pin]) -> dict[str, str]:
    """The pins that apply on this machine (the locks are universal)."""
    return {name: pin.version for name, pin in pins.items() if _applies(pin.marker)}


def test_every_pin_has_hashes() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        pins = _pins(path)
        assert pins, f"{path.name} pins nothing"
        assert all(pin.hashes for pin in pins.values()), f"{path.name}: a pin without --hash"


def test_pyproject_requirements_are_pinned_within_their_ranges() -> None:
    for path, requirements in ((RUNTIME_LOCK, RUNTIME), (DEV_LOCK, DEV_SET)):
        pins = _pins(path)
        for requirement in requirements:
            pin = pins.get(canonicalize_name(requirement.name))
            assert pin is not None, f"{requirement} is not in {path.name}: make lock"
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{path.name} pins {requirement.name}=={pin.version}, outside {requirement}: "
                "make lock"
            )


def test_the_runtime_lock_is_exactly_what_the_runtime_needs() -> None:
    # Nothing missing (pip --require-hashes would refuse the image's install) and nothing
    # extra (a dropped dependency, or the sandbox's web stack, would ship in the image).
    assert _here(_pins(RUNTIME_LOCK)) == _closure(RUNTIME), "requirements.lock is stale: make lock"
    assert not {"starlette", "uvicorn", "pytest"} & set(_pins(RUNTIME_LOCK))


def test_the_dev_lock_is_exactly_what_the_suite_runs_on() -> None:
    # Equal on this machine: the venv holds the locked versions of everything pyproject asks
    # for, and the lock holds nothing more.
    assert _here(_pins(DEV_LOCK)) == _closure(DEV_SET), (
        "the venv and requirements-dev.lock differ: make lock, then make (reinstalls)"
    )


def test_the_image_gets_the_versions_the_suite_ran_on() -> None:
    runtime, dev = _pins(RUNTIME_LOCK), _pins(DEV_LOCK)
    assert set(runtime) <= set(dev)
    assert {name: runtime[name] for name in runtime} == {name: dev[name] for name in runtime}
