"""Defaults from the fleet, as the ingest API answers them: capabilities, the level a new batch
gets, 409 for a level nobody serves, and waiting_for_worker in the status."""

from __future__ import annotations

from typing import Any

import pytest

from db.models import utcnow
from db.workers import WorkerRegistry
from photoenhance.settings import Settings
from tests.ingest.conftest import image_file


async def beat(repository, settings: Settings, worker_id: str, levels: list[str], speeds=None) -> None:
    await WorkerRegistry(repository.db, gone_after_s=settings.worker_gone_after_s).beat(
        worker_id, levels=levels, device="cpu", device_name="Test CPU", engine_version="1.0.0",
        speeds=speeds or {}, started_at=utcnow(),
    )


async def get(ingest, path: str) -> tuple[int, Any]:
    async with ingest.http.get(ingest.url(path)) as response:
        return response.status, await response.json()


async def post(ingest, body: dict[str, Any]) -> tuple[int, Any]:
    async with ingest.http.post(ingest.url("/api/v1/batches"), json=body) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_capabilities_and_defaults_follow_the_live_workers(settings: Settings, start_ingest) -> None:
    settings = settings.replace(fleet_levels=())
    ingest = await start_ingest(settings)
    status, caps = await get(ingest, "/api/v1/capabilities")
    assert status == 200 and caps["default_level"] == "fast" and "FLEET_LEVELS" in caps["default_reason"]
    assert [lv["served"] for lv in caps["levels"]] == [False, False, False]
    await beat(ingest.repository, settings, "gpu-1", ["balanced", "fast"], {"balanced": 40.0})
    status, caps = await get(ingest, "/api/v1/capabilities")
    levels = {lv["level"]: lv for lv in caps["levels"]}
    assert caps["default_level"] == "balanced"
    assert levels["balanced"]["served"] and levels["balanced"]["workers"] == 1
    assert levels["balanced"]["seconds_per_megapixel"] == 40.0 and levels["balanced"]["devices"] == ["cpu (Test CPU)"]
    assert not levels["best"]["served"] and "why_not" in levels["best"]
    assert caps["upscale"]["max"] == 4.0 and "webp" in caps["formats"]["input"]
    assert caps["limits"]["max_file_bytes"] == settings.max_file_bytes

    status, created = await post(ingest, {"files": [image_file()]})
    assert status == 201 and created["options"]["quality"] == "balanced"
    assert created["level"]["chosen"] == "balanced" and "best level served" in created["level"]["reason"]

    status, refused = await post(ingest, {"files": [image_file()], "options": {"quality": "best"}})
    assert status == 409 and refused["error"]["code"] == "quality_not_served"
    assert "served: balanced, fast" in refused["error"]["message"]

    status, waiting = await post(ingest, {"files": [image_file()], "options": {"quality": "best"}, "wait_for_level": True})
    assert status == 201 and waiting["options"]["quality"] == "best" and "wait" in waiting["level"]["reason"]


async def test_fleet_levels_count_as_served(settings: Settings, start_ingest) -> None:
    ingest = await start_ingest(settings.replace(fleet_levels=("best", "fast")))
    status, created = await post(ingest, {"files": [image_file()], "options": {"quality": "auto"}})
    assert status == 201 and created["options"]["quality"] == "best"


@pytest.mark.parametrize("bad", [{"quality": "ultra"}])
async def test_an_unknown_level_is_a_bad_request(settings: Settings, start_ingest, bad) -> None:
    ingest = await start_ingest(settings)
    status, refused = await post(ingest, {"files": [image_file()], "options": bad})
    assert status == 400 and refused["error"]["code"] == "invalid_options"


async def test_a_pending_image_of_an_unserved_level_shows_waiting_for_worker(settings: Settings, start_ingest) -> None:
    from db.records import ImageVersion

    ingest = await start_ingest(settings)
    status, created = await post(ingest, {"files": [image_file("a.jpg"), image_file("b.jpg")],
                                          "options": {"quality": "best"}})
    batch_id = created["batch_id"]
    for name in ("a.jpg", "b.jpg"):
        await ingest.repository.register_image(ImageVersion(
            bucket=settings.s3_input_bucket, batch_id=batch_id, key=f"{batch_id}/{name}", name=name,
            etag=name, size=1000, level="best" if name == "a.jpg" else "fast",
        ))
    await beat(ingest.repository, settings, "cpu-1", ["fast"])
    headers = {"Authorization": f"Bearer {created['token']}"}
    async with ingest.http.get(ingest.url(f"/api/v1/batches/{batch_id}"), headers=headers) as response:
        body = await response.json()
    images = {i["name"]: i for i in body["images"]}
    assert images["a.jpg"]["state"] == "waiting_for_worker" and images["a.jpg"]["level"] == "best"
    assert images["a.jpg"]["reason"] == "waiting for a worker that serves best"
    assert images["b.jpg"]["state"] == "pending" and images["b.jpg"]["level"] == "fast"
    assert body["counts"]["waiting_for_worker"] == 1 and body["counts"]["pending"] == 2


