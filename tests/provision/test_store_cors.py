"""The input bucket's CORS rule, on the real store: browsers on allowed origins may upload, others not.

A browser asks the store first (a preflight ``OPTIONS`` naming its origin and method) before the
page's ``XMLHttpRequest`` POST with upload progress; these tests send that preflight themselves.
"""

from __future__ import annotations

import asyncio

import pytest
import urllib3

from photoenhance.s3 import boto_client
from photoenhance.settings import Settings
from provision.bootstrap import Change, bootstrap
from provision.cors import CORS_RULE_ID, configure_upload_cors

pytestmark = pytest.mark.objectstore

PAGE = "http://127.0.0.1:8080"


def preflight(settings: Settings, origin: str, method: str = "POST") -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "OPTIONS",
        f"{settings.s3_endpoint}/{settings.s3_input_bucket}",
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": "content-type"},
        retries=False,
        timeout=10,
    )


def test_without_the_rule_the_store_refuses_a_browser_upload(store_settings: Settings) -> None:
    answer = preflight(store_settings, PAGE)
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_the_rule_admits_the_page_and_a_second_run_changes_nothing(store_settings: Settings) -> None:
    assert configure_upload_cors(store_settings) == "created"
    assert configure_upload_cors(store_settings) == "unchanged"
    answer = preflight(store_settings, PAGE)
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] in {PAGE, "*"}
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert preflight(store_settings, PAGE, "PUT").headers.get("Access-Control-Allow-Origin") in {PAGE, "*"}
    assert "Access-Control-Allow-Origin" not in preflight(store_settings, PAGE, "DELETE").headers


def test_restricted_origins_keep_other_rules_and_refuse_other_pages(store_settings: Settings) -> None:
    s3 = boto_client(store_settings, "s3")
    theirs = {"ID": "someone-else", "AllowedOrigins": ["http://other.example"], "AllowedMethods": ["GET"]}
    s3.put_bucket_cors(Bucket=store_settings.s3_input_bucket, CORSConfiguration={"CORSRules": [theirs]})
    only_page = store_settings.replace(s3_cors_origins=(PAGE,))
    assert configure_upload_cors(only_page) == "created"
    assert configure_upload_cors(store_settings.replace(s3_cors_origins=("http://elsewhere.example",))) == "updated"
    assert configure_upload_cors(only_page) == "updated"

    rules = s3.get_bucket_cors(Bucket=store_settings.s3_input_bucket)["CORSRules"]
    assert sorted(r["ID"] for r in rules) == sorted(["someone-else", CORS_RULE_ID])
    assert preflight(store_settings, PAGE).headers.get("Access-Control-Allow-Origin") == PAGE
    assert "Access-Control-Allow-Origin" not in preflight(store_settings, "http://evil.example").headers


def test_init_reports_the_cors_step(store_settings: Settings) -> None:
    steps = asyncio.run(bootstrap(store_settings))
    cors = [s for s in steps if s.what == f"CORS of {store_settings.s3_input_bucket}"]
    assert [s.change for s in cors] == [Change.CREATED]
    again = asyncio.run(bootstrap(store_settings))
    assert [s.change for s in again if s.what.startswith("CORS of")] == [Change.UNCHANGED]
    assert preflight(store_settings, PAGE).status == 200
