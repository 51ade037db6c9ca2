"""The Helm chart: linted and rendered by Helm's own Go SDK, validated against Kubernetes'
schemas, and checked for what the README promises (every setting, safe defaults)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from app.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpu-monitor-api"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schema.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
RELEASE, NAMESPACE = "gpu", "monitoring"
FULLNAME = "gpu-gpu-monitor-api"

# Every optional part switched on, and every credential from a Secret.
EVERYTHING: dict[str, Any] = {
    "metrics": {"port": 9100, "serviceMonitor": {
        "enabled": True, "labels": {"release": "kube-prometheus-stack"},
        "metricRelabelings": [{"action": "drop", "regex": "gpu_monitor_http_request_.*",
                               "sourceLabels": ["__name__"]}]}},
    "ingress": {"enabled": True, "className": "nginx",
                "tls": [{"hosts": ["gpu-monitor.example.com"], "secretName": "gpu-tls"}]},
    "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    "mappingFile": "dialects:\n  - name: mine\n",
    "prometheus": {"auth": {"bearerToken": {"secretName": "prom-token"}},
                   "tls": {"ca": {"secretName": "prom-ca"},
                           "clientCert": {"secretName": "prom-client"}},
                   "headersSecret": {"secretName": "prom-headers"}},
    "config": {"NODE_LABEL": "kubernetes_node", "CACHE_TTL": "5",
               "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY": "false"},
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"a": "b"}}}]}


def render(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """`helm template` of the chart: every manifest, parsed."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=dict(values or {}), name=RELEASE, namespace=NAMESPACE,
                                is_install=True)
    documents = []
    for name, text in sorted(rendered.items()):
        if name.endswith(".txt"):
            continue  # NOTES.txt
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in documents:
        assert doc["kind"] not in kinds, f"two {doc['kind']}s"
        kinds[doc["kind"]] = doc
    return kinds


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (api,) = by_kind(documents)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return api


def env_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's environment: the ConfigMap's data, then its own env entries."""
    env: dict[str, Any] = dict(by_kind(documents)["ConfigMap"]["data"])
    env.pop("mapping.yaml", None)
    for item in container(documents)["env"]:
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def test_helm_lint_finds_nothing_to_fix() -> None:
    for values in ({}, EVERYTHING):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == []
        # Severity 1 is information ("icon is recommended"); 2 and 3 would fail the lint.
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(
        values: dict[str, Any], kube: str) -> None:
    documents = render(values)
    for doc in documents:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in kubernetes-validate; checked below by hand
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_defaults_render_a_hardened_deployment_service_and_budget() -> None:
    documents = render()
    kinds = by_kind(documents)
    assert set(kinds) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
                          "ServiceAccount"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    api = container(documents)
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert api["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert api["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/api/livez", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/api/healthz", "port": "http"}
    assert api["resources"]["requests"]["cpu"] and api["resources"]["limits"]["memory"]
    # The only writable place is the in-memory volume, and the metric files live there.
    (mount,) = api["volumeMounts"]
    assert mount == {"name": "tmp", "mountPath": "/tmp"}
    assert env_of(documents)["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert pod["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert [p["name"] for p in api["ports"]] == ["http"]
    assert kinds["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"] == kinds["Deployment"]["spec"][
        "selector"]


def test_default_environment_is_a_configuration_the_service_accepts() -> None:
    env = {k: v for k, v in env_of(render()).items() if isinstance(v, str)}
    config = load_config(env)
    assert config.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert config.log_format == "json" and config.port == 8080 and config.metrics_port == 0


def test_everything_on_renders_monitor_ingress_policy_and_secrets() -> None:
    documents = render(EVERYTHING)
    kinds = by_kind(documents)
    monitor = kinds["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == kinds["Service"]["spec"]["selector"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert {p["name"]: p["port"] for p in kinds["Service"]["spec"]["ports"]} == {
        "http": 8080, "metrics": 9100}
    # The Ingress reaches the API port only: /metrics stays off it.
    (rule,) = kinds["Ingress"]["spec"]["rules"]
    assert {p["backend"]["service"]["port"]["name"] for p in rule["http"]["paths"]} == {"http"}
    policy = kinds["NetworkPolicy"]["spec"]
    assert [rule["ports"][0]["port"] for rule in policy["ingress"]] == ["http", "metrics"]
    env = env_of(documents)
    assert env["METRICS_PORT"] == "9100"
    assert env["PROMETHEUS_BEARER_TOKEN_FILE"] == "/etc/gpu-monitor-api/token/token"
    assert env["PROMETHEUS_HEADERS"] == {"secretKeyRef": {"name": "prom-headers",
                                                          "key": "headers"}}
    mounts = {m["mountPath"] for m in container(documents)["volumeMounts"]}
    for name in ("PROMETHEUS_BEARER_TOKEN_FILE", "PROMETHEUS_CA_FILE",
                 "PROMETHEUS_CLIENT_CERT", "PROMETHEUS_CLIENT_KEY", "METRICS_MAPPING_FILE"):
        assert str(Path(env[name]).parent) in mounts, name


def readme_settings() -> set[str]:
    """Every environment variable the README's Configuration section documents."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = {name for line in table.splitlines() if line.startswith("| `")
             for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    credentials = readme.split("Credentials for a hardened Prometheus:", 1)[1].split("\n\n")[0]
    return names | set(re.findall(r"`(PROMETHEUS_[A-Z_]+)`", credentials))


