"""``photoenhance enhance --webhook``: the new batch has the webhook, and its secret is reported once."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.repository import Repository
from harness.processor import image_bytes
from harness.stack import StartStack
from tests.client.test_enhance_cli import run_cli
from webhooks.signing import open_secret

pytestmark = pytest.mark.objectstore

KEY = "cli-webhook-secrets-key"


async def test_enhance_with_a_webhook(start_stack: StartStack, repository: Repository, tmp_path: Path) -> None:
    stack = await start_stack(webhook_secrets_key=KEY, webhook_allow_http=True, webhook_allow_private=("127.0.0.1",))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(image_bytes(64, 48, seed=i))
    code, summary, said = run_cli(stack, str(folder), "--out", str(tmp_path / "out"), "--quality", "fast",
                                  "--webhook", "http://127.0.0.1:9/hook", "--webhook-events", "batch.completed")
    assert code == 0, said
    (batch_id,) = summary["batches"]
    secret = summary["webhook_secrets"][batch_id]
    assert f"webhook secret of batch {batch_id} (shown once): {secret}" in said
    stored = await repository.subscription(batch_id)
    assert (stored.url, stored.events) == ("http://127.0.0.1:9/hook", ["batch.completed"])
    assert open_secret(stored.sealed_secret, KEY, batch_id) == secret


async def test_enhance_direct_with_a_webhook_puts_a_secret_made_here_in_the_manifest(
    start_stack: StartStack, repository: Repository, tmp_path: Path
) -> None:
    stack = await start_stack(webhook_secrets_key=KEY, webhook_allow_http=True, webhook_allow_private=("127.0.0.1",),
                              api_keys=("cli-key",))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "p0.jpg").write_bytes(image_bytes(64, 48, seed=0))
    code, summary, said = run_cli(stack, str(folder), "--out", str(tmp_path / "out"), "--quality", "fast",
                                  "--direct", "--api-key", "cli-key", "--webhook", "http://127.0.0.1:9/hook")
    assert code == 0, said
    (batch_id,) = summary["batches"]
    secret = summary["webhook_secrets"][batch_id]
    assert secret.startswith("whsec_") and f"webhook secret of batch {batch_id} (shown once): {secret}" in said
    stored = await repository.subscription(batch_id)
    assert stored.url == "http://127.0.0.1:9/hook" and open_secret(stored.sealed_secret, KEY, batch_id) == secret
