"""The deployment files: Kubernetes manifests valid against the Kubernetes schemas, and every
config they carry valid for the gateway; the compose file and the Dockerfile as promised."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config.loader import parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for (PodDisruptionBudget v1)


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def by_kind(kind: str) -> dict[str, Any]:
    [doc] = [doc for _, doc in documents() if doc["kind"] == kind]
    return doc


@pytest.mark.parametrize("version", [VERSION, kubernetes_validate.latest_version()])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    kinds = set()
    for name, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")
        kinds.add(doc["kind"])
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}


def test_the_configmap_holds_a_valid_gateway_config() -> None:
    text = by_kind("ConfigMap")["data"]["gateway.yaml"]
    loaded = parse_config(
        text, "configmap.yaml", env={"ADMIN_TOKEN": "t", "REDIS_URL": "redis://redis:6379/0"}
    )
    assert loaded.model.admin.listen == "0.0.0.0:9901"
    assert loaded.model.listen == "0.0.0.0:8080"


def test_the_deployment_probes_the_admin_listener_and_requests_resources() -> None:
    deployment = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080, "admin": 9901}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/health", "port": "admin"}
    assert "/-/ready" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert "127.0.0.1:9901" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {item["name"]: item for item in container["env"]}
    secret = by_kind("Secret")
    assert env["ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "token",
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/gateway"
    [config] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert config["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    # Draining (shutdown_timeout 30s) fits in the grace period, after the preStop pause.
    assert pod["terminationGracePeriodSeconds"] >= 30 + 5


def test_service_and_budget_select_the_deployments_pods() -> None:
    labels = by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    budget = by_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < by_kind("Deployment")["spec"]["replicas"]


def test_compose_runs_two_replicas_on_one_redis_with_the_demo_upstream() -> None:
    # As a user runs it: every ${VAR:-default} at its default.
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", (ROOT / "deploy" / "compose.yaml").read_text())
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert {"redis", "upstream", "gateway-1", "gateway-2"} <= set(services)
    replicas = [services["gateway-1"], services["gateway-2"]]
    assert replicas[0]["environment"] == replicas[1]["environment"]
    env = replicas[0]["environment"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["UPSTREAM"] == "http://upstream:9000"
    assert [r["ports"] for r in replicas] == [["8080:8080"], ["8081:8080"]]
    assert services["redis"]["image"] == "docker.io/library/redis:7-alpine"
    for service in [*replicas, services["upstream"]]:
        assert service["build"] == {"context": "..", "args": {"BASE": "python:3.12-slim"}}
    for volume in replicas[0]["volumes"] + services["upstream"]["volumes"]:
        source = volume.split(":")[0]
        assert (ROOT / "deploy" / source).exists(), volume
    # The mounted config is valid with the environment compose gives it.
    parse_config((ROOT / "config.example.yaml").read_text(), "config.example.yaml", env=env)


def test_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ARG BASE=python:3.12-slim"
    assert [line for line in lines if line.startswith("FROM ")] == [
        "FROM ${BASE} AS build",
        "FROM ${BASE}",
    ]
    assert "COPY --from=build /opt/gateway /opt/gateway" in lines
    [user] = [line for line in lines if line.startswith("USER ")]
    assert re.fullmatch(r"USER [1-9]\d{3,}:[1-9]\d{3,}", user)
    assert "/-/health" in text.split("HEALTHCHECK", 1)[1]
    assert "GATEWAY_CONFIG=/etc/gateway/gateway.yaml" in text
    assert 'ENTRYPOINT ["gateway", "run"]' in lines
    # Nothing of the build machine's package-index settings is written into the image.
    assert "pip.conf" not in "".join(line for line in lines if not line.startswith("#"))