async def test_the_cli_auto_level_is_the_best_served(settings: Settings, start_ingest) -> None:
    import asyncio

    from client.levels import auto_level

    settings = settings.replace(fleet_levels=())
    ingest = await start_ingest(settings)
    await beat(ingest.repository, settings, "gpu-1", ["balanced", "fast"], {"balanced": 12.5})
    level, why = await asyncio.to_thread(auto_level, ingest.url(""))
    assert level == "balanced" and "best level served" in why and "12.5 s per megapixel" in why


async def test_the_page_offers_only_served_levels_and_preselects_the_best_served(
    settings: Settings, start_ingest
) -> None:
    """Real Chromium on the real page, over a real ingest and database; the fleet is one beat."""
    from playwright.async_api import async_playwright, expect

    from tests.web.test_page import CHROMIUM, CHROMIUM_ARGS

    settings = settings.replace(fleet_levels=())
    ingest = await start_ingest(settings)
    await beat(ingest.repository, settings, "cpu-1", ["balanced", "fast"])
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(ingest.url("/"))
            quality = page.get_by_label("Quality")
            await expect(quality).to_have_value("balanced")
            best = page.locator('#quality option[value="best"]')
            await expect(best).to_be_disabled()
            assert "not available now" in await best.text_content()
            assert "FLEET_LEVELS" in (await best.get_attribute("title"))
            await expect(page.locator('#quality option[value="fast"]')).to_be_enabled()
        finally:
            await browser.close()


async def test_the_page_estimates_each_level_for_the_chosen_photos_and_the_time_left(
    settings: Settings, start_ingest
) -> None:
    """Real Chromium, real ingest and database; the fleet is one beat with measured speeds (fast
    2 s and balanced 40 s per megapixel). Two photos of 1.0 and 0.2 megapixels: fast about 2 s,
    balanced about 48 s, best not available; once the batch starts at balanced, the time left."""
    import re

    from playwright.async_api import async_playwright, expect

    from tests.web.test_page import CHROMIUM, CHROMIUM_ARGS, drop, jpeg

    settings = settings.replace(fleet_levels=())
    ingest = await start_ingest(settings)
    await beat(ingest.repository, settings, "cpu-1", ["balanced", "fast"], {"fast": 2.0, "balanced": 40.0})
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            violations: list[str] = []
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.expose_function("reportViolation", lambda text: violations.append(text))
            await page.add_init_script(
                """document.addEventListener("securitypolicyviolation",
                     (e) => window.reportViolation(`${e.effectiveDirective} ${e.blockedURI}`));"""
            )
            await page.goto(ingest.url("/"))
            estimates = page.locator("#estimates")
            await expect(estimates).to_be_hidden()
            await drop(page, [("big.jpg", jpeg(1000, 1000, 1), "image/jpeg"), ("small.jpg", jpeg(500, 400, 2), "image/jpeg")])
            await expect(estimates).to_be_visible()
            await expect(estimates.locator("li").first).to_have_text("Estimated time for 2 photo(s), 1.20 megapixels:")
            await expect(estimates.locator('li[data-level="fast"]')).to_have_text("fast: about 2 s")
            await expect(estimates.locator('li[data-level="balanced"]')).to_have_text("balanced: about 48 s")
            await expect(estimates.locator('li[data-level="best"]')).to_have_text("best: not available now")

            await page.get_by_label("Quality").select_option("balanced")
            await page.get_by_role("button", name="Enhance").click()
            # nothing processes here: the two photos stay ahead, at balanced's measured speed
            await expect(page.locator("#summary")).to_have_text(re.compile(r"about 48 s left$"))
            await expect(estimates).to_be_hidden()
            assert violations == [] and errors == []
        finally:
            await browser.close()
