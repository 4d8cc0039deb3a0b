"""The web page in Debian's Chromium, driven by Playwright, against the whole pipeline.

ingest (serving the page), the notifier and a ``fast`` processor run as real processes
(harness/stack.py) over Ceph RGW, RabbitMQ and the test's database. The browser uploads
straight to RGW with the presigned POST policies (which needs the bucket's CORS rule) and follows
progress over the notifier's WebSocket.

Set ``PHOTOENHANCE_SCREENSHOT=docs/screenshot.png`` to refresh the README's screenshot.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from aiohttp import web
from PIL import Image
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from harness.objectstore import ObjectStore
from harness.processor import WAIT_S, image_bytes
from harness.stack import Stack, StartStack
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, start_ingest  # noqa: F401  (the fixture, registered here)

pytestmark = [pytest.mark.browser, pytest.mark.objectstore]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Playwright's waits in milliseconds: bounds for the pipeline, not speed checks.
WAIT_MS = WAIT_S * 1000

#: A name that would render as markup if the page ever used innerHTML.
MARKUP_NAME = "Tom &amp; Jerry &lt;b&gt;bold.jpg"


def jpeg(width: int, height: int, seed: int) -> bytes:
    return image_bytes(width, height, seed=seed, fmt="JPEG")


def truncated_jpeg() -> bytes:
    """A JPEG cut off in the middle: it looks like a JPEG to the page, and fails in the processor."""
    whole = jpeg(96, 72, seed=9)
    return whole[: len(whole) // 2]


def five_images() -> list[tuple[str, bytes, str]]:
    """(name, bytes, type): four good photos, one corrupt."""
    return [
        ("beach.jpg", jpeg(96, 64, 1), "image/jpeg"),
        ("Grandma 1962.png", image_bytes(80, 80, seed=2, fmt="PNG"), "image/png"),
        (MARKUP_NAME, jpeg(64, 96, 3), "image/jpeg"),
        ("Café ☕.jpg", jpeg(120, 90, 4), "image/jpeg"),
        ("damaged.jpg", truncated_jpeg(), "image/jpeg"),
    ]


@pytest.fixture
async def browser_context() -> AsyncIterator[BrowserContext]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
        try:
            yield context
        finally:
            await context.close()
            await browser.close()


class PageWatch:
    """Everything the page requested, its WebSocket URLs, and its errors."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.websockets: list[str] = []
        self.errors: list[str] = []
        self.refusals: list[tuple[str, str, int]] = []
        #: Content-Security-Policy violations the page reported (blocked URI and directive).
        self.violations: list[str] = []
        #: Successful POSTs to the object store (each one an upload).
        self.uploads: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # Chromium logs every error response; those are checked one by one in ``refusals``.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        method, path = response.request.method, urlsplit(response.url).path
        if response.status >= 400:
            self.refusals.append((method, path, response.status))
        elif method == "POST" and not path.startswith("/api/"):
            self.uploads.append(path)


async def open_page(context: BrowserContext, stack: Stack) -> tuple[Page, PageWatch]:
    page = await context.new_page()
    watch = PageWatch(page)
    await page.expose_function("reportViolation", lambda text: watch.violations.append(text))
    # Listen before any script runs: every CSP violation the page causes is reported.
    await page.add_init_script(
        """document.addEventListener("securitypolicyviolation",
             (e) => window.reportViolation(`${e.effectiveDirective} ${e.blockedURI}`));"""
    )
    response = await page.goto(stack.ingest_url + "/")
    assert response is not None
    # The page runs under the policy ingest sends as a header (tests/security/test_headers.py
    # checks every directive): it must work with it, not around it.
    headers = await response.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    await expect(page.get_by_role("heading", name="PhotoEnhance")).to_be_visible()
    return page, watch


async def drop(page: Page, files: list[tuple[str, bytes, str]]) -> None:
    """Drop files on the drop zone as a person dragging them from a file manager would."""
    payload = [{"name": n, "data": base64.b64encode(d).decode(), "type": t} for n, d, t in files]
    await page.evaluate(
        """(files) => {
          const transfer = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], f.name, { type: f.type }));
          }
          const zone = document.getElementById("drop-zone");
          for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
          }
        }""",
        payload,
    )


def row(page: Page, name: str) -> Any:
    return page.locator("li.file").filter(has=page.locator(".file-name", has_text=re.compile(f"^{re.escape(name)}$")))


