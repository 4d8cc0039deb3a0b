"""What the fleet serves, as the ingest API answers it: the levels live workers serve plus those
the deployment declares (``FLEET_LEVELS``), the level a new batch gets, and the capabilities
document. Reads the ``workers`` table (:mod:`db.workers`); pure rules live in
:mod:`photoenhance.contracts.levels`.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from db.workers import WorkerInfo, WorkerRegistry
from ingest.context import IngestContext
from ingest.errors import ApiError
from ingest.validation import CreateBatch
from photoenhance.contracts.levels import AUTO, LEVELS_BEST_FIRST, level_names, pick_level
from photoenhance.contracts.options import EnhanceOptions, OptionsError, OutputFormat
from photoenhance.formats import SUPPORTED_FORMATS

__all__ = ["WAITING_FOR_WORKER", "batch_options", "capabilities", "live_levels", "live_workers", "mark_waiting"]

#: Status of a pending image whose level no live worker serves (it waits in its level's queue).
WAITING_FOR_WORKER = "waiting_for_worker"

#: Why a level is not offered, for people.
NOT_SERVED = "no worker serving it is running, and the deployment does not declare it (FLEET_LEVELS)"


async def live_workers(ctx: IngestContext) -> list[WorkerInfo]:
    """The workers whose heartbeat is recent."""
    return await WorkerRegistry(ctx.repository.db, gone_after_s=ctx.settings.worker_gone_after_s).live()


async def live_levels(ctx: IngestContext) -> set[str]:
    """The levels live workers serve now (what a pending image can be processed at)."""
    return {level for w in await live_workers(ctx) for level in w.levels}


def mark_waiting(entries: list[dict[str, Any]], images: dict[str, Any], live: set[str]) -> int:
    """Show pending images whose level no live worker serves as ``waiting_for_worker`` with their
    level and a sentence; returns how many."""
    count = 0
    for entry in entries:
        image = images.get(entry["name"])
        level = getattr(image, "level", None)
        if image is None or entry["state"] != "pending" or level is None:
            continue
        entry["level"] = level
        if level not in live:
            entry["state"] = WAITING_FOR_WORKER
            entry["reason"] = f"waiting for a worker that serves {level}"
            count += 1
    return count


def served_levels(ctx: IngestContext, workers: list[WorkerInfo]) -> set[str]:
    """Live workers' levels plus ``FLEET_LEVELS``."""
    return {level for w in workers for level in w.levels} | set(ctx.settings.fleet_levels)


async def batch_options(ctx: IngestContext, req: CreateBatch) -> tuple[EnhanceOptions, str]:
    """The options a new API batch is stored with (its level resolved now), and why that level.

    A level nobody serves is refused (409 ``quality_not_served``, the served levels listed) unless
    the request says it will wait (``wait_for_level``).
    """
    served = served_levels(ctx, await live_workers(ctx))
    try:
        level, why = pick_level(req.level, served)
    except OptionsError as exc:
        raise ApiError(400, "invalid_options", str(exc), field="options.quality") from exc
    if req.level != AUTO and level.value not in served and not req.wait_for_level:
        listed = ", ".join(q.value for q in LEVELS_BEST_FIRST if q.value in served) or "none"
        raise ApiError(
            409,
            "quality_not_served",
            f"no worker serves quality {level.value!r} now (served: {listed}); ask for a served level, "
            'or send "wait_for_level": true to let the images wait for such a worker',
            field="options.quality",
        )
    if level.value not in served:
        why = f"{why}; no worker serves it now, the images wait for one"
    return dataclasses.replace(req.options, quality=level), why


async def capabilities(ctx: IngestContext) -> dict[str, Any]:
    """``GET /api/v1/capabilities``: levels served now, the default, upscale range, formats, limits."""
    settings = ctx.settings
    workers = await live_workers(ctx)
    served = served_levels(ctx, workers)
    default, why = pick_level(AUTO, served)
    levels = []
    for quality in LEVELS_BEST_FIRST:
        mine = [w for w in workers if quality.value in w.levels]
        speeds = [w.speeds[quality.value] for w in mine if quality.value in w.speeds]
        entry: dict[str, Any] = {
            "level": quality.value,
            "served": quality.value in served,
            "workers": len(mine),
            "declared": quality.value in settings.fleet_levels,
            "devices": sorted({f"{w.device} ({w.device_name})" for w in mine}),
            "engine_versions": sorted({w.engine_version for w in mine}),
            #: Median of the live workers' measured figures; None until one has measured.
            "seconds_per_megapixel": statistics.median(speeds) if speeds else None,
        }
        if quality.value not in served:
            entry["why_not"] = NOT_SERVED
        levels.append(entry)
    return {
        "levels": levels,
        "default_level": default.value,
        "default_reason": why,
        "valid_levels": [AUTO, *level_names().split(", ")],
        "upscale": {"min": 1.0, "max": 4.0, "default": EnhanceOptions().upscale},
        "formats": {"input": list(SUPPORTED_FORMATS), "output": [f.value for f in OutputFormat]},
        "limits": {
            "max_file_bytes": settings.max_file_bytes,
            "max_input_pixels": settings.max_input_pixels,
            "max_files_per_batch": settings.max_files_per_batch,
        },
    }
