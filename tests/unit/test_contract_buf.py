"""buf's checks of the contract (buf.yaml): STANDARD lint with only the waivers the fixed
names need, and no FILE-level breaking change against the released contract
(contract/released.json) or any committed version of protos/ the clone holds.
Copies with a field renumbered or renamed prove that the breaking check bites."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
PROTO = Path("cancellation") / "v1" / "gateway.proto"
RELEASED = ROOT / "contract" / "released.json"


def _buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Runs the project's buf; without it the test fails, saying how to get it."""
    if not BUF.is_file():
        pytest.fail(
            f"buf is not installed at {BUF.relative_to(ROOT)}: `make buf` or `make test` "
            "installs it with npm (Node.js and npm needed)"
        )
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """buf's --error-format json: one object per line."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _contract_versions() -> list[str]:
    """`<sha> <subject>` of every commit that changed protos/, newest first. A shallow clone's
    oldest commit counts too (git shows it adding every file): the oldest contract the clone
    holds is always one of them. A repository without any is a failure, below."""
    log = subprocess.run(
        ["git", "log", "--format=%H %s", "--", "protos"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return log.stdout.splitlines() or ["none: no commit holds protos/"]


def test_lint_passes_and_every_waiver_is_needed() -> None:
    result = _buf("lint", "--error-format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / "buf.yaml").read_text())
    waived = config["lint"].pop("ignore_only")
    unwaived = _buf("lint", "--config", json.dumps(config), "--error-format", "json")
    # Exactly the waived rules fire without the waivers: none is stale, none is missing.
    assert {finding["type"] for finding in _findings(unwaived)} == set(waived), unwaived.stderr
    assert all(paths == [f"protos/{PROTO.as_posix()}"] for paths in waived.values())


def test_no_breaking_change_against_the_released_contract() -> None:
    # The release's image, committed (`make contract-release`): the check holds in a shallow
    # clone too, where the history below may be one commit, the working tree's own.
    result = _buf("breaking", "protos", "--against", str(RELEASED))
    assert result.returncode == 0, f"against {RELEASED.name}:\n{result.stdout}{result.stderr}"


def test_the_released_contract_is_a_contract_buf_reads() -> None:
    image = json.loads(RELEASED.read_text())
    assert f"{PROTO.as_posix()}" in {file["name"] for file in image["file"]}


@pytest.mark.parametrize("version", _contract_versions(), ids=lambda version: version[:7])
def test_no_breaking_change_against_a_committed_contract(version: str) -> None:
    commit = version.partition(" ")[0]
    assert not commit.startswith("none"), version
    result = _buf("breaking", "protos", "--against", f".git#ref={commit},subdir=protos")
    assert result.returncode == 0, f"against {version}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("before", "after", "rule", "named"),
    [
        # Renumbered: to buf, field 10 is gone (and a field 15 came).
        ("string idempotency_key = 10;", "string idempotency_key = 15;", "FIELD_NO_DELETE",
         '"10" with name "idempotency_key"'),
        ("string connection = 12;", "string connection_name = 12;", "FIELD_SAME_NAME",
         '"connection" to "connection_name"'),
        ("OUTCOME_PARTIAL = 4;", "OUTCOME_SOME_FAILED = 4;", "ENUM_VALUE_SAME_NAME",
         '"OUTCOME_PARTIAL" to "OUTCOME_SOME_FAILED"'),
    ],
    ids=["renumbered field", "renamed field", "renamed enum value"],
)  # fmt: skip
def test_breaking_reports_a_changed_contract(
    tmp_path: Path, before: str, after: str, rule: str, named: str
) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy2(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / PROTO
    text = proto.read_text()
    assert text.count(before) == 1
    proto.write_text(text.replace(before, after))
    result = _buf(
        "breaking", "protos", "--against", str(ROOT / "protos"), "--error-format", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 100, result.stdout + result.stderr  # 100: breaking changes
    messages = {finding["type"]: finding["message"] for finding in _findings(result)}
    assert rule in messages, messages
    assert named in messages[rule], messages[rule]
