"""The console's day-two views, in a real Chromium against a real `pendra up` started with a
PUBLIC_URL: the install bar and its label agree at every step and at the end; the Usage page
keeps failures out of the latency, counts them by status class and downloads the period as CSV;
every URL the console gives out (API snippet, worker command) is the public one.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import shlex

import openai
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Browser, Page, Route, expect

from .conftest import LIVE_TIMEOUT_MS, Fleet, screenshot
from .test_console_widths import OUTSIDE
from pendra.server.store.usage import EXPORT_COLUMNS
from polling import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

PUBLIC_URL = "https://pendra.example.test:8443"
INSTALL_MODEL = "gemma3:1b"
# 815 MB in about three seconds: many progress events, several of them coalesced.
PULL_BYTES_PER_S = 250_000_000
# Records (bar value, percent text) each time the page script changes either, as a list of pairs.
RECORD_PAIRS = """(id) => {
  window.__pairs = [];
  const item = document.querySelector(`[data-install="${id}"]`);
  const record = () => {
    const now = document.querySelector(`[data-install="${id}"]`);
    window.__pairs.push([now.querySelector("[data-field=bar]").value,
                         now.querySelector("[data-field=percent_text]").textContent]);
  };
  new MutationObserver(record).observe(item.closest("[data-region=installs]") || item,
      {attributes: true, childList: true, characterData: true, subtree: true});
}"""
# The painted width of a progress bar's fill, as a fraction of the bar: read back from a
# screenshot of the element (what a person sees), not from the DOM.
PAINTED_FILL = """async ([b64, selector]) => {
  const track = getComputedStyle(document.querySelector(selector)).backgroundColor
    .match(/\\d+/g).slice(0, 3).map(Number);
  const img = new Image(); img.src = "data:image/png;base64," + b64; await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.width; canvas.height = img.height;
  const g = canvas.getContext("2d"); g.drawImage(img, 0, 0);
  const row = g.getImageData(0, Math.floor(img.height / 2), img.width, 1).data;
  let filled = 0;
  for (let x = 0; x < img.width; x++) {
    const i = 4 * x;
    const away = Math.abs(row[i] - track[0]) + Math.abs(row[i + 1] - track[1]) + Math.abs(row[i + 2] - track[2]);
    if (away > 40) filled = x + 1;
  }
  return filled / img.width;
}"""


@pytest.fixture(scope="module")
def fleet_env() -> dict[str, str]:
    return {"PUBLIC_URL": PUBLIC_URL}


async def _painted_fill(page: Page, selector: str) -> float:
    """The painted fill of the bar at ``selector``; tried again if the live refresh swaps the
    element out while the screenshot is taken."""
    for attempt in range(5):
        try:
            shot = await page.locator(selector).screenshot(animations="allow", timeout=2000)
        except PlaywrightError:
            if attempt == 4:
                raise
            continue
        return float(await page.evaluate(PAINTED_FILL, [base64.b64encode(shot).decode(), selector]))
    raise AssertionError("unreachable")


async def test_sign_in(page: Page, fleet: Fleet) -> None:
    """The printed admin password opens the console."""
    await page.goto("/sign-in")
    await page.fill("input[name=name]", "admin")
    await page.fill("input[name=password]", fleet.admin_password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{fleet.base_url}/models")


async def test_install_bar_and_label_agree(page: Page, fleet: Fleet) -> None:
    """While an install runs, every time the page changes the bar or its percentage they show
    the same figure; when it ends the painted bar is full at the very moment the label says
    100 % (it does not trail behind an animation)."""
    await fleet.local_emulator.configure(pull_bytes_per_s=PULL_BYTES_PER_S)
    await page.goto("/models")
    entry = page.locator(f'[data-model="{INSTALL_MODEL}"]')
    await entry.locator("button[data-open]").click()
    await entry.locator("dialog[open] button[type=submit]").click()
    install = page.locator("[data-install]").first
    await expect(install).to_have_attribute("data-state", "running", timeout=LIVE_TIMEOUT_MS)
    op_id = await install.get_attribute("data-install")
    await page.evaluate(RECORD_PAIRS, op_id)
    await expect(install.locator("[data-field=percent_text]")).not_to_have_text("")
    selector = f'[data-install="{op_id}"] progress'
    middle = await _painted_fill(page, selector)
    shown = await install.locator("[data-field=percent_text]").inner_text()
    await screenshot(page, "ops_install_running")
    # A screenshot takes a moment and the text may move on meanwhile: the bar may only lead.
    assert shown == "" or middle >= float(shown.rstrip("%")) / 100 - 0.1, (middle, shown)
    await page.wait_for_function(
        """(id) => document.querySelector(`[data-install="${id}"]`).dataset.state === "succeeded" """,
        arg=op_id, timeout=LIVE_TIMEOUT_MS)
    end = await _painted_fill(page, selector)
    await screenshot(page, "ops_install_done")
    assert await install.locator("[data-field=percent_text]").inner_text() == "100%"
    pairs = await page.evaluate("window.__pairs")
    assert end >= 0.97, f"the bar shows {end:.0%} while the label says 100%"
    assert pairs, "no progress was seen"
    for value, text in pairs:
        if text:
            assert abs(float(value) - float(text.rstrip("%"))) <= 0.5, (value, text)


# Remembers, for the install `id`, whether the page ever showed it running again after it had
# shown it succeeded (a stale rendering winning over a newer event); marks the installs region so
# the test can tell when a refresh has replaced it.
WATCH_FOR_REGRESSION = """(id) => {
  window.__regressed = false; window.__succeeded = false;
  document.querySelector("[data-region=installs]").dataset.old = "yes";
  new MutationObserver(() => {
    const item = document.querySelector(`[data-install="${id}"]`);
    if (!item) return;
    if (item.dataset.state === "succeeded") window.__succeeded = true;
    else if (window.__succeeded) window.__regressed = true;
  }).observe(document.body, {attributes: true, childList: true, subtree: true});
}"""


async def test_a_refresh_rendered_before_the_end_does_not_undo_it(page: Page,
                                                                  fleet: Fleet) -> None:
    """The live refresh of the Models page can bring HTML rendered while the install was still
    running, after the page has already shown its end: the page keeps the newer state (succeeded,
    bar full) instead of going back to the older one."""
    await fleet.local_emulator.configure(pull_bytes_per_s=PULL_BYTES_PER_S // 2)
    await page.goto("/models")
    held: list[tuple[Route, object]] = []
    captured, release = asyncio.Event(), asyncio.Event()

    async def hold_stale_refresh(route: Route) -> None:
        if route.request.resource_type != "fetch" or captured.is_set():
            await route.continue_()
            return
        response = await route.fetch()  # rendered now, while the install runs
        held.append((route, response))
        captured.set()
        await release.wait()
        await route.fulfill(response=response)

    await page.route("**/models", hold_stale_refresh)
    try:
        entry = page.locator('[data-model="qwen2.5:0.5b"]')
        await entry.locator("button[data-open]").click()
        await entry.locator("dialog[open] button[type=submit]").click()
        install = page.locator("[data-install]").first
        await expect(install).to_have_attribute("data-state", "running", timeout=LIVE_TIMEOUT_MS)
        op_id = await install.get_attribute("data-install")
        await page.evaluate(WATCH_FOR_REGRESSION, op_id)
        # A new model on the worker's Ollama changes the fleet: the page refreshes itself.
        await fleet.local_emulator.add_model({"name": "refresh-trigger:latest"})
        await asyncio.wait_for(captured.wait(), LIVE_TIMEOUT_MS / 1000)
        await expect(install).to_have_attribute("data-state", "succeeded",
                                                timeout=LIVE_TIMEOUT_MS)
        release.set()
        await page.wait_for_function(
            """() => document.querySelector("[data-region=installs]").dataset.old !== "yes" """,
            timeout=LIVE_TIMEOUT_MS)
        assert not await page.evaluate("window.__regressed")
        item = page.locator(f'[data-install="{op_id}"]')
        await expect(item).to_have_attribute("data-state", "succeeded")
        assert await item.locator("[data-field=percent_text]").inner_text() == "100%"
        assert float(await item.locator("progress").evaluate("p => p.value")) == 100
    finally:
        release.set()
        await page.unroute("**/models")


async def test_usage_leaves_failures_out_of_latency_and_exports_csv(page: Page,
                                                                    fleet: Fleet) -> None:
    """With most requests failing (404s for a model nobody serves), the Usage page's p50 is the
    served requests' (never 0 ms), the errors are split by class, a failures table lists the 404s,
    and Download CSV saves exactly the period's records with the record's columns."""
    sdk = openai.AsyncOpenAI(base_url=f"{fleet.base_url}/api/v1", api_key=fleet.api_key,
                             max_retries=0)
    for _ in range(2):
        await sdk.chat.completions.create(model="llama3.2:latest",
                                          messages=[{"role": "user", "content": "hi"}])
    for _ in range(5):
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="nobody-serves-this",
                                              messages=[{"role": "user", "content": "hi"}])
    await sdk.close()

    async def counted() -> bool:
        await page.goto("/usage?period=1h")
        return await page.locator("[data-failure='404']").count() == 1 and "5" in (
            await page.locator("[data-failure='404'] td.num").inner_text())

    await eventually(counted, timeout_s=10, interval_s=0.3, what="the 404s counted")
    latency = await page.locator("[data-stat=latency] .stat-value").inner_text()
    assert latency not in ("0 ms", "—"), latency
    await expect(page.locator("[data-stat=latency]")).to_contain_text("failures left out")
    await expect(page.locator("[data-field=error-classes]")).to_contain_text(
        "5 client errors (4xx)")
    await expect(page.locator("#failures")).to_contain_text("client errors (4xx)")
    await screenshot(page, "ops_usage")

    async with page.expect_download() as waiting:
        await page.click("[data-export=csv]")
    download = await waiting.value
    assert download.suggested_filename.startswith("pendra-usage-")
    path = await download.path()
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    records = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert sum(r["status"] == "404" for r in records) == 5
    assert sum(r["model_requested"] == "llama3.2:latest" and r["status"] == "200"
               for r in records) >= 2


async def test_usage_with_failures_fits_a_phone(browser: Browser, fleet: Fleet) -> None:
    """At 390 px, the Usage page with its failures table and Download CSV link is no wider than
    the screen, and the link lies inside it."""
    context = await browser.new_context(viewport={"width": 390, "height": 844},
                                        base_url=fleet.base_url)
    try:
        page = await context.new_page()
        await page.goto("/sign-in")
        await page.fill("input[name=name]", "admin")
        await page.fill("input[name=password]", fleet.admin_password)
        await page.click("button[type=submit]")
        await page.goto("/usage?period=1h")
        await expect(page.locator("#failures")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        assert await page.evaluate(OUTSIDE, 390) == []
        box = await page.locator("[data-export=csv]").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 391
        await screenshot(page, "ops_phone_usage")
    finally:
        await context.close()


async def test_console_gives_out_the_public_url(page: Page, fleet: Fleet) -> None:
    """The API keys page's snippet and the Add worker command use PUBLIC_URL, not the address
    the browser happened to use."""
    await page.goto("/api-keys")
    await expect(page.locator(".page-head")).to_contain_text(f"{PUBLIC_URL}/api/v1")
    await page.goto("/workers")
    await page.click("button[data-open=add-worker]")
    await page.fill("#add-worker input[name=name]", "far-gpu")
    await page.click("#add-worker button[type=submit]")
    command = await page.locator("pre[data-command]").inner_text()
    env = dict(word.split("=", 1) for word in shlex.split(command)[:-2])
    assert env["APP_SERVER_WS_URL"] == "wss://pendra.example.test:8443"
    await screenshot(page, "ops_worker_public_url")