async def choose_fast_and_start(page: Page) -> None:
    """Options and the start button, with the keyboard only."""
    await page.get_by_label("Quality").select_option("fast")
    await page.get_by_label("Upscale").select_option("2")
    await page.get_by_role("button", name="Enhance").focus()
    await page.keyboard.press("Enter")


async def test_five_photos_four_enhanced_one_fails_with_its_reason(
    start_stack: StartStack, browser_context: BrowserContext, object_store: ObjectStore, tmp_path: Path
) -> None:
    stack = await start_stack()
    page, watch = await open_page(browser_context, stack)
    images = five_images()
    not_an_image = ("notes.txt", b"shopping list: milk, eggs\n", "text/plain")
    refused_by_server = ('say "cheese".jpg', jpeg(64, 64, 7), "image/jpeg")
    await drop(page, [*images, not_an_image, refused_by_server])

    # the list shows every file by its exact name (escaped, not parsed) and size
    names = await page.locator(".file-name").all_text_contents()
    assert names == [name for name, _, _ in [*images, not_an_image, refused_by_server]]
    assert await page.locator(".file-name b").count() == 0
    await expect(row(page, "beach.jpg").locator(".file-size")).to_have_text(re.compile(r"^\d+(\.\d)? (B|KB)$"))
    # the page refuses what is not an image before anything is uploaded
    await expect(row(page, "notes.txt").locator(".file-status")).to_have_text(
        "Not uploaded: Not an image: only JPEG, PNG, WebP, HEIC and AVIF photos can be enhanced."
    )
    await expect(page.get_by_role("button", name="Enhance")).to_be_enabled()

    await choose_fast_and_start(page)
    await expect(page.locator("#summary")).to_have_text(re.compile(r"^Done: "), timeout=WAIT_MS)

    # four enhanced, the corrupt one failed with the processor's reason, the rest refused with theirs
    for name, _, _ in images[:4]:
        await expect(row(page, name)).to_have_attribute("data-state", "completed")
        await expect(row(page, name).locator(".file-status")).to_have_text("Enhanced")
    await expect(row(page, "damaged.jpg")).to_have_attribute("data-state", "failed")
    await expect(row(page, "damaged.jpg").locator(".file-status")).to_have_text(
        re.compile(r"^Failed: the JPEG data is (truncated|damaged)")
    )
    await expect(row(page, refused_by_server[0]).locator(".file-status")).to_have_text(
        re.compile(r"^Not uploaded: .*quotes")
    )
    summary = await page.locator("#summary").text_content()
    assert summary is not None and re.fullmatch(r"Done: 4 of 7 enhanced · 3 failed · \d+\.\d s elapsed", summary)
    await page.set_viewport_size({"width": 1100, "height": 1500})
    await page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    # before/after: the original under a slider the keyboard moves, the 2x result beneath it
    beach = row(page, "beach.jpg")
    before = beach.get_by_role("img", name="Before: beach.jpg")
    after = beach.get_by_role("img", name="After: beach.jpg")
    await expect(after).to_have_js_property("complete", True)
    await expect(before).to_have_js_property("complete", True)
    assert await before.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [96, 64]
    assert await after.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [192, 128]
    slider = page.get_by_label("Before / after position for beach.jpg")
    frame = beach.locator(".compare-frame")
    position = "el => getComputedStyle(el).getPropertyValue('--pos').trim()"
    assert await frame.evaluate(position) == "50%"
    await slider.focus()
    await page.keyboard.press("Home")
    assert await frame.evaluate(position) == "0%"
    await page.keyboard.press("End")
    await page.keyboard.press("ArrowLeft")
    assert await frame.evaluate(position) == "99%"
    assert await before.evaluate("img => getComputedStyle(img).clipPath") == "inset(0px 1% 0px 0px)"

    # one result downloaded through its own link
    async with page.expect_download() as single:
        await beach.get_by_role("link", name="Download beach.jpg").click()
    single_path = await (await single.value).path()
    assert Image.open(single_path).size == (192, 128)

    # "download all": the ZIP holds the four results and says what is missing and why
    async with page.expect_download() as everything:
        await page.get_by_role("link", name="Download all (ZIP)").click()
    with zipfile.ZipFile(await (await everything.value).path()) as archive:
        entries = sorted(archive.namelist())
        assert len(entries) == 5 and "FAILURES.txt" in entries
        sizes = sorted(Image.open(io.BytesIO(archive.read(e))).size for e in entries if e != "FAILURES.txt")
        failures = archive.read("FAILURES.txt").decode()
    assert sizes == sorted([(192, 128), (160, 160), (128, 192), (240, 180)])
    assert re.search(r"damaged\.jpg.*the JPEG data is (truncated|damaged)", failures), failures

    # nothing came from anywhere but the page's server, the store and the notifier
    allowed = {urlsplit(stack.ingest_url).netloc, urlsplit(object_store.endpoint).netloc, urlsplit(stack.notifier_url).netloc}
    foreign = [u for u in watch.requests if not u.startswith("blob:") and urlsplit(u).netloc not in allowed]
    assert foreign == []
    assert watch.errors == []
    assert watch.violations == []
    # the one error answer: the API refusing the name with quotes (the page then went on without it)
    assert watch.refusals == [("POST", "/api/v1/batches", 400)]
    assert len(watch.uploads) == 5 and set(watch.uploads) == {f"/{stack.settings.s3_input_bucket}"}

    target = os.environ.get("PHOTOENHANCE_SCREENSHOT")
    if target:
        shutil.copy(tmp_path / "page.png", target)


