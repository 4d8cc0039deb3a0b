"""The page's lists of accepted formats match the one list (photoenhance/contracts/formats.py)."""

from __future__ import annotations

import re
from pathlib import Path

from photoenhance.contracts.formats import ACCEPTED_CONTENT_TYPES, INPUT_FORMATS

WEB = Path(__file__).resolve().parents[2] / "ingest" / "web"


def test_first_bytes_check_knows_every_accepted_type() -> None:
    sniff = (WEB / "sniff.js").read_text()
    supported = sniff[sniff.index("const SUPPORTED"):sniff.index("];", sniff.index("const SUPPORTED"))]
    assert sorted(re.findall(r'type: "([^"]+)"', supported)) == sorted(ACCEPTED_CONTENT_TYPES)


def test_file_picker_offers_every_accepted_type_and_extension() -> None:
    accept = re.search(r'accept="([^"]+)"', (WEB / "index.html").read_text()).group(1).split(",")
    for fmt in INPUT_FORMATS:
        assert fmt.content_type in accept
        assert set(fmt.extensions) <= set(accept)
