"""The two ways the CLI makes a batch: through the ingest API (default) or straight into the bucket.

:class:`ApiBatches` asks ``POST /api/v1/batches`` for a batch and its presigned POST policies, and
reads it with the batch token. The server may refuse single files (a name, a size, a type): the
file is reported with the server's reason and the batch is asked for again without it.

:class:`DirectBatches` (``--direct``) needs no ingest call to start: it picks the batch id (a
ULID, as the API would), signs PUTs with the S3 credentials of the settings (the direct-upload
user), puts a ``_batch.json`` manifest first (expected count and options, which the processor
honours, and the webhook if one is asked for, with a signing secret made here: no server is
there to make one), and reads progress and result links with an API key.

Both give the names the batch will know the files by; :func:`declarable_name` makes a local
file name acceptable to the API's rules (:mod:`ingest.names`) instead of losing the file over it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from client.api import Api, ApiError
from client.inputs import LocalFile
from client.state import BatchState
from client.uploads import UploadFailed, upload
from ingest.handlers.batches import progress_urls
from ingest.ids import new_ulid
from ingest.names import BIDI_CONTROLS, FORBIDDEN_CHARACTERS, MAX_NAME_CHARS, REFUSED_CATEGORIES, assign_names
from ingest.presign import Presigner
from photoenhance.contracts.keys import input_key, manifest_key
from photoenhance.settings import Settings
from webhooks.signing import new_secret

__all__ = ["ApiBatches", "BatchRefused", "Created", "DirectBatches", "declarable_name"]

#: A presigned upload closer than this to its expiry is not started (it could expire mid-way).
EXPIRY_MARGIN = timedelta(seconds=60)

_FILE_FIELD = re.compile(r"^files\[(\d+)\]")


class BatchRefused(Exception):
    """No batch could be made (the server refused the whole request, or the store is unreachable)."""


@dataclass
class Created:
    """A new batch: its id and state, the name of each accepted file, and the files refused."""

    batch_id: str
    state: BatchState
    #: Accepted files with their names in the batch, in request order.
    accepted: list[tuple[LocalFile, str]]
    #: Files the server refused, with its reason.
    refused: list[tuple[LocalFile, str]]


def declarable_name(name: str) -> str:
    """``name`` with what the API refuses (quotes, slashes, controls) turned into ``_``."""
    normal = unicodedata.normalize("NFC", name)
    cleaned = "".join(
        "_" if ch in FORBIDDEN_CHARACTERS or ch in BIDI_CONTROLS or unicodedata.category(ch) in REFUSED_CATEGORIES else ch
        for ch in normal
    )
    if not cleaned.strip(" ."):
        cleaned = "photo" + cleaned
    return cleaned[-MAX_NAME_CHARS:]


class ApiBatches:
    """Batches created through the ingest API."""

    mode = "api"

    def __init__(
        self, api: Api, options: dict[str, Any], api_key: str | None, webhook: dict[str, Any] | None = None
    ) -> None:
        self.api = api
        self.options = options
        self.api_key = api_key
        self.webhook = webhook
        #: The signing secret of each batch's webhook, shown once by the server (batch id -> secret).
        self.webhook_secrets: dict[str, str] = {}

    def credential(self, batch: BatchState) -> str:
        assert batch.token is not None
        return batch.token

    async def create(self, files: Sequence[LocalFile]) -> Created:
        """Create a batch for ``files``; files the server refuses one by one are left out."""
        wanted = list(files)
        refused: list[tuple[LocalFile, str]] = []
        while wanted:
            request = [{"name": declarable_name(f.name), "size": f.size, "content_type": f.content_type} for f in wanted]
            try:
                body = await self.api.create_batch(request, self.options, credential=self.api_key, webhook=self.webhook)
            except ApiError as exc:
                match = _FILE_FIELD.match(exc.field or "")
                if match is None or int(match.group(1)) >= len(wanted):
                    raise BatchRefused(f"the server refused the batch: {exc.message} ({exc.code})") from exc
                refused.append((wanted.pop(int(match.group(1))), exc.message))
                continue
            uploads = body["uploads"]
            state = BatchState(
                mode=self.mode,
                websocket=body["progress"]["websocket"],
                token=body["token"],
                expires_at=body["expires_at"],
                uploads={u["name"]: {k: u[k] for k in ("method", "url", "fields", "headers") if k in u} for u in uploads},
            )
            if "webhook" in body:
                self.webhook_secrets[body["batch_id"]] = body["webhook"]["secret"]
            accepted = [(f, u["name"]) for f, u in zip(wanted, uploads, strict=True)]
            return Created(body["batch_id"], state, accepted, refused)
        return Created("", BatchState(mode=self.mode, websocket=""), [], refused)

    def upload_request(self, batch_id: str, batch: BatchState, name: str, local: LocalFile) -> dict[str, Any] | None:
        """The stored presigned upload, or None when it is gone or about to expire."""
        upload_request = batch.uploads.get(name)
        if upload_request is None or batch.expires_at is None:
            return None
        expires = datetime.fromisoformat(batch.expires_at.replace("Z", "+00:00"))
        if expires - EXPIRY_MARGIN <= datetime.now(UTC):
            return None
        return upload_request


class DirectBatches:
    """Batches uploaded straight into the input bucket with S3 credentials (``--direct``)."""

    mode = "direct"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        options: dict[str, Any],
        api_key: str,
        webhook: dict[str, Any] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.options = options
        self.api_key = api_key
        self.webhook = webhook
        #: The signing secret of each batch's webhook, made here and put in its manifest (batch id -> secret).
        self.webhook_secrets: dict[str, str] = {}
        self.presigner = Presigner(settings)

    def credential(self, batch: BatchState) -> str:
        return self.api_key

    async def create(self, files: Sequence[LocalFile]) -> Created:
        """Pick an id and names, then put the manifest (before any image, as the processor wants)."""
        batch_id = new_ulid()
        names = assign_names([declarable_name(f.name) for f in files])
        plan: dict[str, Any] = {"expected_count": len(files), "options": self.options}
        if self.webhook is not None:
            self.webhook_secrets[batch_id] = new_secret()
            plan["webhook"] = {**self.webhook, "secret": self.webhook_secrets[batch_id]}
        manifest = json.dumps(plan).encode()
        request = self.presigner.upload_put(manifest_key(batch_id), content_type="application/json").to_dict()
        try:
            await upload(self.session, request, manifest, len(manifest), lambda _n: None)
        except UploadFailed as exc:
            raise BatchRefused(f"cannot put the batch manifest into the input bucket: {exc.reason}") from exc
        state = BatchState(mode=self.mode, websocket=progress_urls(self.settings, batch_id)["websocket"])
        return Created(batch_id, state, list(zip(files, names, strict=True)), [])

    def upload_request(self, batch_id: str, batch: BatchState, name: str, local: LocalFile) -> dict[str, Any]:
        """A fresh presigned PUT (signed here, with the settings' S3 credentials)."""
        return self.presigner.upload_put(input_key(batch_id, name), content_type=local.content_type).to_dict()
