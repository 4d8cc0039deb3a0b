"""infra/docker-compose.yml: valid Compose, consistent with the settings and with MinIO's target.

Docker does not run here. Validation uses Debian's ``docker-compose`` (1.29, which needs no
engine for ``config``): it interpolates ``.env.example``, resolves anchors and checks the file
against its Compose schema; the rendered result is then checked again against the Compose JSON
schema it ships, and for what this project needs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from photoenhance.settings import Settings

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
#: Where Debian's docker-compose package keeps the Compose schema it validates with.
COMPOSE_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
#: The services that run photoenhance (and read its settings).
OUR_SERVICES = ("init", "ingest", "notifier", "webhooks", "processor-fast", "processor-gpu", "processor-cpu")
#: The workers and the levels each serves.
WORKERS = {"processor-fast": ("fast",), "processor-gpu": ("balanced", "best"), "processor-cpu": ("balanced", "best")}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """``docker-compose config`` with .env.example, every profile's services included."""
    if shutil.which("docker-compose") is None:
        pytest.fail("Debian's docker-compose is not installed (infra/local/bootstrap.sh installs it)", pytrace=False)
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def env_example() -> tuple[dict[str, str], set[str]]:
    """(variables given a value, every variable named) in .env.example."""
    values, named = {}, set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
        named |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b(?==|\s+\(set)", line))
    return values, named | set(values)


def test_rendered_file_fits_the_compose_json_schema(rendered: dict[str, Any]) -> None:
    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(f"{COMPOSE_SCHEMA} is not there (Debian's docker-compose ships it)", pytrace=False)
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)  # what its $schema names (with a typo'd URL)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(rendered)]
    assert not errors, errors
    broken = {**rendered, "services": {**rendered["services"], "ingest": {**rendered["services"]["ingest"], "ports": "8080"}}}
    assert not validator.is_valid(broken), "the schema check accepts anything"


def test_a_malformed_file_is_refused(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("Debian's docker-compose is not installed (infra/local/bootstrap.sh installs it)", pytrace=False)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    command: [\"ingest\"]", "    comand: [\"ingest\"]"))
    assert broken.read_text() != COMPOSE.read_text()
    result = subprocess.run(
        ["docker-compose", "-f", str(broken), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "comand" in result.stderr


def test_every_setting_the_services_read_is_set_or_documented(rendered: dict[str, Any]) -> None:
    _, documented = env_example()
    settings_names = {f.metadata["env"] for f in fields(Settings)}
    for service in OUR_SERVICES:
        environment = rendered["services"][service]["environment"]
        missing = settings_names - set(environment) - documented
        assert not missing, f"{service}: neither set in docker-compose.yml nor documented in .env.example: {sorted(missing)}"
        unknown = {name for name in environment if name not in settings_names}
        assert not unknown, f"{service} sets variables no setting reads: {sorted(unknown)}"
        # the values parse as the settings module parses them
        Settings.from_env(environ={k: str(v) for k, v in environment.items()})


def test_every_interpolated_variable_is_in_env_example() -> None:
    values, named = env_example()
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert used <= named, f"undocumented: {sorted(used - named)}"
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))
    assert required <= set(values), f"required but without an example value: {sorted(required - set(values))}"


def test_minio_publishes_where_the_services_listen(rendered: dict[str, Any]) -> None:
    minio = rendered["services"]["minio"]["environment"]
    ingest = rendered["services"]["ingest"]["environment"]
    assert minio["MINIO_NOTIFY_AMQP_ENABLE_PRIMARY"] == "on"
    assert minio["MINIO_NOTIFY_AMQP_EXCHANGE_PRIMARY"] == ingest["AMQP_EVENTS_EXCHANGE"]
    assert minio["MINIO_NOTIFY_AMQP_ROUTING_KEY_PRIMARY"] == ingest["AMQP_EVENTS_ROUTING_KEY"]
    # what declare_topology declares, since MinIO re-declares the exchange on every publish
    assert minio["MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_PRIMARY"] == "topic"
    assert minio["MINIO_NOTIFY_AMQP_DURABLE_PRIMARY"] == "on"
    assert minio["MINIO_NOTIFY_AMQP_DELIVERY_MODE_PRIMARY"] == "2"
    assert minio["MINIO_NOTIFY_AMQP_PUBLISHING_CONFIRMS_PRIMARY"] == "on"
    queue_dir = minio["MINIO_NOTIFY_AMQP_QUEUE_DIR_PRIMARY"]
    volume_targets = [_volume(v)[0] for v in rendered["services"]["minio"]["volumes"]]
    assert any(queue_dir.startswith(target.rstrip("/") + "/") for target in volume_targets), "QUEUE_DIR must be on a volume"
    assert minio["MINIO_ROOT_USER"] == ingest["S3_ACCESS_KEY"]
    assert minio["MINIO_ROOT_PASSWORD"] == ingest["S3_SECRET_KEY"]
    rabbit = rendered["services"]["rabbitmq"]["environment"]
    for url in (minio["MINIO_NOTIFY_AMQP_URL_PRIMARY"], ingest["AMQP_URL"]):
        assert url.startswith(f"amqp://{rabbit['RABBITMQ_DEFAULT_USER']}:{rabbit['RABBITMQ_DEFAULT_PASS']}@rabbitmq:5672")
    assert ingest["S3_PROVIDER"] == "minio" and ingest["S3_ENDPOINT"] == "http://minio:9000"


