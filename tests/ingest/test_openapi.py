"""The OpenAPI description matches the app: same routes, and real responses fit its schemas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web
from referencing import Registry, Resource

import ingest
from db.repository import Repository
from ingest.app import create_app
from ingest.openapi import ERROR_CODES
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file

ERROR_CODE_PATTERN = re.compile(r"""ApiError\(\s*\d+,\s*"([a-z_]+)\"""")


def validate(document: dict[str, Any], schema_name: str, instance: Any) -> None:
    registry = Registry().with_resource("openapi", Resource.opaque(document))
    schema = {"$ref": f"openapi#/components/schemas/{schema_name}"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    validator.validate(instance)


def app_routes(settings: Settings, repository: Repository) -> set[tuple[str, str]]:
    app: web.Application = create_app(settings, repository=repository, web_dir=None)
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        routes.add((info.get("path") or info.get("formatter"), route.method.lower()))
    return routes


async def test_described_routes_are_exactly_the_served_routes(
    start_ingest: StartIngest, settings: Settings, repository: Repository
) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.get(ingest.url("/api/v1/openapi.json")) as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert described == app_routes(settings, repository)


async def test_real_responses_fit_the_schemas(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.get(ingest.url("/api/v1/openapi.json")) as response:
        document = await response.json()
    request = {"files": [image_file("a.jpg"), image_file("b.png", content_type="image/png")], "options": {"quality": "fast"}}
    validate(document, "CreateBatchRequest", request)
    created = await ingest.create(**request)
    validate(document, "CreateBatchResponse", created)
    async with ingest.http.get(
        ingest.url(f"/api/v1/batches/{created['batch_id']}"), headers={"Authorization": f"Bearer {created['token']}"}
    ) as response:
        validate(document, "BatchStatus", await response.json())
    async with ingest.http.post(ingest.url("/api/v1/batches"), data=b"nope") as response:
        validate(document, "Error", await response.json())
    assert document["components"]["schemas"]["CreateBatchRequest"]["properties"]["files"]["maxItems"] == 1000


def test_every_error_code_the_code_raises_is_documented() -> None:
    raised = set()
    for path in Path(ingest.__file__).parent.rglob("*.py"):
        raised |= set(ERROR_CODE_PATTERN.findall(path.read_text()))
    assert raised, "the pattern found no ApiError"
    assert raised <= set(ERROR_CODES), raised - set(ERROR_CODES)
