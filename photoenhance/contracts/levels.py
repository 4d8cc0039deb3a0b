"""Quality levels as the fleet sees them: their order, which one an object resolves to, and which
one to pick from what is served. Pure functions; the one home of these rules.

An announced object's level comes from, in order: its object metadata
(``x-amz-meta-photoenhance-quality``), the batch's options (set by the ingest API or a
``_batch.json`` manifest, or the default resolved when the batch was created), then
:data:`FALLBACK_LEVEL`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from photoenhance.contracts.options import EnhanceOptions, OptionsError, Quality

__all__ = [
    "AUTO",
    "FALLBACK_LEVEL",
    "LEVELS_BEST_FIRST",
    "best_served",
    "level_names",
    "pick_level",
    "resolve_level",
]

#: Every level, the one giving the best result first.
LEVELS_BEST_FIRST: tuple[Quality, ...] = (Quality.BEST, Quality.BALANCED, Quality.FAST)
#: ``DEFAULT_QUALITY`` / ``--quality`` value meaning "the best level served".
AUTO = "auto"
#: What ``auto`` means when nothing is served or declared: the level every machine can run.
FALLBACK_LEVEL = Quality.FAST


def level_names() -> str:
    """The valid levels, for reasons: ``best, balanced, fast``."""
    return ", ".join(q.value for q in LEVELS_BEST_FIRST)


def best_served(served: Iterable[str | Quality]) -> Quality | None:
    """The best level among ``served``, or None when it names none."""
    names = {Quality(s).value if isinstance(s, Quality) else s for s in served}
    return next((q for q in LEVELS_BEST_FIRST if q.value in names), None)


def resolve_level(batch_options: Mapping[str, Any] | None, metadata: Mapping[str, str]) -> Quality:
    """The level an object is processed at: its metadata over its batch's options.

    Raises :class:`OptionsError` naming the valid levels when either names an unknown one (or
    another option is unusable: the image would fail on it anyway).
    """
    try:
        options = EnhanceOptions.from_metadata(metadata, base=EnhanceOptions.from_dict(dict(batch_options or {})))
    except OptionsError as exc:
        if "quality" in str(exc):
            raise OptionsError(f"{exc}; valid levels: {level_names()}") from exc
        raise
    return options.quality


def pick_level(wanted: str, served: Iterable[str]) -> tuple[Quality, str]:
    """The level for ``wanted`` (``auto`` or a level's name) given the levels ``served``, and why,
    in words for the person who asked. ``auto`` is the best level served, or
    :data:`FALLBACK_LEVEL` when nothing is served (nor declared in ``FLEET_LEVELS``).

    Raises :class:`OptionsError` for a name that is no level.
    """
    served = set(served)
    if wanted != AUTO:
        try:
            return Quality(wanted), f"{wanted!r} was asked for"
        except ValueError as exc:
            raise OptionsError(f"unknown quality level {wanted!r}; valid levels: {AUTO}, {level_names()}") from exc
    best = best_served(served)
    if best is None:
        return FALLBACK_LEVEL, (
            f"no live worker serves a level and FLEET_LEVELS declares none, so auto is {FALLBACK_LEVEL.value!r}, "
            "which every worker can run"
        )
    listed = ", ".join(q.value for q in LEVELS_BEST_FIRST if q.value in served)
    return best, f"auto: the best level served now (served: {listed})"
