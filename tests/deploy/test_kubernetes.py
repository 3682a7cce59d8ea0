"""The Kubernetes files agree with the gateway: the ConfigMap is a config the real parser
accepts, and the ports, probes, secrets and paths the Deployment uses are the ones it names."""

from __future__ import annotations

import re
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters import REGISTRY
from gateway.config import Config, parse_config
from gateway.server import SERVICE_NAME
from tests.deploy.tools import DEPLOY, yaml_documents

K8S = DEPLOY / "k8s"
CONFIG_PATH = "/etc/cancelgw/gateway.toml"
TLS_MOUNT = "/etc/cancelgw/tls/"


def _resources() -> dict[str, dict[str, Any]]:
    """Every resource in deploy/k8s, by `Kind/name`."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml_documents(path):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


RESOURCES = _resources()
DEPLOYMENT = RESOURCES["Deployment/cancellation-gateway"]
POD = DEPLOYMENT["spec"]["template"]
CONTAINER = POD["spec"]["containers"][0]
PORTS = {port["name"]: port["containerPort"] for port in CONTAINER["ports"]}
CONFIG_TOML = RESOURCES["ConfigMap/cancellation-gateway"]["data"]["gateway.toml"]


def _secret_refs() -> dict[str, tuple[str, str]]:
    """Environment variable -> (Secret name, key), for every secretKeyRef of the container."""
    return {
        env["name"]: (ref["name"], ref["key"])
        for env in CONTAINER.get("env", ())
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }


def _env_names(table: dict[str, Any]) -> set[str]:
    """The variables a TOML table names through its `*_env` keys, at any depth."""
    names: set[str] = set()
    for key, value in table.items():
        if isinstance(value, dict):
            names |= _env_names(value)
        elif key.endswith("_env"):
            names.add(value)
    return names


@cache
def _config() -> Config:
    """The ConfigMap through the real parser: its TLS files are made here (trustme), at the
    paths it names as the Deployment would mount them."""
    data = tomllib.loads(CONFIG_TOML)
    dummy = {
        name: "redis://redis:6379/0" if name.endswith("REDIS_URL") else f"dummy-{name.lower()}"
        for name in _env_names(data)
    }
    folder = Path(tempfile.mkdtemp())
    issued = trustme.CA().issue_cert("cancellation-gateway")
    tls = data["server"]["tls"]
    blobs = {"cert_file": issued.cert_chain_pems[0], "key_file": issued.private_key_pem}
    for key, blob in blobs.items():
        assert tls[key].startswith(TLS_MOUNT), "the TLS files come from the mounted Secret"
        made = folder / Path(tls[key]).name
        blob.write_to_path(str(made))
        tls[key] = str(made)
    return parse_config(data, dummy, REGISTRY.option_parsers, REGISTRY.job_kinds)


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_every_file_parses_into_named_resources() -> None:
    kustomized = yaml_documents(K8S / "kustomization.yaml")[0]["resources"]
    assert all((K8S / name).is_file() for name in kustomized)
    expected = {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"}
    assert {kind.partition("/")[0] for kind in RESOURCES} >= expected | {"Secret"}
    applied = {doc["kind"] for name in kustomized for doc in yaml_documents(K8S / name)}
    assert applied == expected  # Secret templates are never applied from the repo


def test_configmap_is_a_config_the_gateway_accepts() -> None:
    config = _config()
    assert config.server.listen.startswith("0.0.0.0:")  # probes and the Service reach the pod IP
    assert config.server.metrics_listen.startswith("0.0.0.0:")
    assert set(config.connections) >= {"kiiex-main"}


def test_ports_and_probes_match_the_config() -> None:
    server = _config().server
    assert {
        "grpc": _port(server.listen),
        "metrics": _port(server.metrics_listen),
        "health": _port(server.health_listen),
    } == PORTS
    probes = {name: CONTAINER[name]["grpc"] for name in CONTAINER if name.endswith("Probe")}
    assert set(probes) == {"livenessProbe", "readinessProbe", "startupProbe"}
    # kubelet's gRPC probes speak no TLS: they go to the plaintext health-only port.
    assert {probe["port"] for probe in probes.values()} == {PORTS["health"]}
    # Readiness asks for the gateway's own service, which goes NOT_SERVING when draining.
    assert probes["readinessProbe"]["service"] == SERVICE_NAME
    annotations = POD["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == PORTS["metrics"]


def test_every_secret_the_config_names_comes_from_a_secret_ref() -> None:
    refs = _secret_refs()
    assert set(refs) == _env_names(tomllib.loads(CONFIG_TOML))
    plain = [env["name"] for env in CONTAINER.get("env", ()) if "value" in env]
    assert not set(plain) & set(refs), "credentials never sit in the manifest"
    secrets = {
        (name.partition("/")[2], key)
        for name, resource in RESOURCES.items()
        if name.startswith("Secret/")
        for key in resource["stringData"]
    }
    assert set(refs.values()) <= secrets, "secret.example.yaml documents every key used"


def test_drain_fits_in_the_termination_grace_period() -> None:
    pre_stop = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(pre_stop[1]) + _config().server.shutdown_grace
    assert POD["spec"]["terminationGracePeriodSeconds"] > drain


def test_the_grpc_port_is_tls_and_callers_are_required() -> None:
    server = _config().server
    assert server.tls is not None
    assert not server.allow_unauthenticated
    assert _config().callers
    tls_mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "tls")
    volume = next(v for v in POD["spec"]["volumes"] if v["name"] == "tls")
    assert tls_mount["mountPath"] == TLS_MOUNT.rstrip("/")
    assert volume["secret"]["secretName"] == "cancellation-gateway-tls"
    assert "Secret/cancellation-gateway-tls" in RESOURCES


def test_config_file_is_mounted_where_the_image_reads_it() -> None:
    mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in POD["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "cancellation-gateway"
    assert str(Path(mount["mountPath"]) / "gateway.toml") == CONFIG_PATH
    assert CONTAINER["args"] == ["serve", "--config", CONFIG_PATH]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f'CMD ["serve", "--config", "{CONFIG_PATH}"]' in dockerfile


def test_image_exposes_the_ports_and_runs_as_the_pods_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)
    assert exposed is not None
    assert {int(port) for port in exposed.group(1).split()} == set(PORTS.values())
    user = re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    assert user == [str(POD["spec"]["securityContext"]["runAsUser"])]
    assert POD["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    "name", ["Service/cancellation-gateway", "Service/cancellation-gateway-headless"]
)
def test_services_select_the_pods_and_target_named_ports(name: str) -> None:
    spec = RESOURCES[name]["spec"]
    assert spec["selector"].items() <= POD["metadata"]["labels"].items()
    assert {port["targetPort"] for port in spec["ports"]} <= set(PORTS)


def test_replicas_survive_a_voluntary_disruption() -> None:
    pdb = RESOURCES["PodDisruptionBudget/cancellation-gateway"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= POD["metadata"]["labels"].items()
    assert DEPLOYMENT["spec"]["replicas"] == 3
    assert DEPLOYMENT["spec"]["replicas"] - pdb["maxUnavailable"] >= 2
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_prometheus_scrapes_the_metrics_port_under_the_alerts_job() -> None:
    prometheus = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    job = prometheus["scrape_configs"][0]
    assert job["job_name"] == "cancellation-gateway"
    port_rule = next(
        rule
        for rule in job["relabel_configs"]
        if rule["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    )
    assert port_rule["regex"] in PORTS
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert 'job="cancellation-gateway"' in alerts
    assert all((DEPLOY / "prometheus" / f).is_file() for f in prometheus["rule_files"])
