"""The failure codes contract: one enumeration, documented members, and which a retry can help."""

from __future__ import annotations

import ast
import inspect

import pytest

from photoenhance.contracts import failures
from photoenhance.contracts.failures import (
    CodedError,
    FailureCode,
    ImageError,
    retry_can_help,
    why_retry_cannot_help,
)
from processor.failures import OUTAGE_CODES, PermanentFailure


def test_every_member_has_a_doc_comment_line() -> None:
    source = inspect.getsource(FailureCode).splitlines()
    tree = ast.parse(inspect.getsource(FailureCode))
    members = [node for node in tree.body[0].body if isinstance(node, ast.Assign)]
    assert len(members) == len(FailureCode)
    for node in members:
        above = source[node.lineno - 2].strip()
        assert above.startswith("#: "), f"{ast.unparse(node.targets[0])} has no '#:' line above it"


def test_every_image_error_carries_a_member_of_the_enumeration() -> None:
    kinds = [obj for obj in vars(failures).values() if isinstance(obj, type) and issubclass(obj, ImageError)]
    assert len(kinds) >= 8
    for kind in kinds:
        assert isinstance(kind.code, FailureCode), kind
        error = kind("why")
        assert error.to_dict() == {"code": kind.code.value, "reason": "why"}
        assert str(error) == f"{kind.code.value}: why"


@pytest.mark.parametrize(
    "code",
    ["not_an_image", "unsupported_format", "corrupt_image", "too_many_pixels", "too_large", "output_too_large",
     "invalid_key", "bad_options", "output_key_conflict", "source_missing", "source_replaced", "upload_missing"],
)
def test_a_retry_cannot_help_what_the_input_decides(code: str) -> None:
    assert not FailureCode(code).retry_can_help and not retry_can_help(code)
    assert why_retry_cannot_help(code)


@pytest.mark.parametrize(
    "code", ["retries_exhausted", "delivery_limit", "processing_failed", "quality_not_loaded", "image_error"]
)
def test_a_retry_can_help_what_the_worker_decides(code: str) -> None:
    assert FailureCode(code).retry_can_help


def test_outages_are_members_and_unknown_codes_are_retried() -> None:
    assert OUTAGE_CODES <= set(FailureCode)
    assert all(code.retry_can_help for code in OUTAGE_CODES)
    assert retry_can_help("a_code_from_a_newer_version") and retry_can_help(None)


def test_one_code_and_reason_base() -> None:
    failure = PermanentFailure(FailureCode.TOO_LARGE, "the object is 9 bytes")
    assert isinstance(failure, CodedError) and issubclass(ImageError, CodedError)
    assert (failure.code, failure.reason) == ("too_large", "the object is 9 bytes")
    assert str(failure) == "too_large: the object is 9 bytes"
