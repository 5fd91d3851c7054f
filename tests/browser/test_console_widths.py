"""The console at a phone's width (390 px) and a laptop's (1280 px), in a real browser.

At both widths, on every page: nothing makes the page wider than the screen (a wide table scrolls
inside its own box), and every control a person needs — the navigation, Install, Remove, Revoke,
Create key — lies inside the screen. And a key's limits, set in the console at either width, hold at the API. Also the two small
faults the phone tour found: a new key's
underscores were invisible in its field at 1x zoom ("pdr sk …"), and the Account form's fields had
no space between them. Each page is saved to artifacts/screenshots/ as phone_* and laptop_*.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from .conftest import LIVE_TIMEOUT_MS, Fleet, screenshot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

WIDTHS = {"phone": 390, "laptop": 1280}
PAGES = ["models", "workers", "api-keys", "usage", "users", "audit", "account"]
# What a person must be able to reach on each page (besides the navigation).
CONTROLS = {
    "models": ".model-action .btn, [data-installed] button[type=submit]",
    "workers": ".page-actions .btn, .worker-head button[type=submit]",
    "api-keys": "form[action='/api-keys'] button[type=submit], #keys button[type=submit]",
    "usage": ".segmented a, [data-export=csv]",
    "users": "form[action='/users'] button[type=submit], #users button[type=submit]",
    "audit": ".segmented a",
    "account": "form[action='/account'] button[type=submit]",
}
CHAT_MODEL = "llama3.2:latest"  # served by the fleet's local emulator
NAVIGATION = ".nav a, .sidebar-foot a, .sidebar-foot .nav-button"

# Elements whose right edge lies past the screen and that no horizontally scrolling box holds.
OUTSIDE = """(width) => {
  const scrolls = (e) => {
    for (let p = e.parentElement; p; p = p.parentElement) {
      const style = getComputedStyle(p);
      if (['auto', 'scroll'].includes(style.overflowX) && p.scrollWidth > p.clientWidth) return true;
    }
    return false;
  };
  return Array.from(document.querySelectorAll('body *'))
    .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > width + 1)
    .filter((e) => !scrolls(e))
    .slice(0, 5).map((e) => `${e.tagName.toLowerCase()}.${e.className}`);
}"""


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=list(WIDTHS))
async def sized(request: pytest.FixtureRequest, browser: Browser,
                fleet: Fleet) -> AsyncIterator[tuple[str, Page]]:
    """A signed-in tab at one of the widths (the module runs once per width)."""
    width = WIDTHS[request.param]
    context = await browser.new_context(viewport={"width": width, "height": 844},
                                        base_url=fleet.base_url)
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
    await page.goto("/sign-in")
    await page.fill("input[name=name]", "admin")
    await page.fill("input[name=password]", fleet.admin_password)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_be_visible()
    try:
        yield request.param, page
    finally:
        await context.close()
    assert not errors, "\n".join(errors)


async def _inside(page: Page, selector: str, width: int) -> list[str]:
    """The matching visible elements that are not wholly inside the screen, horizontally."""
    outside = []
    for element in await page.locator(selector).all():
        if not await element.is_visible():
            continue
        box = await element.bounding_box()
        assert box is not None
        if box["x"] < 0 or box["x"] + box["width"] > width + 1:
            outside.append(f"{(await element.inner_text()).strip()!r} at x={box['x']:.0f}, "
                           f"width {box['width']:.0f}")
    return outside


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_fits_and_its_controls_are_in_reach(sized: tuple[str, Page],
                                                             path: str) -> None:
    name, page = sized
    width = WIDTHS[name]
    await page.goto(f"/{path}")
    await expect(page.locator("h1")).to_be_visible()
    await expect(page.locator(CONTROLS[path]).first).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    assert await page.evaluate(OUTSIDE, width) == []
    assert await _inside(page, NAVIGATION, width) == []
    assert await _inside(page, CONTROLS[path], width) == []
    await screenshot(page, f"{name}_{path.replace('-', '_')}")


async def test_a_new_keys_underscores_are_visible(sized: tuple[str, Page]) -> None:
    """The field showing a new key draws its underscores: the same field with spaces in their
    place looks different."""
    name, page = sized
    await page.goto("/api-keys")
    await page.fill("input[name=name]", f"{name} key")
    await page.click("form[action='/api-keys'] button[type=submit]")
    field = page.locator("#new-key-value")
    raw = await field.input_value()
    assert raw.startswith("pdr_sk_")
    await screenshot(page, f"{name}_api_keys_created")
    with_underscores = await field.screenshot()
    await field.evaluate("(e, v) => { e.value = v; }", raw.replace("_", " "))
    with_spaces = await field.screenshot()
    assert with_underscores != with_spaces, "the key's underscores are not drawn"


async def test_account_form_fields_have_room_between_them(sized: tuple[str, Page]) -> None:
    _, page = sized
    await page.goto("/account")
    boxes = [await label.bounding_box()
             for label in await page.locator("form[action='/account'] label.field").all()]
    assert len(boxes) == 3
    gaps = [b["y"] - (a["y"] + a["height"]) for a, b in zip(boxes, boxes[1:])]  # type: ignore[index]
    assert all(gap >= 12 for gap in gaps), f"gaps between the fields: {gaps}"


async def test_key_limits_set_in_the_console_hold(sized: tuple[str, Page], fleet: Fleet) -> None:
    """A key made with a limit of one request a minute gets 429 on its second request; its Limits
    dialog then swaps that for an allow-list, and a model outside it is refused with 403."""
    name, page = sized
    await page.goto("/api-keys")
    await page.fill("#new-key-form input[name=name]", f"{name} limited")
    await page.click(".limits-details summary")
    await page.fill(".limits-details input[name=rpm]", "1")
    await page.click("#new-key-form button[type=submit]")
    raw = await page.locator("#new-key-value").input_value()
    row = page.locator("#keys tr", has_text=f"{name} limited")
    await expect(row.locator("[data-label=Limits]")).to_have_text("1 rpm")
    api = openai.AsyncOpenAI(base_url=f"{fleet.base_url}/api/v1", api_key=raw, max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    try:
        await api.chat.completions.create(model=CHAT_MODEL, messages=messages)
        with pytest.raises(openai.RateLimitError):
            await api.chat.completions.create(model=CHAT_MODEL, messages=messages)
        await row.locator("button[data-open]").click()
        dialog = row.locator("dialog[open]")
        await expect(dialog).to_be_visible()
        await dialog.locator("input[name=rpm]").fill("")
        await dialog.locator("input[name=models]").fill("gemma3:*")
        await screenshot(page, f"{name}_api_keys_limits")
        await dialog.locator("button[type=submit]").click()
        await expect(page.locator(".flash-notice")).to_contain_text(f"Limits of {name} limited")
        await expect(row.locator("[data-label=Limits]")).to_have_text("models gemma3:*")
        with pytest.raises(openai.PermissionDeniedError, match="may not use model"):
            await api.chat.completions.create(model=CHAT_MODEL, messages=messages)
    finally:
        await api.close()
