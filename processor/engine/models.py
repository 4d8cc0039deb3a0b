"""Verify and load, once, the networks a set of quality levels needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from photoenhance.contracts.options import Quality
from processor.engine import networks
from processor.engine.errors import WeightsError
from processor.engine.precision import dtype_for
from processor.engine.weights import DETECTOR, FACE_RESTORER, PARSER, WeightFile, resolve_background, verify

__all__ = ["Models", "load_models"]

log = logging.getLogger(__name__)


@dataclass
class Models:
    """The resident networks; each is None when no loaded quality level needs it."""

    background: networks.BackgroundNet | None = None
    restorer: torch.nn.Module | None = None
    detector: torch.nn.Module | None = None
    parser: torch.nn.Module | None = None

    def release(self) -> None:
        """Drop every network."""
        self.background = self.restorer = self.detector = self.parser = None


def load_models(
    weights_dir: Path,
    qualities: frozenset[Quality],
    device: torch.device,
    *,
    allow_custom: bool,
    background: str | None = None,
) -> Models:
    """Check every file first (one error lists all problems), then build and load the networks."""
    needs_background = bool(qualities & {Quality.BALANCED, Quality.BEST})
    needs_faces = Quality.BEST in qualities
    wanted: list[WeightFile] = []
    problems: list[str] = []
    if needs_background:
        try:
            wanted.append(resolve_background(weights_dir, background))
        except WeightsError as exc:
            problems.append(str(exc))
    if needs_faces:
        wanted += [FACE_RESTORER, DETECTOR, PARSER]
    paths: dict[str, Path] = {}
    for spec in wanted:
        try:
            paths[spec.key] = verify(spec, weights_dir, allow_custom=allow_custom)
        except WeightsError as exc:
            problems.append(str(exc))
    if problems:
        raise WeightsError("cannot start the engine:\n  - " + "\n  - ".join(problems))

    models = Models()
    if needs_background:
        spec = wanted[0]
        net = networks.build_background(spec.key)
        networks.load_into(net.module, paths[spec.key], device)
        net.module.to(dtype=dtype_for("background", device), memory_format=torch.channels_last)
        models.background = net
        log.info("background model %s loaded from %s", spec.key, paths[spec.key])
    if needs_faces:
        models.restorer = networks.load_into(networks.build_restorer(), paths[FACE_RESTORER.key], device)
        models.detector = networks.load_into(networks.build_detector(device), paths[DETECTOR.key], device)
        models.parser = networks.load_into(networks.build_parser(), paths[PARSER.key], device)
        log.info("face models loaded from %s", weights_dir)
    return models
