"""Safe names: what is refused, what accepted names become, and download-name headers."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from ingest.ids import CROCKFORD_ALPHABET, new_ulid
from ingest.names import NameRefused, archive_path, assign_names, check_name, content_disposition, safe_name
from photoenhance.contracts.keys import parse_input_key


@pytest.mark.parametrize(
    "name",
    ["", "   ", ".", "..", "...", "../x.jpg", "a/b.jpg", "a\\b.jpg", "a\x00b.jpg", "a\x1fb.jpg", "a\x7fb.jpg",
     "a\nb.jpg", "a\u2028b.jpg", "photo\u202egpj.exe", 'a"b.jpg', "it's.jpg", "a`b.jpg", "a<b>.jpg", "a:b.jpg",
     "a|b.jpg", "a?.jpg", "a*.jpg", "x" * 256, "\ud800.jpg"],
)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(NameRefused) as refused:
        check_name(name)
    assert refused.value.reason


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("photo.jpg", "photo.jpg"),
        ("My Photo (1).JPEG", "My_Photo_1.jpeg"),
        ("  spaced   out .png", "spaced_out.png"),
        (".hidden.jpg", "hidden.jpg"),
        ("-rf.jpg", "rf.jpg"),
        ("_batch.json", "batch.json"),
        ("CON.jpg", "CON_.jpg"),
        ("lpt1", "lpt1_"),
        ("ünïcødé 日本 😀.webp", "ünïcødé_日本.webp"),
        ("e\u0301.jpg", "\u00e9.jpg"),  # NFC
        ("#$%&.jpg", "file.jpg"),
        ("a.tar.gz", "a.tar.gz"),
        ("archive.verylongextension", "archive.verylongextension"),
        ("x" * 255, "x" * 150),
    ],
)
def test_accepted_names_become_safe_keys(name: str, safe: str) -> None:
    assert safe_name(name) == safe
    parse_input_key(f"batch/{safe}")  # the processor accepts the key


def test_long_multibyte_names_stay_within_the_byte_budget() -> None:
    name = "日" * 200 + ".jpg"
    safe = safe_name(name)
    assert len(safe.encode()) <= 150 and safe.endswith(".jpg") and safe.startswith("日")


def test_duplicates_are_disambiguated_on_the_case_folded_stem() -> None:
    assert assign_names(["a.jpg", "A.JPG", "a.png", "a-2.jpg", "b", "B"]) == [
        "a.jpg", "A-2.jpg", "a-3.png", "a-2-2.jpg", "b", "B-2"
    ]


def test_the_first_refused_name_is_reported_with_its_index() -> None:
    with pytest.raises(NameRefused) as refused:
        assign_names(["ok.jpg", "also ok.jpg", "../bad.jpg", ""])
    assert refused.value.index == 2


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("a/b/c.jpg", "a/b/c.jpg"),
        ("/abs/x.jpg", "abs/x.jpg"),
        ("a//b.jpg", "a/b.jpg"),
        ("..../x.jpg", "x.jpg"),
        ("C:\\Windows\\x.jpg", "C_Windows_x.jpg"),
        ("a\x00b.jpg", "a_b.jpg"),
        ("", "file"),
    ],
)
def test_archive_paths_never_leave_the_archive(name: str, path: str) -> None:
    assert archive_path(name) == path


@pytest.mark.parametrize("name", ['a"; filename="evil.exe', "ünï 日本.jpg", "a\r\nX-Evil: 1.jpg", "plain.zip"])
def test_content_disposition_is_safe_for_any_name(name: str) -> None:
    header = content_disposition(name)
    fallback = re.fullmatch(r"attachment; filename=\"([A-Za-z0-9._-]+)\"; filename\*=UTF-8''([A-Za-z0-9%!#$&+.^_`|~-]+)", header)
    assert fallback is not None, header
    assert unquote(fallback.group(2)) == name


def test_ulids_are_26_crockford_characters_ordered_by_time() -> None:
    first, second = new_ulid(now_ms=1_700_000_000_000), new_ulid(now_ms=1_700_000_000_001)
    assert len(first) == 26 and set(first) <= set(CROCKFORD_ALPHABET)
    assert first < second
    assert new_ulid(now_ms=0).startswith("0000000000")
    assert len({new_ulid(now_ms=5) for _ in range(1000)}) == 1000
    with pytest.raises(ValueError):
        new_ulid(now_ms=1 << 48)


#: Characters that render as nothing (issue 17: ``a\u034fb`` displayed as ``ab`` in keys, result
#: names and ZIP entries). Some are letters (Hangul fillers) or marks, which the old rule kept.
INVISIBLE = [
    "\u115f", "\u1160", "\u3164", "\uffa0", "\u034f", "\u00ad", "\u200b", "\u200c", "\u200d", "\u200e",
    "\u200f", "\u2060", "\u2061", "\u2064", "\u206f", "\ufeff", "\ufe0f", "\U000e0041", "\U000e0100",
    "\u180e", "\u17b4", "\U0001d173", "\u0600",
]  # fmt: skip


@pytest.mark.parametrize("ch", INVISIBLE, ids=lambda ch: f"U+{ord(ch):04X}")
def test_invisible_characters_never_reach_keys_result_names_or_zip_entries(ch: str) -> None:
    name = f"a{ch}b.jpg"
    try:
        safe = safe_name(name)
    except NameRefused:
        return  # refused outright is fine too
    assert ch not in safe
    assert safe == "a_b.jpg"
    entry = archive_path(f"dir/{name}")
    assert ch not in entry and entry == "dir/a_b.jpg"
    header = content_disposition(name)
    assert ch not in unquote(header.rpartition("''")[2])
    assert ch.encode("utf-8") not in unquote(header.rpartition("''")[2]).encode("utf-8")


def test_invisible_only_names_become_a_plain_placeholder() -> None:
    assert assign_names(["\u3164.jpg", "\u115f\u1160.jpg"]) == ["file.jpg", "file-2.jpg"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a.jpg", "\uff41.jpg"], ["a.jpg", "\uff41-2.jpg"]),  # fullwidth a
        (["\uff21.png", "a.jpg"], ["\uff21.png", "a-2.jpg"]),  # fullwidth A vs a, other extension
        (["\ufb01le.jpg", "file.jpg"], ["\ufb01le.jpg", "file-2.jpg"]),  # the fi ligature
        (["x\u00b2.jpg", "x2.jpg"], ["x\u00b2.jpg", "x2-2.jpg"]),  # superscript two
    ],
)
def test_names_that_fold_to_the_same_text_under_nfkc_collide(names: list[str], expected: list[str]) -> None:
    assert assign_names(names) == expected
