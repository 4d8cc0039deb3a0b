"""What every ingest handler needs, created at start-up and reached through the app."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from db.repository import Repository
from ingest.final_pages import FinalPages
from ingest.presign import Presigner
from ingest.publisher import EventPublisher
from photoenhance.settings import Settings

__all__ = ["CONTEXT", "IngestContext"]


@dataclass
class IngestContext:
    """Settings and the service clients of one ingest process."""

    settings: Settings
    repository: Repository
    presigner: Presigner
    publisher: EventPublisher
    #: HTTP client for reading result objects (the archive); opened with the app.
    http: aiohttp.ClientSession | None = field(default=None)
    #: One thread for CPU work kept off the event loop (signing and encoding status pages). One,
    #: not many: with several CPU-bound threads the loop waits for the GIL behind each of them.
    cpu: ThreadPoolExecutor | None = field(default=None)
    #: Rendered status pages of completed and cancelled batches (polling them costs a lookup).
    final_pages: FinalPages = field(default_factory=FinalPages)

    def client(self) -> aiohttp.ClientSession:
        """The HTTP client; only valid while the app runs."""
        if self.http is None:
            raise RuntimeError("the ingest app is not running")
        return self.http


CONTEXT = web.AppKey("ingest", IngestContext)
