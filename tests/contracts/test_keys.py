"""Key validation and the input-to-output key mapping."""

from __future__ import annotations

import pytest

from photoenhance.contracts.failures import CodedError, FailureCode
from photoenhance.contracts.keys import KeyRejected, is_valid_batch_id, output_key, parse_input_key


@pytest.mark.parametrize("batch_id", ["a", "01HZX3", "batch-42", "x.y_z", "A" * 64])
def test_valid_batch_ids(batch_id: str) -> None:
    assert is_valid_batch_id(batch_id)


@pytest.mark.parametrize("batch_id", ["", "-a", ".a", "_a", "a b", "a/b", "A" * 65, "ü"])
def test_invalid_batch_ids(batch_id: str) -> None:
    assert not is_valid_batch_id(batch_id)


def test_parse_splits_batch_and_nested_name() -> None:
    parsed = parse_input_key("b1/sub/photo 1.jpg")
    assert (parsed.batch_id, parsed.name, parsed.key) == ("b1", "sub/photo 1.jpg", "b1/sub/photo 1.jpg")
    assert not parsed.is_manifest
    assert parse_input_key("b1/_batch.json").is_manifest


def test_overlong_keys_are_refused() -> None:
    with pytest.raises(KeyRejected, match="longer than 1024 bytes"):
        parse_input_key("b1/" + "ü" * 600)


def test_a_refused_key_is_a_coded_error_that_names_its_key() -> None:
    with pytest.raises(KeyRejected) as info:
        parse_input_key("b1/../x.jpg")
    refused = info.value
    assert isinstance(refused, CodedError) and isinstance(refused, ValueError)
    assert refused.code is FailureCode.INVALID_KEY and refused.batch_id == "b1"
    assert refused.to_dict() == {"code": "invalid_key", "reason": refused.reason}
    assert str(refused) == f"key 'b1/../x.jpg' rejected: {refused.reason}"


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("photo.png", "jpeg", "b1/photo.jpg"),
        ("photo.JPG", "jpeg", "b1/photo.jpg"),
        ("a.b.c.tiff", "webp", "b1/a.b.c.webp"),
        ("noext", "png", "b1/noext.png"),
        (".hidden", "png", "b1/.hidden.png"),
        ("sub/dir/x.jpeg", "png", "b1/sub/dir/x.png"),
    ],
)
def test_output_key_takes_the_format_extension(name: str, fmt: str, expected: str) -> None:
    assert output_key("b1", name, fmt) == expected


def test_output_key_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        output_key("b1", "a.jpg", "gif")


def test_output_key_takes_a_resolved_format() -> None:
    from photoenhance.contracts.keys import output_key

    assert output_key("b", "IMG_0001.HEIC", "jpeg") == "b/IMG_0001.jpg"
    assert output_key("b", "IMG_0001.HEIC", "avif") == "b/IMG_0001.avif"
    with pytest.raises(ValueError, match="auto"):
        output_key("b", "IMG_0001.HEIC", "auto")


def test_input_manifest_and_second_choice_result_keys_have_one_spelling() -> None:
    from photoenhance.contracts.keys import (
        MANIFEST_NAME,
        input_key,
        manifest_key,
        output_key_by_full_name,
        parse_input_key,
    )

    assert input_key("b1", "trip/a.png") == "b1/trip/a.png"
    assert parse_input_key(input_key("b1", "trip/a.png")).name == "trip/a.png"
    assert manifest_key("b1") == f"b1/{MANIFEST_NAME}"
    assert output_key_by_full_name("b1", "a.jpg", "jpeg") == "b1/a.jpg.jpg"
    with pytest.raises(ValueError, match="unknown output format"):
        output_key_by_full_name("b1", "a.jpg", "gif")
