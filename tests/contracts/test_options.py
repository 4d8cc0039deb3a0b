"""Enhancement options: one validation for the API, manifests and object metadata."""

from __future__ import annotations

import pytest

from photoenhance.contracts.options import EnhanceOptions, OptionsError, OutputFormat, Quality


def test_defaults_and_round_trip() -> None:
    options = EnhanceOptions.from_dict({"quality": "fast", "upscale": 3, "output_format": "jpg"})
    assert options.quality is Quality.FAST and options.upscale == 3.0
    assert options.output_format is OutputFormat.JPEG
    assert EnhanceOptions.from_dict(options.to_dict()) == options
    assert EnhanceOptions.from_dict(None) == EnhanceOptions()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"colour": "red"}, "unknown option"),
        ({"quality": "ultra"}, "quality"),
        ({"upscale": 0.5}, "upscale"),
        ({"upscale": 5}, "upscale"),
        ({"upscale": "nan"}, "upscale"),
        ({"upscale": True}, "upscale"),
        ({"fidelity": 1.5}, "fidelity"),
        ({"output_quality": 0}, "output_quality"),
        ({"output_quality": 80.5}, "output_quality"),
        ({"output_format": "gif"}, "output_format"),
        ({"tile": 8}, "tile"),
        ({"only_center_face": "maybe"}, "only_center_face"),
    ],
)
def test_bad_options_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        EnhanceOptions.from_dict(data)


def test_options_must_be_an_object() -> None:
    with pytest.raises(OptionsError, match="JSON object"):
        EnhanceOptions.from_dict(["fast"])  # type: ignore[arg-type]


def test_metadata_overrides_base_options() -> None:
    base = EnhanceOptions(quality=Quality.BALANCED, upscale=2)
    meta = {"photoenhance-quality": "fast", "photoenhance-output-format": "png", "batch-id": "x"}
    options = EnhanceOptions.from_metadata(meta, base)
    assert (options.quality, options.output_format, options.upscale) == (Quality.FAST, OutputFormat.PNG, 2.0)
    with pytest.raises(OptionsError):
        EnhanceOptions.from_metadata({"photoenhance-upscale": "nine"})


def test_output_format_defaults_to_auto_and_keep_gps_to_false() -> None:
    options = EnhanceOptions.from_dict({})
    assert options.output_format is OutputFormat.AUTO and options.keep_gps is False
    assert EnhanceOptions.from_dict({"keep_gps": True, "output_format": "avif"}).keep_gps is True
    assert EnhanceOptions.from_metadata({"photoenhance-keep-gps": "true"}).keep_gps is True
    with pytest.raises(OptionsError, match="keep_gps"):
        EnhanceOptions.from_dict({"keep_gps": "maybe"})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"upscale": "4"}, "upscale"),
        ({"fidelity": "0.5"}, "fidelity"),
        ({"output_quality": "80"}, "output_quality"),
        ({"tile": "256"}, "tile"),
        ({"only_center_face": "true"}, "only_center_face"),
        ({"only_center_face": 1}, "only_center_face"),
        ({"quality": 1}, "quality"),
        ({"upscale": None}, "upscale"),
        ({"upscale": [2]}, "upscale"),
    ],
)
def test_json_options_take_json_types_only(data: dict, field: str) -> None:
    """Issue 17: numbers given as strings were accepted from JSON bodies and manifests."""
    with pytest.raises(OptionsError, match=field) as refused:
        EnhanceOptions.from_dict(data)
    assert "expected" in str(refused.value)


@pytest.mark.parametrize("tile", [4097, 10**30, 1e300, float("inf")])
def test_tile_is_bounded(tile: float) -> None:
    """Issue 17: ``tile: 10**30`` was stored as a batch option."""
    with pytest.raises(OptionsError, match="tile"):
        EnhanceOptions.from_dict({"tile": tile})


def test_tile_bounds_are_inclusive() -> None:
    assert EnhanceOptions.from_dict({"tile": 32}).tile == 32
    assert EnhanceOptions.from_dict({"tile": 4096}).tile == 4096
    assert EnhanceOptions.from_dict({"tile": 512.0}).tile == 512


def test_metadata_still_takes_numbers_and_flags_as_text() -> None:
    """S3 user metadata values are always strings: that path keeps reading ``"4"`` as 4."""
    meta = {"photoenhance-upscale": "4", "photoenhance-tile": "256", "photoenhance-only-center-face": "true"}
    options = EnhanceOptions.from_metadata(meta)
    assert (options.upscale, options.tile, options.only_center_face) == (4.0, 256, True)
    with pytest.raises(OptionsError, match="tile"):
        EnhanceOptions.from_metadata({"photoenhance-tile": "99999"})