def test_processor_profiles_gpu_reservation_and_cpu_variant(rendered: dict[str, Any]) -> None:
    gpu, cpu = rendered["services"]["processor-gpu"], rendered["services"]["processor-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["DEVICE"] == "cuda" and cpu["environment"]["DEVICE"] == "cpu"
    assert "reservations" not in cpu["deploy"].get("resources", {})
    for worker in (gpu, cpu):
        assert _seconds(worker["stop_grace_period"]) > int(worker["environment"]["SHUTDOWN_GRACE_S"])
        assert [_volume(v) for v in worker["volumes"]] == [("/weights", True)]
    values, _ = env_example()
    assert values["COMPOSE_PROFILES"] in {"gpu", "cpu"}


def test_workers_per_level_one_router_and_the_fleet_declared(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    settings = {name: Settings.from_env(environ={k: str(v) for k, v in services[name]["environment"].items()})
                for name in WORKERS}
    for name, levels in WORKERS.items():
        # On a GPU, one engine process fed by several workers (one process cannot feed a GPU).
        expected = ["processor", "--workers", "4"] if name == "processor-gpu" else ["processor"]
        assert services[name]["command"] == expected, name
        assert settings[name].processor_qualities == levels, name
    fast = services["processor-fast"]
    assert "profiles" not in fast, "the router and the fast level run with every profile"
    assert settings["processor-fast"].device == "cpu" and "reservations" not in fast["deploy"].get("resources", {})
    # exactly one router whatever the profile: the always-on CPU worker
    assert {name: s.processor_routes for name, s in settings.items()} == {
        "processor-fast": True, "processor-gpu": False, "processor-cpu": False
    }
    # every profile the example may pick serves all three levels, as FLEET_LEVELS declares
    values, _ = env_example()
    fleet = set(settings["processor-fast"].fleet_levels)
    for profile in values["COMPOSE_PROFILES"].split(","):
        served = {level for name, levels in WORKERS.items()
                  if services[name].get("profiles", [profile]) == [profile] for level in levels}
        assert fleet == served == {"fast", "balanced", "best"}, profile
    assert fast["environment"]["FLEET_LEVELS"] == services["ingest"]["environment"]["FLEET_LEVELS"]


def test_the_webhook_sender_is_a_profile(rendered: dict[str, Any]) -> None:
    sender = rendered["services"]["webhooks"]
    assert sender["command"] == ["webhooks"] and sender["profiles"] == ["webhooks"]
    assert sender["environment"]["WEBHOOK_SECRETS_KEY"] == rendered["services"]["ingest"]["environment"]["WEBHOOK_SECRETS_KEY"]


def test_start_order_healthchecks_and_volumes(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert services["init"]["command"] == ["init"] and services["init"]["restart"] == "no"
    assert {name: cond["condition"] for name, cond in services["init"]["depends_on"].items()} == {
        "minio": "service_healthy", "rabbitmq": "service_healthy", "postgres": "service_healthy"
    }
    for name in ("ingest", "notifier", "webhooks", *WORKERS):
        assert services[name]["depends_on"] == {"init": {"condition": "service_completed_successfully"}}, name
    for name, service in services.items():
        if name != "init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("rabbitmq", "minio", "postgres"):
        assert services[name]["volumes"], f"{name} keeps its data in a volume"
    assert set(rendered["volumes"]) >= {"rabbitmq-data", "minio-data", "postgres-data", "weights"}
    assert services["ingest"]["environment"]["INGEST_HOST"] == "0.0.0.0"


def test_dockerfile_installs_the_project_as_bootstrap_does() -> None:
    text = DOCKERFILE.read_text()
    assert '"torch==2.14.1" "torchvision==0.29.1"' in text
    assert '--no-build-isolation "basicsr==1.4.2"' in text
    assert text.index("torch==2.14.1") < text.index("basicsr==1.4.2") < text.index("pip install --no-deps .")
    assert "libgl1" in text and 'ENTRYPOINT ["photoenhance"]' in text
    bootstrap = (INFRA / "local" / "bootstrap.sh").read_text()
    for pin in ('"torch==2.14.1" "torchvision==0.29.1"', '--no-build-isolation "basicsr==1.4.2"'):
        assert pin in bootstrap, f"bootstrap.sh and the Dockerfile disagree on {pin}"


def _volume(entry: Any) -> tuple[str, bool]:
    """(target, read-only) of a volume in short (``src:dst:ro``) or long syntax."""
    if isinstance(entry, str):
        parts = entry.split(":")
        return parts[1], parts[2:] == ["ro"]
    return entry["target"], bool(entry.get("read_only"))


def _seconds(value: Any) -> float:
    text = str(value)
    match = re.fullmatch(r"(\d+)(s|m)?", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)
