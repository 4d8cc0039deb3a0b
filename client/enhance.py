"""One run of ``photoenhance enhance``: plan from the state file, upload, follow, download.

1. **Plan.** Every path is checked (:mod:`client.inputs`). A file whose result is already in
   the output folder is skipped; a failure an earlier run recorded is reported again, not redone;
   a file of a batch the state file knows continues in that batch when the batch can still be
   read (its images already uploaded are not sent again, its results are downloaded); everything
   else goes into one new batch.
2. **Run.** Uploads go straight to the store, :data:`UPLOADS_AT_ONCE` at a time. Each batch is
   followed over the WebSocket (resumed with ``since`` after any disconnect) and, as a safety net,
   read from the API now and then (every few seconds while the stream is down); a result is
   downloaded the moment its image completes.
3. Each step is written to the state file as it happens, so an interrupted run loses nothing.

A run ends when every file is final for this run: downloaded, failed (with the pipeline's reason),
refused before sending, or given up on (an upload or download that kept failing; a re-run tries
those again).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import aiohttp

from client.api import Api, ApiError, ServerUnreachable
from client.batches import ApiBatches, BatchRefused, Created, DirectBatches
from client.downloads import DownloadFailed, LinkExpired, download
from client.estimate import describe, format_duration, level_entry, megapixels, seconds_for
from client.follow import CONNECTED, DISCONNECTED, Follower
from client.inputs import LocalFile, gather
from client.levels import live_levels
from client.report import Reporter
from client.state import BatchState, FileState, Progress, RunState
from client.uploads import UploadFailed, upload
from photoenhance.contracts.formats import format_of_content_type, resolve_output_format
from photoenhance.contracts.keys import OUTPUT_EXTENSIONS
from photoenhance.contracts.progress_stream import MessageKind
from photoenhance.settings import Settings

__all__ = ["Enhancer", "Outcome", "RunAborted", "Job"]

#: Status the API gives a pending image whose level no live worker serves (ingest/fleet.py).
WAITING_FOR_WORKER = "waiting_for_worker"

#: Uploads and downloads running at once.
UPLOADS_AT_ONCE = 4
DOWNLOADS_AT_ONCE = 4

#: Seconds between status reads from the API while the stream is up, and while it is down or
#: results wait for their links (the API was unreachable when they completed).
POLL_CONNECTED_S = 30.0
POLL_DISCONNECTED_S = 3.0

#: Fresh result links asked for when the store refuses one (it expired).
LINK_RENEWALS = 3


class RunAborted(Exception):
    """The run cannot go on (usage problem, server unreachable, batch refused): exit status 2."""


class Outcome(str, Enum):
    """Where a file ends up after this run."""

    #: Its result is in the output folder (this run or an earlier one).
    COMPLETED = "completed"
    #: The pipeline failed it, or its upload or download kept failing.
    FAILED = "failed"
    #: Never sent: missing, unreadable or not an image.
    REFUSED = "refused"


@dataclass(frozen=True)
class Job:
    """What a person asked for."""

    paths: list[str]
    out: Path
    options: dict[str, Any]
    server: str
    direct: bool = False
    api_key: str | None = None
    #: ``{"url": ..., "events": [...]}`` for batches this run creates (``--webhook``).
    webhook: dict[str, Any] | None = None
    #: ``GET /api/v1/capabilities`` as read at the start (None: the server could not be asked).
    capabilities: dict[str, Any] | None = None


@dataclass
class Item:
    """One path of this run."""

    path: str
    local: LocalFile | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    code: str | None = None
    #: Done before this run (nothing was redone).
    skipped: bool = False
    uploaded: bool = False
    downloaded: bool = False
    #: The presigned request to upload with, when this run must upload the file.
    upload_request: dict[str, Any] | None = None
    downloading: bool = False
    #: Said "waiting for a worker that serves ..." for it already.
    waiting: bool = False

    @property
    def final(self) -> bool:
        return self.outcome is not None


@dataclass
class BatchRun:
    """A batch this run follows, and its files by their name in the batch."""

    batch_id: str
    state: BatchState
    items: dict[str, Item]
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    refreshing: bool = False
    refresh_again: bool = False
    #: Names reported completed whose result link the API has not given yet.
    awaiting_links: set[str] = field(default_factory=set)

    def settled(self) -> bool:
        return all(item.final for item in self.items.values())


class Enhancer:
    """Runs one :class:`Job` (see the module docstring)."""

    def __init__(self, job: Job, settings: Settings, reporter: Reporter) -> None:
        self.job = job
        self.settings = settings
        self.reporter = reporter
        self.out = job.out
        self.items: list[Item] = []
        self.state: RunState | None = None
        self.runs: dict[str, BatchRun] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- entry point -----------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Run the job; returns the summary (see :meth:`summary`). Raises :class:`RunAborted`."""
        started = time.monotonic()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunAborted(f"cannot create the output folder {self.out}: {exc.strerror or exc}") from exc
        self.state = RunState.load(self.out, self.job.options)
        fresh, continuing = self._plan_locally()
        async with aiohttp.ClientSession() as session:
            self.session = session
            self.api = Api(session, self.job.server)
            self.batches = self._batches(session)
            for batch_id, items in continuing.items():
                fresh += await self._resume(batch_id, items)
            if fresh:
                await self._create(fresh)
            self._save()
            estimate = self._estimate()
            if estimate:
                self.reporter.note(estimate)
            self.reporter.start(
                upload_bytes=sum(i.local.size for i in self.items if i.upload_request and i.local),
                images=len(self.items),
                done=sum(1 for i in self.items if i.final),
                label=self._estimate_label(),
            )
            try:
                await self._execute()
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self.reporter.close()
        return self.summary(time.monotonic() - started)

    @property
    def level(self) -> str:
        """The level this run's new batches ask for."""
        return str(self.job.options.get("quality", ""))

    def _to_process(self) -> list[Item]:
        """The files the pipeline still has to enhance in this run."""
        return [i for i in self.items if i.local is not None and not i.final]

    def _sizes(self) -> list[float | None]:
        if not hasattr(self, "_sizes_mp"):
            self._sizes_mp = [megapixels(i.local.path) for i in self._to_process() if i.local is not None]
        return self._sizes_mp

    def _estimate(self) -> str | None:
        """The level's time estimate for the files to process (printed before uploading)."""
        if self.job.capabilities is None or not self._to_process():
            return None
        return describe(self.level, level_entry(self.job.capabilities, self.level), self._sizes())

    def _estimate_label(self) -> str:
        """The images bar's description: the level and its estimate (``images (fast, about 3 min)``)."""
        entry = level_entry(self.job.capabilities or {}, self.level)
        seconds = seconds_for(entry.get("seconds_per_megapixel") if entry else None, self._sizes())
        if seconds is None:
            return f"images ({self.level})"
        return f"images ({self.level}, {format_duration(seconds)})"

    def open_batch_credentials(self) -> dict[str, str]:
        """Each batch this run follows with an unfinished file, and the credential that may cancel it."""
        if self.state is None or not hasattr(self, "batches"):
            return {}
        return {
            batch_id: self.batches.credential(run.state)
            for batch_id, run in self.runs.items()
            if not run.settled() and batch_id in self.state.batches
        }

    def _batches(self, session: aiohttp.ClientSession) -> ApiBatches | DirectBatches:
        if not self.job.direct:
            return ApiBatches(self.api, self.job.options, self.job.api_key, self.job.webhook)
        if not self.job.api_key:
            raise RunAborted("--direct follows progress with an API key: pass --api-key or set API_KEYS")
        return DirectBatches(session, self.settings, self.job.options, self.job.api_key, self.job.webhook)

    # -- 1. plan ---------------------------------------------------------------------------------
    def _plan_locally(self) -> tuple[list[Item], dict[str, list[Item]]]:
        """Check the paths; sort files into done, known failures, continuing batches and new ones."""
        assert self.state is not None
        found, refused = gather(self.job.paths)
        for rejected in refused:
            item = Item(rejected.path)
            self.items.append(item)
            self._finish(item, Outcome.REFUSED, rejected.reason, rejected.code)
        fresh: list[Item] = []
        continuing: dict[str, list[Item]] = {}
        by_digest: dict[str, Item] = {}
        for local in found:
            item = Item(str(local.path), local)
            self.items.append(item)
            twin = by_digest.setdefault(local.sha256, item)
            if twin is not item:
                item.skipped = True
                self._finish(item, Outcome.COMPLETED, f"same photo as {twin.path}", quiet=True)
                self.reporter.line("skipped", item.path, f": same photo as {twin.path}")
                continue
            record = self.state.files.get(local.sha256)
            if record is None or record.batch_id not in self.state.batches:
                fresh.append(item)
            elif record.progress is Progress.COMPLETED and (self.out / record.result).is_file():
                item.skipped = True
                self._finish(item, Outcome.COMPLETED, quiet=True)
                self.reporter.line("skipped", item.path, f": already enhanced as {self.out / record.result}")
            elif record.progress is Progress.FAILED:
                self._finish(item, Outcome.FAILED, record.reason, record.code, quiet=True)
                self.reporter.line("failed", item.path, f": {record.reason} (known from an earlier run)")
            else:
                continuing.setdefault(record.batch_id, []).append(item)
        return fresh, continuing

    async def _resume(self, batch_id: str, items: list[Item]) -> list[Item]:
        """Continue ``items`` in their batch; returns those that must go into a new batch."""
        assert self.state is not None
        batch = self.state.batches[batch_id]
        credential = self.batches.credential(batch)
        try:
            status = await self.api.get_batch(batch_id, credential)
        except ServerUnreachable as exc:
            raise RunAborted(str(exc)) from exc
        except ApiError as exc:
            if exc.status != 404:
                raise RunAborted(f"cannot read batch {batch_id}: {exc.message}") from exc
            if batch.mode != DirectBatches.mode:
                return self._forget(batch_id, items)  # expired or deleted: start again
            status = {"images": []}  # a direct batch the pipeline has not registered yet
        if batch.mode != self.batches.mode or status.get("state") in ("cancelling", "cancelled"):
            return self._forget(batch_id, items)  # a cancelled batch processes nothing more: start anew
        on_server = {image["name"]: image for image in status.get("images", [])}
        run = self.runs.setdefault(batch_id, BatchRun(batch_id, batch, {}))
        moved: list[Item] = []
        for item in items:
            assert item.local is not None
            record = self.state.files[item.local.sha256]
            image = on_server.get(record.name)
            unseen = image is None or image["state"] in {"awaiting_upload", "superseded"}
            # An upload the store accepted is not sent again even if the pipeline has not seen it
            # yet (workers down, notification queued): the queue or the reconciler brings it.
            if unseen and record.progress is Progress.DECLARED:
                request = self.batches.upload_request(batch_id, batch, record.name, item.local)
                if request is None:
                    moved += self._forget(batch_id, [item])
                    continue
                item.upload_request = request
            run.items[record.name] = item
        return moved

    def _forget(self, batch_id: str, items: list[Item]) -> list[Item]:
        assert self.state is not None
        for item in items:
            assert item.local is not None
            self.state.files.pop(item.local.sha256, None)
        if not any(f.batch_id == batch_id for f in self.state.files.values()):
            self.state.batches.pop(batch_id, None)
        return items

    async def _create(self, items: list[Item]) -> None:
        assert self.state is not None
        by_local = {id(item.local): item for item in items}
        try:
            created: Created = await self.batches.create([item.local for item in items if item.local])
        except ServerUnreachable as exc:
            raise RunAborted(str(exc)) from exc
        except BatchRefused as exc:
            raise RunAborted(str(exc)) from exc
        for local, reason in created.refused:
            self._finish(by_local[id(local)], Outcome.REFUSED, reason, "refused_by_server")
        secret = getattr(self.batches, "webhook_secrets", {}).get(created.batch_id)
        if secret is not None:
            print(f"webhook secret of batch {created.batch_id} (shown once): {secret}", file=sys.stderr)
        if not created.accepted:
            return
        self.state.batches[created.batch_id] = created.state
        run = self.runs.setdefault(created.batch_id, BatchRun(created.batch_id, created.state, {}))
        for local, name in created.accepted:
            item = by_local[id(local)]
            self.state.files[local.sha256] = FileState(
                source=str(local.path), size=local.size, batch_id=created.batch_id, name=name,
                result=self._result_name(local),
            )
            item.upload_request = self.batches.upload_request(created.batch_id, created.state, name, local)
            run.items[name] = item

    def _result_name(self, local: LocalFile) -> str:
        """The result's file name: the photo's own stem, the output format's extension, unique."""
        assert self.state is not None
        fmt = resolve_output_format(self.job.options.get("output_format", "auto"),
                                    format_of_content_type(local.content_type))
        ext = OUTPUT_EXTENSIONS[fmt]
        stem = Path(local.name).stem or "photo"
        taken = self.state.results_taken()
        candidate, n = stem + ext, 1
        while candidate.casefold() in taken or (self.out / candidate).exists():
            n += 1
            candidate = f"{stem}-{n}{ext}"
        return candidate

    # -- 2. run ----------------------------------------------------------------------------------
    async def _execute(self) -> None:
        uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)
        self.downloads = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
        follows = [self._follow(run) for run in self.runs.values()]
        for run in self.runs.values():
            for name, item in run.items.items():
                if item.upload_request is not None and not item.final:
                    self._spawn(self._upload(run, name, item, uploads))
        await asyncio.gather(*follows)

    async def _upload(self, run: BatchRun, name: str, item: Item, slots: asyncio.Semaphore) -> None:
        assert item.local is not None and item.upload_request is not None and self.state is not None
        async with slots:
            if item.final:
                return
            try:
                await upload(self.session, item.upload_request, item.local.path, item.local.size, self.reporter.sent)
            except UploadFailed as exc:
                if not item.final:
                    self._finish(item, Outcome.FAILED, f"upload failed: {exc.reason}", "upload_failed")
                    run.changed.set()
                return
        item.uploaded = True
        record = self.state.files[item.local.sha256]
        if record.progress is Progress.DECLARED:
            record.progress = Progress.UPLOADED
        run.state.uploads.pop(name, None)  # spent: no need to keep a signed policy around
        self._save()

    async def _follow(self, run: BatchRun) -> None:
        """Until every file of the batch is final: stream, poll, download."""
        if run.settled():
            return
        follower = Follower(self.session, run.state.websocket, self.batches.credential(run.state))
        stream = self._spawn(self._consume(run, follower))
        poll = self._spawn(self._poll(run, follower))
        try:
            await self._refresh(run)
            while not run.settled():
                await run.changed.wait()
                run.changed.clear()
        finally:
            stream.cancel()
            poll.cancel()

    async def _consume(self, run: BatchRun, follower: Follower) -> None:
        async with contextlib.aclosing(follower.messages()) as messages:
            async for message in messages:
                kind = message.get("kind")
                if kind == MessageKind.SNAPSHOT.value:
                    for image in message.get("images", []):
                        self._apply(run, image)
                elif kind == MessageKind.EVENT.value and message.get("image"):
                    self._apply(run, message["image"])
                elif kind == MessageKind.END.value:
                    self._spawn(self._refresh(run))  # the batch is complete: read the last links
                elif kind == DISCONNECTED:
                    self.reporter.note(f"progress of batch {run.batch_id}: connection lost, reconnecting")
                elif kind == CONNECTED and follower.connections > 1:
                    self.reporter.note(f"progress of batch {run.batch_id}: reconnected, resuming after event {follower.last_seq}")
                    self._spawn(self._refresh(run))

    async def _poll(self, run: BatchRun, follower: Follower) -> None:
        while True:
            urgent = not follower.connected or run.awaiting_links or self._untold_waiters(run)
            await asyncio.sleep(POLL_DISCONNECTED_S if urgent else POLL_CONNECTED_S)
            await self._refresh(run)

    async def _refresh(self, run: BatchRun) -> None:
        """Read the batch from the API and apply every image (one read at a time per batch)."""
        if run.refreshing:
            run.refresh_again = True
            return
        run.refreshing = True
        try:
            while True:
                run.refresh_again = False
                try:
                    status = await self.api.get_batch(run.batch_id, self.batches.credential(run.state))
                except (ServerUnreachable, ApiError):
                    return  # the stream or the next poll brings the news
                for image in status.get("images", []):
                    self._apply(run, image)
                if not run.refresh_again:
                    return
        finally:
            run.refreshing = False

    def _apply(self, run: BatchRun, image: dict[str, Any]) -> None:
        """An image's state, as the stream or the API reports it."""
        item = run.items.get(image.get("name", ""))
        if item is None or item.final or item.local is None:
            return
        state = image.get("state")
        if state == "completed":
            url = (image.get("result") or {}).get("url")
            if url is None:
                run.awaiting_links.add(image["name"])
                self._spawn(self._refresh(run))  # stream messages carry no links; the API does
            elif not item.downloading:
                run.awaiting_links.discard(image["name"])
                item.downloading = True
                self._spawn(self._download(run, item, url))
        elif state == "failed":
            assert self.state is not None
            record = self.state.files[item.local.sha256]
            record.progress, record.reason, record.code = Progress.FAILED, image.get("reason"), image.get("code")
            self._save()
            self._finish(item, Outcome.FAILED, record.reason or "the image could not be enhanced", record.code)
            run.changed.set()
        elif state in {"pending", "processing", WAITING_FOR_WORKER}:
            assert self.state is not None
            record = self.state.files[item.local.sha256]
            if record.progress is Progress.DECLARED:  # the store has it, whatever our upload heard
                record.progress = Progress.UPLOADED
                self._save()
            if state == WAITING_FOR_WORKER and not item.waiting:
                item.waiting = True
                level = image.get("level") or self.level
                self.reporter.line("waiting", item.path, f": waiting for a worker that serves {level}")

    def _untold_waiters(self, run: BatchRun) -> bool:
        """Whether no live worker served this run's level when it started and some of its files
        are not yet known to wait for one: the stream says nothing until such a worker runs, and
        only the status API tells that a file waits, so it is read often until each one has."""
        if self.job.capabilities is None or self.level in live_levels(self.job.capabilities):
            return False
        return any(not item.final and not item.waiting for item in run.items.values())

    async def _download(self, run: BatchRun, item: Item, url: str) -> None:
        assert item.local is not None and self.state is not None
        record = self.state.files[item.local.sha256]
        target = self.out / record.result
        try:
            async with self.downloads:
                for renewal in range(LINK_RENEWALS + 1):
                    try:
                        await download(self.session, url, target)
                        break
                    except LinkExpired:
                        if renewal == LINK_RENEWALS:
                            raise
                        url = await self._fresh_link(run, record.name) or url
        except DownloadFailed as exc:
            self._finish(item, Outcome.FAILED, f"download failed: {exc}", "download_failed")
            run.changed.set()
            return
        except OSError as exc:
            self._finish(item, Outcome.FAILED, f"cannot write {target}: {exc.strerror or exc}", "write_failed")
            run.changed.set()
            return
        record.progress, record.reason, record.code = Progress.COMPLETED, None, None
        self._save()
        item.downloaded = True
        self._finish(item, Outcome.COMPLETED)
        run.changed.set()

    async def _fresh_link(self, run: BatchRun, name: str) -> str | None:
        try:
            status = await self.api.get_batch(run.batch_id, self.batches.credential(run.state))
        except (ServerUnreachable, ApiError):
            await asyncio.sleep(POLL_DISCONNECTED_S)
            return None
        for image in status.get("images", []):
            if image.get("name") == name:
                return (image.get("result") or {}).get("url")
        return None

    # -- bookkeeping -----------------------------------------------------------------------------
    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _save(self) -> None:
        assert self.state is not None
        self.state.save(self.out)

    def _finish(
        self, item: Item, outcome: Outcome, reason: str | None = None, code: str | None = None, *, quiet: bool = False
    ) -> None:
        item.outcome, item.reason, item.code = outcome, reason, code
        if self.reporter.images is not None:
            self.reporter.finished_one()
        if quiet:
            return
        if outcome is Outcome.COMPLETED:
            self.reporter.line("done", item.path, f" -> {self.out / self._result_of(item)}")
        else:
            self.reporter.line("failed" if outcome is Outcome.FAILED else "refused", item.path, f": {reason}")

    def _result_of(self, item: Item) -> str:
        assert self.state is not None
        record = self.state.files.get(item.local.sha256) if item.local else None
        return record.result if record else ""

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        """The run as JSON-ready data (``--json`` prints it)."""
        files = []
        for item in self.items:
            record = self.state.files.get(item.local.sha256) if (self.state and item.local) else None
            files.append({
                "path": item.path,
                "state": item.outcome.value if item.outcome else "unfinished",
                "result": str(self.out / record.result) if record and item.outcome is Outcome.COMPLETED else None,
                "reason": item.reason,
                "code": item.code,
                "batch_id": record.batch_id if record else None,
                "skipped": item.skipped,
                "uploaded": item.uploaded,
                "downloaded": item.downloaded,
            })
        count = lambda key, value=True: sum(1 for f in files if f[key] == value)  # noqa: E731
        return {
            "ok": all(f["state"] == Outcome.COMPLETED.value for f in files),
            "out": str(self.out),
            "mode": "direct" if self.job.direct else "api",
            "batches": sorted(self.runs),
            "elapsed_s": round(elapsed_s, 2),
            "counts": {
                "files": len(files),
                "completed": count("state", Outcome.COMPLETED.value),
                "failed": count("state", Outcome.FAILED.value),
                "refused": count("state", Outcome.REFUSED.value),
                "skipped": count("skipped"),
                "uploaded": count("uploaded"),
                "downloaded": count("downloaded"),
            },
            "files": files,
            # Shown once by the server: keep them to verify the webhook's signatures.
            "webhook_secrets": dict(getattr(getattr(self, "batches", None), "webhook_secrets", {})),
        }