async def test_uploads_survive_the_store_and_the_notifier_going_down(
    start_stack: StartStack, browser_context: BrowserContext, object_store: ObjectStore
) -> None:
    """Store down: uploads retry, then offer a retry button. Notifier restarted: the page
    resumes its stream with ``since`` and misses nothing. No upload is made twice."""
    if not object_store.can_restart:
        pytest.skip("the object store is run by someone else and cannot be stopped")
    stack = await start_stack(processor=False)
    page, watch = await open_page(browser_context, stack)
    files = [("one.jpg", jpeg(64, 48, 11), "image/jpeg"), ("two.jpg", jpeg(72, 48, 12), "image/jpeg")]
    await drop(page, files)

    object_store.stop()
    try:
        await choose_fast_and_start(page)
        await expect(row(page, "one.jpg").locator(".file-status")).to_have_text(
            re.compile(r"^Network problem, trying again"), timeout=WAIT_MS
        )
        await expect(row(page, "one.jpg")).to_have_attribute("data-state", "upload-failed", timeout=WAIT_MS)
        await expect(row(page, "two.jpg")).to_have_attribute("data-state", "upload-failed", timeout=WAIT_MS)
    finally:
        object_store.start()
    for name in ("one.jpg", "two.jpg"):
        await page.get_by_role("button", name=f"Retry upload of {name}").focus()
        await page.keyboard.press("Enter")
    for name in ("one.jpg", "two.jpg"):
        await expect(row(page, name)).to_have_attribute("data-state", "uploaded", timeout=WAIT_MS)

    # the notifier restarts while nothing is processed yet; the page reconnects with since=
    opened = len(watch.websockets)
    stack.notifier.stop()
    await expect(page.locator("#connection")).to_be_visible(timeout=WAIT_MS)
    stack.notifier.start()
    await expect(page.locator("#connection")).to_be_hidden(timeout=WAIT_MS)
    assert any("since=" in url for url in watch.websockets[opened:])

    stack.start_processor()
    await expect(page.locator("#summary")).to_have_text(re.compile(r"^Done: 2 of 2 enhanced"), timeout=WAIT_MS)
    archive = urlsplit(await page.get_by_role("link", name="Download all (ZIP)").get_attribute("href") or "")
    batch_id = archive.path.split("/")[-2]
    status = stack.api(f"/api/v1/batches/{batch_id}", token=parse_qs(archive.query)["token"][0])
    # each file reached the store once: two images, no superseded versions, both enhanced
    assert [image["state"] for image in status["images"]] == ["completed", "completed"]
    assert (status["counts"]["uploaded"], status["counts"]["completed"]) == (2, 2)
    assert watch.refusals == []
    assert len(watch.uploads) == 2
    assert [e for e in watch.errors if not e.startswith("WebSocket connection to")] == []
    assert watch.violations == []


