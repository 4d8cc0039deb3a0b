"""Settings come from the environment, with clear errors, and the README documents every one."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from photoenhance.settings import Settings, SettingsError, settings_table

README = Path(__file__).parents[2] / "README.md"


def test_defaults_point_at_localhost() -> None:
    settings = Settings.from_env(environ={})
    assert settings.s3_endpoint.startswith("http://127.0.0.1")
    assert settings.amqp_url.startswith("amqp://guest:guest@127.0.0.1")
    assert settings.database_url.startswith("sqlite+aiosqlite:")
    assert settings.presign_endpoint == settings.s3_endpoint


def test_values_are_parsed_to_their_types() -> None:
    settings = Settings.from_env(
        environ={
            "PREFETCH": "16",
            "WS_HEARTBEAT_S": "2.5",
            "ALLOW_CUSTOM_WEIGHTS": "yes",
            "API_KEYS": " k1, k2 ,,",
            "WEIGHTS_DIR": "/models",
            "S3_ENDPOINT": "https://s3.example:9443",
        }
    )
    assert settings.prefetch == 16 and settings.ws_heartbeat_s == 2.5
    assert settings.allow_custom_weights is True
    assert settings.api_keys == ("k1", "k2")
    assert str(settings.weights_dir) == "/models"
    assert settings.s3_secure and settings.s3_host == "s3.example:9443"


@pytest.mark.parametrize(("name", "value"), [("PREFETCH", "many"), ("ALLOW_CUSTOM_WEIGHTS", "perhaps")])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(environ={name: value})


def test_every_variable_is_unique_and_in_the_readme_table() -> None:
    names = [f.metadata["env"] for f in fields(Settings)]
    assert len(names) == len(set(names))
    readme = README.read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.M))
    assert documented == set(names), "regenerate the README table with `photoenhance settings --markdown`"
    assert settings_table() in readme


def test_to_env_round_trips() -> None:
    settings = Settings.from_env(environ={}, api_keys=("a", "b"), allow_custom_weights=True, prefetch=9)
    assert Settings.from_env(environ=settings.to_env()) == settings
