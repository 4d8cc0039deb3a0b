"""What a run has done so far, kept in the output folder so that running the command again resumes.

The state file ``<out>/.photoenhance-state.json`` records the options, each batch the folder has
used (id, token, how it uploads) and, per input file (by SHA-256 of its content, so renaming or
moving a photo does not make it new), the batch and name it was declared under, how far it got,
and the result file it became. It is rewritten atomically after every change and readable only
by its owner (it holds batch tokens and, for a while, upload policies).

A re-run skips files whose result is on disk, reports failures it already knows, continues the
batches it can still reach, and starts a new batch for the rest.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = ["BatchState", "FileState", "Progress", "RunState", "StateError", "STATE_FILE"]

#: Name of the state file inside the output folder.
STATE_FILE = ".photoenhance-state.json"

#: Format version written into the file.
VERSION = 1


class StateError(ValueError):
    """The state file cannot be used; the message says why and what to do."""


class Progress(str, Enum):
    """How far one file got."""

    #: Declared in a batch; the store has not confirmed an upload yet.
    DECLARED = "declared"
    #: The store accepted the upload; the result is awaited.
    UPLOADED = "uploaded"
    #: The result is downloaded into the output folder. Final.
    COMPLETED = "completed"
    #: The pipeline refused or failed the image, with a reason. Final.
    FAILED = "failed"


@dataclass
class FileState:
    """One input file's record (keyed by its SHA-256 in :class:`RunState`)."""

    source: str
    size: int
    batch_id: str
    #: The name inside the batch (the server's safe name).
    name: str
    #: File name of the result inside the output folder.
    result: str
    progress: Progress = Progress.DECLARED
    reason: str | None = None
    code: str | None = None


@dataclass
class BatchState:
    """One batch the output folder uses."""

    #: ``api`` (created through the ingest API) or ``direct`` (uploaded with S3 credentials).
    mode: str
    #: The WebSocket URL of its progress stream.
    websocket: str
    #: The batch token (``api`` batches); direct batches are read with an API key, never stored.
    token: str | None = None
    #: When the presigned uploads stop working (ISO 8601, ``api`` batches).
    expires_at: str | None = None
    #: Presigned upload per name (``api`` batches), dropped once the file is uploaded.
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunState:
    """The whole state file."""

    options: dict[str, Any]
    batches: dict[str, BatchState] = field(default_factory=dict)
    files: dict[str, FileState] = field(default_factory=dict)

    # -- file ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, out: Path, options: dict[str, Any]) -> RunState:
        """The folder's state, or a new one; refuses a folder filled with other options."""
        path = out / STATE_FILE
        if not path.exists():
            return cls(options=options)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("version") != VERSION:
                raise StateError(f"{path} was written by another version of this tool; use another --out")
            state = cls(
                options=doc["options"],
                batches={k: BatchState(**v) for k, v in doc["batches"].items()},
                files={k: FileState(**{**v, "progress": Progress(v["progress"])}) for k, v in doc["files"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError(f"{path} cannot be read ({exc}); remove it to start over") from exc
        if state.options != options:
            raise StateError(
                f"{out} holds results made with other options ({_describe(state.options)}); "
                f"use another --out for {_describe(options)}"
            )
        return state

    def save(self, out: Path) -> None:
        """Write atomically (a reader never sees half a file), readable by the owner only."""
        doc = {
            "version": VERSION,
            "options": self.options,
            "batches": {k: asdict(v) for k, v in self.batches.items()},
            "files": {k: {**asdict(v), "progress": v.progress.value} for k, v in self.files.items()},
        }
        handle, temp = tempfile.mkstemp(dir=out, prefix=".photoenhance-state.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, out / STATE_FILE)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    # -- queries -------------------------------------------------------------------------------
    def results_taken(self) -> set[str]:
        """Result file names already assigned, case-folded (macOS and Windows ignore case)."""
        return {f.result.casefold() for f in self.files.values()}


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={options[k]}" for k in ("quality", "upscale") if k in options)
