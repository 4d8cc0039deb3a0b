"""infra/k8s: every built-in object valid against the Kubernetes schemas (kubernetes-validate,
strict), and the references between objects (labels, ports, config, secrets, KEDA) consistent.

kubeconform is not in PyPI, npm or Debian; kubernetes-validate (PyPI) ships the same upstream
OpenAPI schemas. KEDA's custom resources have no schema there, so their fields are checked here.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from photoenhance.cli import SUBCOMMANDS
from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from photoenhance.topology import level_queue_name
from webhooks.queues import webhook_queue_name

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
#: Kubernetes version validated against.
KUBERNETES_VERSION = "1.30.0"
SETTINGS_NAMES = {f.metadata["env"] for f in fields(Settings)}
LEVELS = [q.value for q in Quality]


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of every manifest, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    [kustomization] = load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


def test_builtin_objects_are_valid_against_the_kubernetes_schemas(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    checked = 0
    for doc in objects.values():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 12
    broken = copy.deepcopy(objects[("Deployment", "photoenhance-processor-best")])
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def deployments(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: doc for (kind, name), doc in objects.items() if kind == "Deployment"}


def test_selectors_ports_and_references_match(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = objects[("ConfigMap", "photoenhance-settings")]["data"]
    secrets = {name: doc for (kind, name), doc in objects.items() if kind == "Secret"}
    assert set(deployments(objects)) == {
        "photoenhance-ingest", "photoenhance-notifier", "photoenhance-webhooks",
        *(f"photoenhance-processor-{level}" for level in LEVELS),
    }
    pod_specs = {name: d["spec"]["template"] for name, d in deployments(objects).items()}
    pod_specs["photoenhance-init"] = objects[("Job", "photoenhance-init")]["spec"]["template"]
    for name, doc in deployments(objects).items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    for name, template in pod_specs.items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        assert all(("PersistentVolumeClaim", c) in objects for c in claims), name
        for container in spec["containers"]:
            assert container["args"][0] in SUBCOMMANDS, f"{name}: no subcommand {container['args'][0]!r}"
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] in ports, f"{name} {probe}"
                    assert container[probe]["httpGet"]["path"] == "/healthz"
            for source in container["envFrom"]:
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in objects
                else:
                    assert source["secretRef"]["name"] in secrets
            env = {
                **config,
                **secrets["photoenhance-secrets"]["stringData"],
                **{e["name"]: e["value"] for e in container.get("env", [])},
            }
            assert set(env) <= SETTINGS_NAMES, f"{name}: not settings: {sorted(set(env) - SETTINGS_NAMES)}"
            Settings.from_env(environ=env)  # every value parses
    for (kind, name), service in objects.items():
        if kind != "Service":
            continue
        [target] = [
            d for d in deployments(objects).values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        container_ports = {p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports, name


def container_env(objects: dict[tuple[str, str], dict[str, Any]], deployment: str) -> dict[str, str]:
    """The settings a Deployment's container runs with: the ConfigMap, the secret, then its own env."""
    config = objects[("ConfigMap", "photoenhance-settings")]["data"]
    secret = objects[("Secret", "photoenhance-secrets")]["stringData"]
    [container] = objects[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"]
    return {**config, **secret, **{e["name"]: e["value"] for e in container.get("env", [])}}


def test_levels_match_the_quality_enum() -> None:
    assert sorted(LEVELS) == ["balanced", "best", "fast"]


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_has_a_worker_that_scales_to_zero_on_its_own_queue(
    objects: dict[tuple[str, str], dict[str, Any]], level: str
) -> None:
    name = f"photoenhance-processor-{level}"
    worker = objects[("Deployment", name)]
    scaled = objects[("ScaledObject", name)]
    settings = Settings.from_env(environ=container_env(objects, name))
    assert settings.processor_qualities == (level,)
    assert worker["spec"]["replicas"] == 0  # KEDA owns the count
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0
    queues = [t["metadata"]["queueName"] for t in spec["triggers"]]
    # its own level's queue, as the code names it; the announcements only where it routes them
    expected = [level_queue_name(settings, level)]
    if settings.processor_routes:
        expected.insert(0, settings.amqp_work_queue)
    assert queues == expected
    assert queues[-1] == f"photoenhance.work.level.{level}"
    for trigger in spec["triggers"]:
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        assert metadata["mode"] == "QueueLength" and float(metadata["value"]) > 0
        assert metadata["protocol"] == "http"  # counts unacknowledged messages too (see the manifest)
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA trigger metadata values are strings"
        auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        [ref] = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "host"
        secret = objects[("Secret", ref["name"])]
        assert secret["stringData"][ref["key"]].startswith("http://")  # the management API, as protocol says

    pod = worker["spec"]["template"]["spec"]
    [container] = pod["containers"]
    # The GPU levels: one engine process on the GPU, fed by several workers of the same pod.
    assert container["args"] == (["processor"] if level == "fast" else ["processor", "--workers", "4"])
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace_s
    limits = container["resources"]["limits"]
    tolerations = {t["key"] for t in pod.get("tolerations", [])}
    if level == "fast":  # on CPU: no GPU, no weights, less memory
        assert settings.device == "cpu"
        assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in tolerations
        assert "volumeMounts" not in container
        assert limits["memory"] == "2Gi"
    else:
        assert settings.device == "cuda"
        assert limits["nvidia.com/gpu"] == 1 and "nvidia.com/gpu" in tolerations
        assert {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]} == {str(settings.weights_dir): True}


def test_exactly_the_cpu_worker_routes_the_announcements(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    routes = {
        level: Settings.from_env(environ=container_env(objects, f"photoenhance-processor-{level}")).processor_routes
        for level in LEVELS
    }
    # Someone must route, or every upload waits in the announcements queue forever; a GPU worker
    # routing would wake a GPU node for every announcement.
    assert routes == {"fast": True, "balanced": False, "best": False}


def test_fleet_levels_declare_every_scaled_level(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = objects[("ConfigMap", "photoenhance-settings")]["data"]
    settings = Settings.from_env(environ=config)
    assert sorted(settings.fleet_levels) == sorted(LEVELS)


def test_the_webhook_sender_runs_on_cpu(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    sender = objects[("Deployment", "photoenhance-webhooks")]
    [container] = sender["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["webhooks"]
    assert sender["spec"]["replicas"] >= 1
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    settings = Settings.from_env(environ=container_env(objects, "photoenhance-webhooks"))
    assert settings.webhook_secrets_key, "without WEBHOOK_SECRETS_KEY the sender exits (webhooks off)"
    assert webhook_queue_name(settings) == "photoenhance.progress.webhooks"
    assert {p["containerPort"] for p in container["ports"]} == {settings.webhooks_port}