# Credentials are only read from mounted Secret files, never put in the environment.
AS_FILES = {"PROMETHEUS_BEARER_TOKEN": "PROMETHEUS_BEARER_TOKEN_FILE",
            "PROMETHEUS_PASSWORD": "PROMETHEUS_PASSWORD_FILE"}


def test_every_setting_in_the_readme_has_a_value_in_the_chart() -> None:
    settings = readme_settings()
    assert {"PROMETHEUS_URL", "CACHE_TTL", "PROMETHEUS_CA_FILE", "LOG_FORMAT"} <= settings
    basic = {"prometheus": {"auth": {"basicAuth": {"secretName": "prom-basic"}}}}
    every = set(env_of(render(EVERYTHING))) | set(env_of(render(basic)))
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    every |= set(chart_values["config"])  # the ones left empty (unset) by default too
    missing = {AS_FILES.get(name, name) for name in settings} - every
    assert not missing, f"README settings without a chart value: {sorted(missing)}"


def test_basic_auth_reads_the_username_and_the_password_file_from_one_secret() -> None:
    values = {"prometheus": {"auth": {"basicAuth": {"secretName": "prom-basic"}}}}
    documents = render(values)
    env = env_of(documents)
    assert env["PROMETHEUS_USERNAME"] == {"secretKeyRef": {"name": "prom-basic",
                                                           "key": "username"}}
    assert env["PROMETHEUS_PASSWORD_FILE"] == "/etc/gpu-monitor-api/basic-auth/password"
    assert "PROMETHEUS_PASSWORD" not in env


def test_service_account_token_mounts_the_pods_own_token() -> None:
    documents = render({"prometheus": {"auth": {"serviceAccountToken": True}}})
    pod = by_kind(documents)["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert env_of(documents)["PROMETHEUS_BEARER_TOKEN_FILE"] == (
        "/var/run/secrets/kubernetes.io/serviceaccount/token")


@pytest.mark.parametrize(("values", "complaint"), [
    ({"prometheus": {"auth": {"serviceAccountToken": True,
                              "basicAuth": {"secretName": "b"}}}}, "choose one of"),
    ({"metrics": {"port": 8080}}, "metrics.port must differ from port"),
    ({"config": {"PROMETHEUS_PASSWORD": "hunter2"}}, "credentials come from Secrets"),
    ({"config": {"PORT": "9000"}}, "config.PORT is set by the chart"),
    ({"prometheus": {"tls": {"ca": {"secretName": "a", "configMapName": "b"}}}},
     "secretName or configMapName, not both"),
])
def test_settings_that_cannot_work_together_fail_the_render(
        values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmError, match=complaint):
        render(values)


def test_a_bad_config_value_is_refused_by_the_service_not_silently_kept() -> None:
    env = {k: v for k, v in env_of(render({"config": {"CACHE_TTL": "soon"}})).items()
           if isinstance(v, str)}
    with pytest.raises(ConfigError, match="CACHE_TTL"):
        load_config(env)


@pytest.mark.parametrize(("values", "where"), [
    ({"port": "http"}, "/port"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"config": {"cache_ttl": "5"}}, "cache_ttl"),
    ({"config": {"CACHE_TTL": ["5"]}}, "/config/CACHE_TTL"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
])
def test_values_of_the_wrong_shape_are_refused_by_the_schema_naming_the_key(
        values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(where)):
        render(values)
    report = helm.lint(CHART, values, namespace=NAMESPACE)
    assert any(where in error for error in report["errors"]), report