async def test_photos_of_a_level_no_worker_runs_wait_for_one_and_say_so(
    start_stack: StartStack, browser_context: BrowserContext
) -> None:
    """A fast worker runs and the deployment declares best (FLEET_LEVELS): best is offered, with no
    estimate; its photos are uploaded and each row says it waits for a worker that serves best."""
    stack = await start_stack(fleet_levels=("best",))
    page, watch = await open_page(browser_context, stack)
    await drop(page, [("one.jpg", jpeg(64, 48, 21), "image/jpeg"), ("two.jpg", jpeg(72, 48, 22), "image/jpeg")])
    estimates = page.locator("#estimates")
    await expect(estimates.locator('li[data-level="best"]')).to_have_text("best: no estimate (no worker running now)")
    await page.get_by_label("Quality").select_option("best")
    await page.get_by_role("button", name="Enhance").click()
    for name in ("one.jpg", "two.jpg"):
        await expect(row(page, name).locator(".file-status")).to_have_text(
            "Uploaded: waiting for a worker that serves best", timeout=WAIT_MS
        )
        await expect(row(page, name)).to_have_attribute("data-state", "waiting")
    await expect(page.locator("#summary")).to_have_text(re.compile(r"time left unknown: no measured speed for best yet$"))
    assert watch.refusals == [] and watch.violations == []
    assert [e for e in watch.errors if not e.startswith("WebSocket connection to")] == []


async def test_heic_and_avif_photos_are_enhanced_from_the_page(
    start_stack: StartStack, browser_context: BrowserContext
) -> None:
    """An iPhone-style HEIC (picked with no type, as file managers without HEIC support give it)
    and an AVIF, both made by real encoders, go through the page's first-bytes check, the POST
    policy and a worker, and come back as JPEG results (output format auto) twice their size."""
    from harness.pictures import avif_bytes, display_p3_icc, heic_bytes

    stack = await start_stack()
    page, watch = await open_page(browser_context, stack)
    picture = np.asarray(Image.open(io.BytesIO(jpeg(80, 60, 21))).convert("RGB"))
    files = [
        ("IMG_0042.HEIC", heic_bytes(picture, icc_profile=display_p3_icc()), ""),
        ("sunset.avif", avif_bytes(picture), "image/avif"),
    ]
    await drop(page, files)
    await choose_fast_and_start(page)
    await expect(page.locator("#summary")).to_have_text(re.compile(r"^Done: 2 of 2 enhanced"), timeout=WAIT_MS)
    for name, _, _ in files:
        item = row(page, name)
        await expect(item).to_have_attribute("data-state", "completed")
        after = item.get_by_role("img", name=f"After: {name}")
        await expect(after).to_have_js_property("complete", True)
        assert await after.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [160, 120]
        async with page.expect_download() as single:
            await item.get_by_role("link", name=re.compile(r"^Download ")).click()
        download = await single.value
        assert download.suggested_filename.endswith(".jpg")
        assert Image.open(await download.path()).format == "JPEG"
    assert len(watch.uploads) == 2
    assert watch.refusals == []
    assert watch.violations == []


async def test_a_page_on_another_origin_cannot_frame_the_page(
    start_ingest: StartIngest,  # noqa: F811 - the fixture imported above
    settings: Settings,
    browser_context: BrowserContext,
) -> None:
    """Clickjacking: a hostile site frames ``/`` to have its visitors press Enhance unknowingly.

    The hostile site (another port, so another origin) frames both the PhotoEnhance page and a
    page of its own; its own loads (the check can see a loaded frame), PhotoEnhance's does not.
    """
    ingest = await start_ingest(settings)

    async def hostile_page(_request: web.Request) -> web.Response:
        html = (
            f'<iframe id="victim" src="{ingest.url("/")}"></iframe>'
            '<iframe id="own" src="/own"></iframe>'
        )
        return web.Response(text=html, content_type="text/html")

    async def own_page(_request: web.Request) -> web.Response:
        return web.Response(text="<button>harmless</button>", content_type="text/html")

    hostile = web.Application()
    hostile.router.add_get("/", hostile_page)
    hostile.router.add_get("/own", own_page)
    runner = web.AppRunner(hostile)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        page = await browser_context.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        own = page.frame_locator("#own")
        await expect(own.get_by_role("button", name="harmless")).to_be_visible()
        victim = page.frame(url=lambda url: urlsplit(url).port == urlsplit(ingest.base_url).port)
        frames = [f for f in page.frames if f is not page.main_frame]
        assert len(frames) == 2
        # Blocked by frame-ancestors / X-Frame-Options: Chromium shows its error page instead.
        if victim is not None:
            assert await victim.locator("#start").count() == 0
        assert await page.frame_locator("#victim").locator("#start").count() == 0
        assert await page.frame_locator("#victim").get_by_role("heading", name="PhotoEnhance").count() == 0
    finally:
        await runner.cleanup()
