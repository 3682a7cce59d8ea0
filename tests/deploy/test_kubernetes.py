"""The Kubernetes files agree with the gateway and with each other, as each overlay renders
them (`kubectl kustomize`): the ConfigMap is a config the real parser accepts, and the ports,
probes, labels, secrets, paths and policies the resources use are the ones it names."""

from __future__ import annotations

import importlib.util
import re
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from adapters.installed import REGISTRY
from gateway.config import Config, parse_config, with_overrides
from gateway.rpc.servicer import SERVICE_NAME
from tests.deploy.tools import ALERTS, DEPLOY, REPO, kustomize, yaml_documents

K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = ("dev", "prod")
CONFIG_PATH = "/etc/cancelgw/gateway.toml"
NAME = "cancellation-gateway"
CLIENT_LABEL = {"cancellation-gateway/client": "true"}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
APPLIED = {
    "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
    "ServiceMonitor", "PrometheusRule", "Role", "RoleBinding",
}  # fmt: skip


class Rendered:
    """One overlay as `kubectl apply -k` would apply it."""

    def __init__(self, overlay: str) -> None:
        self.overlay = overlay
        self.resources = {
            f"{doc['kind']}/{doc['metadata']['name']}": doc
            for doc in kustomize(K8S / "overlays" / overlay)
        }
        self.deployment = self.resources[f"Deployment/{NAME}"]
        self.pod = self.deployment["spec"]["template"]
        self.labels: dict[str, str] = self.pod["metadata"]["labels"]
        self.container = self.pod["spec"]["containers"][0]
        self.ports = {port["name"]: port["containerPort"] for port in self.container["ports"]}
        self.config_toml: str = self.resources[f"ConfigMap/{NAME}"]["data"]["gateway.toml"]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for name, doc in self.resources.items() if name.startswith(f"{kind}/")]

    def one(self, kind: str) -> dict[str, Any]:
        (doc,) = self.kind(kind)
        return doc

    def mount(self, volume: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The container's mount of `volume`, and the volume."""
        mount = next(m for m in self.container["volumeMounts"] if m["name"] == volume)
        source = next(v for v in self.pod["spec"]["volumes"] if v["name"] == volume)
        return mount, source

    def plain_env(self) -> dict[str, str]:
        env = self.container.get("env", ())
        return {variable["name"]: variable["value"] for variable in env if "value" in variable}

    def secret_refs(self) -> dict[str, tuple[str, str]]:
        """Environment variable -> (Secret name, key), for every secretKeyRef."""
        return {
            env["name"]: (ref["name"], ref["key"])
            for env in self.container.get("env", ())
            if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
        }

    def secret_files(self) -> dict[str, tuple[str, bool]]:
        """Mount path -> (Secret name, optional), for every mounted Secret."""
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        return {
            mounts[volume["name"]]: (
                volume["secret"]["secretName"],
                volume["secret"].get("optional", False),
            )
            for volume in self.pod["spec"]["volumes"]
            if "secret" in volume and volume["name"] in mounts
        }


@cache
def rendered(overlay: str) -> Rendered:
    return Rendered(overlay)


@pytest.fixture(params=OVERLAYS)
def k8s(request: pytest.FixtureRequest) -> Rendered:
    return rendered(request.param)


def _example_secrets() -> dict[str, dict[str, Any]]:
    """secret.example.yaml, by name: the Secrets an operator creates (never applied)."""
    return {doc["metadata"]["name"]: doc for doc in yaml_documents(BASE / "secret.example.yaml")}


def _file_keys(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every secret `*_file` key of a TOML table (dotted), at any depth, and the file."""
    found: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            found |= _file_keys(value, f"{prefix}{key}.")
        elif key.endswith("_file") and key not in ("cert_file", "key_file", "client_ca_file"):
            found[f"{prefix}{key}"] = value
    return found


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
def _config(overlay: str) -> Config:
    """The overlay's ConfigMap through the real parser, with the container's plain env
    overrides applied as `cancelgw serve` applies them. Its TLS files are made here
    (trustme), named as the mounted Secret names them."""
    k8s = rendered(overlay)
    data = tomllib.loads(k8s.config_toml)
    dummy = {
        name: "redis://redis:6379/0" if name.endswith("REDIS_URL") else f"dummy-{name.lower()}"
        for name in _env_names(data)
    }
    folder = Path(tempfile.mkdtemp())
    for dotted, path in _file_keys(data).items():  # each secret file, where it is mounted
        made = folder / path.strip("/").replace("/", "_")
        made.write_text("redis://redis:6379/0\n" if "redis" in dotted else f"dummy-{made.name}\n")
        *tables, key = dotted.split(".")
        table = data
        for name in tables:
            table = table[name]
        table[key] = str(made)
    issued = trustme.CA().issue_cert(NAME)
    tls = data["server"]["tls"]
    blobs = {"cert_file": issued.cert_chain_pems[0], "key_file": issued.private_key_pem}
    for key, blob in blobs.items():
        made = folder / Path(tls[key]).name
        blob.write_to_path(str(made))
        tls[key] = str(made)
    environ = {**dummy, **k8s.plain_env()}
    return parse_config(with_overrides(data, environ), environ, REGISTRY.option_schemas,
                        REGISTRY.job_kinds)  # fmt: skip


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def _port_names(service: dict[str, Any]) -> set[str]:
    return {port["name"] for port in service["spec"]["ports"]}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", K8S / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_base_lists_its_files_and_the_overlays_apply_them(k8s: Rendered) -> None:
    listed = yaml_documents(BASE / "kustomization.yaml")[0]["resources"]
    on_disk = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk - {"secret.example.yaml"}
    # Dev leaves the alert rules out: they page.
    expected = APPLIED - {"PrometheusRule"} if k8s.overlay == "dev" else APPLIED
    assert {name.partition("/")[0] for name in k8s.resources} == expected
    required = {name for name, optional in k8s.secret_files().values() if not optional}
    assert set(_example_secrets()) >= required


def test_configmap_is_a_config_the_gateway_accepts(k8s: Rendered) -> None:
    config = _config(k8s.overlay)
    assert config.server.listen.startswith("0.0.0.0:")  # probes and the Service reach the pod IP
    assert config.server.metrics_listen.startswith("0.0.0.0:")
    assert set(config.connections) >= {"kiiex-main"}


def test_dev_logs_debug_through_the_override_and_prod_info() -> None:
    assert rendered("dev").plain_env() == {"CANCELGW_LOG_LEVEL": "debug"}
    assert _config("dev").server.log_level == "DEBUG"
    assert "CANCELGW_LOG_LEVEL" not in rendered("prod").plain_env()
    assert _config("prod").server.log_level == "INFO"


def test_ports_and_probes_match_the_config(k8s: Rendered) -> None:
    server = _config(k8s.overlay).server
    assert {
        "grpc": _port(server.listen),
        "metrics": _port(server.metrics_listen),
        "health": _port(server.health_listen),
    } == k8s.ports
    probes = {name: k8s.container[name]["grpc"] for name in k8s.container if name.endswith("Probe")}
    assert set(probes) == {"livenessProbe", "readinessProbe", "startupProbe"}
    # kubelet's gRPC probes speak no TLS: they go to the plaintext health-only port.
    assert {probe["port"] for probe in probes.values()} == {k8s.ports["health"]}
    # Readiness asks for the gateway's own service, which goes NOT_SERVING when draining.
    assert probes["readinessProbe"]["service"] == SERVICE_NAME
    annotations = k8s.pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == k8s.ports["metrics"]


def test_every_secret_the_config_names_is_a_file_of_a_mounted_secret(k8s: Rendered) -> None:
    files = _file_keys(tomllib.loads(k8s.config_toml))
    assert {"idempotency.redis_url_file"} <= set(files)
    assert not _env_names(tomllib.loads(k8s.config_toml)), "secrets come from files"
    assert not k8s.secret_refs(), "and never through the environment"
    mounted = k8s.secret_files()
    examples = _example_secrets()
    for key, path in files.items():
        folder, _, name = path.rpartition("/")
        assert folder in mounted, f"{key}: {folder} is no mounted Secret"
        secret, optional = mounted[folder]
        assert not optional, f"{key}: a required secret from an optional volume"
        assert name in examples[secret]["stringData"], "secret.example.yaml documents it"
    modes = {
        v["name"]: v["secret"].get("defaultMode")
        for v in k8s.pod["spec"]["volumes"]
        if "secret" in v
    }
    assert set(modes.values()) <= {0o440, None}  # the tls volume keeps the default
    assert k8s.pod["spec"]["securityContext"]["fsGroup"] == 10001


def test_drain_fits_in_the_termination_grace_period(k8s: Rendered) -> None:
    pre_stop = k8s.container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(pre_stop[1]) + _config(k8s.overlay).server.shutdown_grace
    assert k8s.pod["spec"]["terminationGracePeriodSeconds"] > drain


def test_the_grpc_port_is_tls_from_the_mounted_secret(k8s: Rendered) -> None:
    server = _config(k8s.overlay).server
    assert server.tls.enabled
    assert not server.allow_unauthenticated
    assert _config(k8s.overlay).callers
    mount, volume = k8s.mount("tls")
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == f"{NAME}-tls"
    tls = tomllib.loads(k8s.config_toml)["server"]["tls"]
    # The files gateway.toml names are the kubernetes.io/tls keys, in the mounted folder.
    assert tls["cert_file"] == f"{mount['mountPath']}/tls.crt"
    assert tls["key_file"] == f"{mount['mountPath']}/tls.key"
    assert tls["client_ca_file"] in ("", f"{mount['mountPath']}/ca.crt")
    example = _example_secrets()[f"{NAME}-tls"]
    assert example["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key"} <= set(example["stringData"])


def test_config_file_is_mounted_where_the_image_reads_it(k8s: Rendered) -> None:
    mount, volume = k8s.mount("config")
    assert volume["configMap"]["name"] == NAME
    assert mount["readOnly"] is True
    assert str(Path(mount["mountPath"]) / "gateway.toml") == CONFIG_PATH
    assert k8s.container["args"] == ["serve", "--config", CONFIG_PATH]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f'CMD ["serve", "--config", "{CONFIG_PATH}"]' in dockerfile


def test_no_overlay_runs_the_sandbox(k8s: Rendered) -> None:
    command = [*k8s.container.get("command", ()), *k8s.container["args"]]
    assert command[0] == "serve"
    assert not {"sandbox", "simulators"} & {word for part in command for word in part.split()}
    assert "simulators" not in str(k8s.resources)


def test_image_exposes_the_ports_and_runs_as_the_pods_user(k8s: Rendered) -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)
    assert exposed is not None
    assert {int(port) for port in exposed.group(1).split()} == set(k8s.ports.values())
    user = re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    assert user == [str(k8s.pod["spec"]["securityContext"]["runAsUser"])]
    assert k8s.pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_selectors_pick_the_gateways_pods(k8s: Rendered) -> None:
    assert _selects(k8s.deployment["spec"]["selector"]["matchLabels"], k8s.labels)
    assert _selects(k8s.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], k8s.labels)
    assert _selects(k8s.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"], k8s.labels)
    services = k8s.kind("Service")
    assert {service["metadata"]["name"] for service in services} == {NAME, f"{NAME}-headless"}
    for service in services:
        assert _selects(service["spec"]["selector"], k8s.labels)
        for port in service["spec"]["ports"]:
            # One name per port everywhere: Service port, target and container port.
            assert port["name"] == port["targetPort"]
            assert port["targetPort"] in k8s.ports


def test_the_service_monitor_scrapes_each_pod_once_under_the_alerts_job(k8s: Rendered) -> None:
    monitor = k8s.one("ServiceMonitor")["spec"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["port"] in k8s.ports
    assert endpoint["path"] == "/metrics"
    selector = monitor["selector"]["matchLabels"]
    selected = [s for s in k8s.kind("Service") if _selects(selector, s["metadata"]["labels"])]
    # The operator makes a target per selected Service endpoint with that port name: one
    # Service with it, or every pod would be scraped twice.
    (scraped,) = [s for s in selected if endpoint["port"] in _port_names(s)]
    job = scraped["metadata"]["labels"][monitor["jobLabel"]]
    assert f'job="{job}"' in ALERTS.read_text()
    prometheus = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    assert job == prometheus["scrape_configs"][0]["job_name"]
    assert endpoint["interval"] == prometheus["global"]["scrape_interval"]


def test_the_prometheus_rule_is_alerts_yml_in_prod_only() -> None:
    groups = rendered("prod").one("PrometheusRule")["spec"]["groups"]
    assert groups == yaml_documents(ALERTS)[0]["groups"]
    assert rendered("dev").kind("PrometheusRule") == []


def test_the_committed_prometheus_rule_is_what_make_deploy_rules_writes() -> None:
    generator = _generator()
    fresh = generator.render(ALERTS.read_text())
    assert (BASE / "prometheusrule.yaml").read_text() == fresh, (
        "deploy/k8s/base/prometheusrule.yaml is stale: make deploy-rules"
    )


def test_network_policy_lets_in_callers_and_prometheus_only(k8s: Rendered) -> None:
    policy = k8s.one("NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    opened = {}
    for rule in policy["ingress"]:
        (port,) = rule["ports"]
        assert port["port"] in k8s.ports, "ingress ports use the container's port names"
        opened[port["port"]] = rule["from"]
    # No rule for the health port: the kubelet's probes come from the node, always let in.
    assert set(opened) == {"grpc", "metrics"}
    callers = {"namespaceSelector": {}, "podSelector": {"matchLabels": CLIENT_LABEL}}
    assert opened["grpc"] == [callers]  # any namespace: the callers are other teams' services
    assert opened["metrics"] == [{"namespaceSelector": {"matchLabels": MONITORING}}]


def test_network_policy_lets_out_dns_the_upstreams_and_redis(k8s: Rendered) -> None:
    egress = k8s.one("NetworkPolicy")["spec"]["egress"]
    allowed = {(p["protocol"], p["port"]) for rule in egress for p in rule["ports"]}
    dns = next(rule for rule in egress if {"protocol": "UDP", "port": 53} in rule["ports"])
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    connections = tomllib.loads(k8s.config_toml)["connections"].values()
    upstreams = {urlsplit(connection["base_url"]) for connection in connections}
    assert {url.scheme for url in upstreams} == {"https"}
    redis = urlsplit(_example_secrets()[f"{NAME}-redis"]["stringData"]["url"])
    expected = {("UDP", 53), ("TCP", 53), ("TCP", redis.port), ("TCP", 3128)}
    tracing = tomllib.loads(k8s.config_toml).get("tracing", {})
    if tracing.get("exporter") == "otlp":  # off today; a collector would need its port open
        collector = urlsplit(tracing["endpoint"])
        expected.add(("TCP", collector.port or {"http": 80, "https": 443}[collector.scheme]))
    assert allowed == expected | {("TCP", url.port or 443) for url in upstreams}
    public = next(rule for rule in egress if {"protocol": "TCP", "port": 443} in rule["ports"])
    assert "10.0.0.0/8" in public["to"][0]["ipBlock"]["except"]  # not into the cluster
    proxy = next(rule for rule in egress if {"protocol": "TCP", "port": 3128} in rule["ports"])
    assert {block["ipBlock"]["cidr"] for block in proxy["to"]} == {
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"
    }  # fmt: skip


def test_prod_runs_three_sized_replicas_of_the_released_image() -> None:
    prod = rendered("prod")
    assert prod.deployment["spec"]["replicas"] == 3
    assert prod.deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = prod.one("PodDisruptionBudget")["spec"]
    assert "maxUnavailable" not in pdb
    assert 2 <= pdb["minAvailable"] < prod.deployment["spec"]["replicas"]  # a drain can proceed
    resources = prod.container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    name, _, tag = prod.container["image"].rpartition(":")
    assert (name.rpartition("/")[2], tag) == (NAME, version)  # the registry is the team's


def test_dev_runs_one_replica_of_the_dev_image() -> None:
    dev = rendered("dev")
    assert dev.deployment["spec"]["replicas"] == 1
    assert dev.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1  # a drain can evict it
    assert dev.container["image"] == f"{NAME}:dev"
    assert "memory" in dev.container["resources"]["limits"]


def test_prometheus_scrapes_the_metrics_port_under_the_alerts_job() -> None:
    prometheus = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    job = prometheus["scrape_configs"][0]
    assert job["job_name"] == NAME
    port_rule = next(
        rule
        for rule in job["relabel_configs"]
        if rule["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    )
    assert port_rule["regex"] in rendered("prod").ports
    alerts = ALERTS.read_text()
    assert f'job="{NAME}"' in alerts
    assert all((DEPLOY / "prometheus" / f).is_file() for f in prometheus["rule_files"])


def test_the_monitoring_prometheus_may_read_the_targets_and_the_pod_holds_no_token(
    k8s: Rendered,
) -> None:
    (binding,) = k8s.kind("RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    ]
    (role,) = k8s.kind("Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    readable = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"services", "endpoints", "endpointslices", "pods"} <= readable
    assert all(set(rule["verbs"]) == {"get", "list", "watch"} for rule in role["rules"])
    assert k8s.pod["spec"]["automountServiceAccountToken"] is False
