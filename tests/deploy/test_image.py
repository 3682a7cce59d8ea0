"""What deploy/Dockerfile puts in the image, read from the file (no Docker daemon needed):
the runtime dependencies from requirements.lock with their hashes, the wheel without
resolving anything, every package but the simulators. tests/integration/test_packaging.py
runs that same install outside Docker."""

from __future__ import annotations

import tomllib

from tests.deploy.tools import (
    DEPLOY,
    DOCKERFILE,
    REPO,
    copied,
    dockerfile_stages,
    in_build_context,
    runs,
)


def test_the_build_stage_copies_every_package() -> None:
    build, _ = dockerfile_stages()
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {pattern.rstrip("*") for pattern in find["packages"]["find"]["include"]}
    assert packages == {"gateway", "adapters", "cancellation"}
    assert copied(build) == packages | {"pyproject.toml", "README.md"}


def test_the_context_holds_only_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore  # everything out, then the exceptions
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    build, runtime = dockerfile_stages()
    assert allowed == copied(build) | copied(runtime)
    simulators = [
        *(REPO / "adapters" / "simulation").rglob("*.py"),
        *(REPO / "adapters").glob("*/simulator.py"),
    ]
    assert len(simulators) >= 4  # pip install . still ships them (the sandbox extra)
    for path in simulators:
        assert not in_build_context(str(path.relative_to(REPO))), path
    assert in_build_context("adapters/http/_send.py")


def test_the_runtime_installs_the_lock_with_hashes_then_the_wheel_alone() -> None:
    _, runtime = dockerfile_stages()
    (lock,) = copied(runtime)
    assert lock == "requirements.lock"
    assert (REPO / lock).is_file()
    pips = [command for command in runs(runtime) if command[:2] == ["pip", "install"]]
    locked, wheel = pips
    assert {"--require-hashes", "--no-deps"} <= set(locked)
    assert locked[locked.index("-r") + 1].endswith(f"/{lock}")
    assert "--no-deps" in wheel
    assert wheel[-1].endswith(".whl")
    assert ["pip", "check"] in runs(runtime)


def test_the_image_documents_that_it_has_no_sandbox() -> None:
    header = DOCKERFILE.read_text().split("\nFROM", 1)[0]
    assert "cancelgw sandbox" in header
    assert "[sandbox]" in header
