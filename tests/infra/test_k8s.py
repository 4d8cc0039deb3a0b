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
from photoenhance.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
#: Kubernetes version validated against.
KUBERNETES_VERSION = "1.30.0"
SETTINGS_NAMES = {f.metadata["env"] for f in fields(Settings)}


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
    assert checked >= 9
    broken = copy.deepcopy(objects[("Deployment", "photoenhance-processor")])
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def deployments(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: doc for (kind, name), doc in objects.items() if kind == "Deployment"}


def test_selectors_ports_and_references_match(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = objects[("ConfigMap", "photoenhance-settings")]["data"]
    secrets = {name: doc for (kind, name), doc in objects.items() if kind == "Secret"}
    assert set(deployments(objects)) == {"photoenhance-ingest", "photoenhance-notifier", "photoenhance-processor"}
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


def test_the_worker_scales_to_zero_on_the_work_queue_length(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = objects[("ConfigMap", "photoenhance-settings")]["data"]
    worker = objects[("Deployment", "photoenhance-processor")]
    scaled = objects[("ScaledObject", "photoenhance-processor")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker["metadata"]["name"]}
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0
    # The announcements it routes and every level's queue: on the announcements alone it would
    # scale to zero while routed images wait in a level queue.
    work = config["AMQP_WORK_QUEUE"]
    assert [t["metadata"]["queueName"] for t in spec["triggers"]] == [
        work, f"{work}.level.best", f"{work}.level.balanced", f"{work}.level.fast"
    ]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        assert metadata["mode"] == "QueueLength" and float(metadata["value"]) > 0
        assert metadata["protocol"] == "http"  # counts unacknowledged messages too (see the manifest)
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA trigger metadata values are strings"
    trigger = spec["triggers"][0]
    auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secret = objects[("Secret", ref["name"])]
    assert secret["stringData"][ref["key"]].startswith("http://")  # the management API, as protocol says

    pod = worker["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["terminationGracePeriodSeconds"] > int(config["SHUTDOWN_GRACE_S"])
    assert {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]} == {config["WEIGHTS_DIR"]: True}
