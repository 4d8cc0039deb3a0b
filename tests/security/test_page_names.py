"""Script in file names is shown on the web page as text and never runs (Chromium, real stack).

Names reach the page two ways: the names of the files a person drops (shown at once, before the
API has seen them, so the API's refusal of ``<``, ``>`` and quotes does not protect this path),
and names in what the servers send (the batch status lists every image of the batch, including
ones the page did not declare). Both are exercised: hostile local names are dropped, and an
image with a hostile name is registered in the page's batch, as the processor registers an
upload it has been told about (left pending, so that it does not end the batch early).

The browser context bypasses the page's Content-Security-Policy, which would block inline
handlers on its own: the test is about the rendering (``textContent``, never HTML), and a
regression to ``innerHTML`` must make it fail, not be hidden by the policy. The policy itself is
checked separately, on the page as ingest serves it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Route, expect

from db.records import ImageVersion
from db.repository import Repository
from harness.processor import image_bytes
from harness.stack import StartStack
from tests.web.test_page import (
    WAIT_MS,
    choose_fast_and_start,
    drop,
    jpeg,
    open_page,
    row,
)

pytestmark = [pytest.mark.security, pytest.mark.browser, pytest.mark.objectstore]

#: Dropped names the API refuses; the page shows them (and the refusal) before and after.
REFUSED_LOCAL = ['<img src=x onerror="window.__pwned=1">.jpg', "<svg onload=window.__pwned=2>.png"]

#: A dropped name the API accepts: markup spelt with entities and an attribute-like tail.
ACCEPTED_LOCAL = "&lt;img src=x onerror=window.__pwned=3&gt; onmouseover=window.__pwned=4 .jpg"

#: The name of an image put into the page's batch behind the page's back.
SERVER_NAME = "<img src=x onerror=window.__pwned=5>.jpg"

#: Elements a name parsed as HTML would have created.
PLANTED = "#files script, #files svg, #files iframe, #files img[src='x'], #files img:not([src])"


@pytest.fixture
async def csp_bypassing_context(browser_context: BrowserContext) -> AsyncIterator[BrowserContext]:
    """A second context of the same Chromium, one that ignores the page's Content-Security-Policy.

    (Serving the page without its policy through a route would not do: Chromium then takes the
    page for a public one and refuses it the loopback store and notifier.)
    """
    assert browser_context.browser is not None
    context = await browser_context.browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 900})
    try:
        yield context
    finally:
        await context.close()


async def pwned(page: Page) -> Any:
    return await page.evaluate("() => window.__pwned")


async def test_script_in_names_is_shown_as_text_and_never_runs(
    start_stack: StartStack, csp_bypassing_context: BrowserContext, repository: Repository
) -> None:
    stack = await start_stack()
    page, watch = await open_page(csp_bypassing_context, stack)
    # What the page hears from the servers, to prove the hostile server-side name reached it.
    received: list[str] = []

    async def keep_body(response: Any) -> None:
        if "/api/v1/batches/" in response.url and response.request.method == "GET":
            received.append(await response.text())

    page.on("response", keep_body)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: received.append(str(frame))))

    # Uploads wait until the extra image is in the batch, so it is there before the page's own
    # images complete (and the status the page then reads lists it).
    created: dict[str, Any] = {}
    store_netloc = urlsplit(stack.settings.s3_endpoint).netloc

    async def hold_upload(route: Route) -> None:
        while "registered" not in created:
            await page.wait_for_timeout(50)
        await route.continue_()

    await page.route(lambda url: urlsplit(url).netloc == store_netloc, hold_upload)

    files = [
        (REFUSED_LOCAL[0], jpeg(48, 32, 1), "image/jpeg"),
        (REFUSED_LOCAL[1], image_bytes(40, 40, seed=2, fmt="PNG"), "image/png"),
        (ACCEPTED_LOCAL, jpeg(48, 32, 3), "image/jpeg"),
        ("plain.jpg", jpeg(48, 32, 4), "image/jpeg"),
    ]
    await drop(page, files)
    # Shown at once, as typed, and nothing was parsed out of them.
    assert await page.locator(".file-name").all_text_contents() == [name for name, _, _ in files]
    assert await page.locator(PLANTED).count() == 0
    await expect(page.get_by_role("button", name="Enhance")).to_be_enabled()

    async with page.expect_response(lambda r: r.url.endswith("/api/v1/batches") and r.status == 201) as creation:
        await choose_fast_and_start(page)
    batch_id = (await (await creation.value).json())["batch_id"]
    await repository.register_image(
        ImageVersion(
            bucket=stack.settings.s3_input_bucket, batch_id=batch_id, key=f"{batch_id}/{SERVER_NAME}",
            name=SERVER_NAME, etag="0" * 32, size=100, uploaded_at=datetime.now(UTC),
        )
    )
    created["registered"] = True
    await expect(page.locator("#summary")).to_have_text(re.compile(r"^Done: "), timeout=WAIT_MS)

    # The refused names say why, still as text; the accepted ones were enhanced.
    for name in REFUSED_LOCAL:
        await expect(row(page, name).locator(".file-status")).to_have_text(re.compile(r"^Not uploaded: .*(quotes|<)"))
    for name in (ACCEPTED_LOCAL, "plain.jpg"):
        await expect(row(page, name)).to_have_attribute("data-state", "completed")
    accepted_link = row(page, ACCEPTED_LOCAL).locator("a.file-download")
    assert re.fullmatch(r"Download [^<>\"']+\.jpg", await accepted_link.inner_text())

    # The hostile server-side name did reach the page, and the page did not show it.
    assert any(json.dumps(SERVER_NAME)[1:-1] in text or SERVER_NAME in text for text in received), received
    assert SERVER_NAME not in await page.locator("#files").inner_text()
    assert await page.locator(".file-name").all_text_contents() == [name for name, _, _ in files]

    # Nothing ran and nothing was planted, loaded or reported.
    assert await pwned(page) is None
    assert await page.locator(PLANTED).count() == 0
    stray = [u for u in watch.requests if urlsplit(u).path.endswith("/x") or urlsplit(u).path == "/x"]
    assert stray == []
    assert watch.errors == []

    # The second layer, checked on its own: the page as served forbids inline and foreign scripts.
    served = await page.request.get(stack.ingest_url + "/")
    policy = served.headers["content-security-policy"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src")).split()[1:]
    assert script_src == ["'self'"], policy
