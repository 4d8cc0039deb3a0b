"""Weight files: checksums, messages and safe loading (fetching and the ncnn conversion: tests/provision)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from photoenhance.contracts.options import Quality
from processor.engine.errors import WeightsError
from processor.engine.weights import (
    BACKGROUND_MODELS,
    DETECTOR,
    FACE_RESTORER,
    PARSER,
    files_for,
    load_state_dict,
    resolve_background,
    verify,
)


def test_official_sums_and_urls_are_recorded_for_all_four_files() -> None:
    for spec in (FACE_RESTORER, DETECTOR, PARSER, BACKGROUND_MODELS["x2plus"]):
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.url.startswith("https://github.com/") and spec.url.endswith(spec.filename)


def test_fast_needs_no_file_and_best_needs_all_four() -> None:
    x2 = BACKGROUND_MODELS["x2plus"]
    assert files_for([Quality.FAST], x2) == []
    assert files_for([Quality.BALANCED], x2) == [x2]
    assert {s.filename for s in files_for([Quality.BEST], x2)} == {
        "RealESRGAN_x2plus.pth", "GFPGANv1.4.pth", "detection_Resnet50_Final.pth", "parsing_parsenet.pth"}


def test_verify_names_a_missing_file_and_its_url(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        verify(FACE_RESTORER, tmp_path, allow_custom=True)
    assert "GFPGANv1.4.pth" in str(info.value) and FACE_RESTORER.url in str(info.value)


def test_verify_checks_the_sum_unless_custom_weights_are_allowed(tmp_path: Path) -> None:
    (tmp_path / PARSER.filename).write_bytes(b"not the official parser")
    with pytest.raises(WeightsError, match="ALLOW_CUSTOM_WEIGHTS"):
        verify(PARSER, tmp_path, allow_custom=False)
    assert verify(PARSER, tmp_path, allow_custom=True) == tmp_path / PARSER.filename
    genuine = replace(PARSER, sha256=hashlib.sha256(b"not the official parser").hexdigest())
    assert verify(genuine, tmp_path, allow_custom=False).name == PARSER.filename


def test_background_prefers_x2plus_then_converted_models(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="import-ncnn"):
        resolve_background(tmp_path, None)
    (tmp_path / BACKGROUND_MODELS["animevideov3-ncnn"].filename).write_bytes(b"x")
    assert resolve_background(tmp_path, None).key == "animevideov3-ncnn"
    (tmp_path / BACKGROUND_MODELS["x2plus"].filename).write_bytes(b"x")
    assert resolve_background(tmp_path, None).key == "x2plus"
    assert resolve_background(tmp_path, "x4plus-ncnn").key == "x4plus-ncnn"
    with pytest.raises(WeightsError, match="unknown"):
        resolve_background(tmp_path, "x8")


def test_state_dicts_unwrap_params_ema_and_module_prefixes(tmp_path: Path) -> None:
    tensor = torch.ones(2)
    torch.save({"params_ema": {"a": tensor}, "params": {"a": tensor * 0}}, tmp_path / "ema.pth")
    torch.save({"module.b": tensor}, tmp_path / "bare.pth")
    assert torch.equal(load_state_dict(tmp_path / "ema.pth")["a"], tensor)
    assert list(load_state_dict(tmp_path / "bare.pth")) == ["b"]
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot read"):
        load_state_dict(tmp_path / "junk.pth")


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    torch.save({"params": {"a": torch.ones(1)}, "evil": np.dtype}, tmp_path / "code.pth")
    with pytest.raises(WeightsError):
        load_state_dict(tmp_path / "code.pth")
