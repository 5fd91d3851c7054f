"""The console in a real browser, driving a real `pendra up`: one admin's session, in order.

Sign in; install a model and watch the bar move to success; see an install fail with Ollama's own
message; create an API key and use it with the openai SDK, then revoke it and get 401; send requests
and see the usage charts change; remove a model; add a worker and start it with the command the
console shows. Each page is saved to artifacts/screenshots/ on the way.
"""

from __future__ import annotations

import shlex

import openai
import pytest
from playwright.async_api import Page, expect

from polling import eventually

from .conftest import LIVE_TIMEOUT_MS, Fleet, screenshot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

# In the catalogue and in the emulator's registry: pulls (slowly enough to watch) and succeeds.
INSTALL_MODEL = "gemma3:1b"
# Its 815 MB arrive in about three seconds: several progress events, and a short suite.
PULL_BYTES_PER_S = 250_000_000
# In the catalogue but not in the emulator's registry: Ollama answers "file does not exist".
UNKNOWN_MODEL = "gemma3:4b"
# Collects every percentage the progress bar shows, as the page script writes it.
RECORD_PERCENTS = """(id) => {
  window.__percents = [];
  const target = document.querySelector(`[data-install="${id}"] [data-field=percent_text]`);
  new MutationObserver(() => window.__percents.push(target.textContent))
    .observe(target, {childList: true, characterData: true, subtree: true});
}"""


def client(fleet: Fleet, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{fleet.base_url}/api/v1", api_key=key, max_retries=0,
                              timeout=LIVE_TIMEOUT_MS / 1000)


async def test_sign_in(page: Page, fleet: Fleet) -> None:
    """A wrong password is refused in plain words; the printed admin password opens the console
    on the page that was asked for."""
    await page.goto("/usage")
    await expect(page).to_have_url(f"{fleet.base_url}/sign-in?next=/usage")
    await screenshot(page, "sign_in")
    await page.fill("input[name=name]", "admin")
    await page.fill("input[name=password]", "not-the-password")
    await page.click("button[type=submit]")
    await expect(page.locator(".flash-error")).to_have_text(
        "That name and password do not match an enabled user.")
    await page.fill("input[name=password]", fleet.admin_password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{fleet.base_url}/usage")
    await expect(page.locator("h1")).to_have_text("Usage")


async def test_install_progress_moves_live_to_success(page: Page, fleet: Fleet) -> None:
    """Install → pick variant and worker → the bar moves over SSE (the percentage rises at least
    once) and ends in success; the model then shows as installed on the local worker."""
    await fleet.local_emulator.configure(pull_bytes_per_s=PULL_BYTES_PER_S)
    await page.goto("/models")
    await expect(page.locator(".pill-online, .model-action .btn-primary").first).to_be_visible()
    await screenshot(page, "models")
    entry = page.locator(f'[data-model="{INSTALL_MODEL}"]')
    await entry.locator("button[data-open]").click()
    dialog = entry.locator("dialog[open]")
    await expect(dialog).to_be_visible()
    await screenshot(page, "models_install_dialog")
    await dialog.locator("button[type=submit]").click()
    install = page.locator("[data-install]").first
    await expect(install).to_have_attribute("data-state", "running", timeout=LIVE_TIMEOUT_MS)
    op_id = await install.get_attribute("data-install")
    await page.evaluate(RECORD_PERCENTS, op_id)
    await expect(install.locator("[data-field=percent_text]")).not_to_have_text("")
    await screenshot(page, "models_installing")
    await expect(install).to_have_attribute("data-state", "succeeded", timeout=LIVE_TIMEOUT_MS)
    seen = [float(p.rstrip("%")) for p in await page.evaluate("window.__percents") if p]
    assert any(b > a for a, b in zip(seen, seen[1:])), f"percentages seen: {seen}"
    assert seen[-1] == 100
    await expect(install.locator("[data-field=label]")).to_have_text("Installed")
    # The worker's next inventory reaches the page over the fleet stream, without a reload.
    await expect(page.locator(f'[data-installed="{INSTALL_MODEL}"]')).to_be_visible()
    await expect(entry.locator(".chip-ok")).to_have_count(1)
    await screenshot(page, "models_installed")




async def test_install_failure_shows_ollamas_message(page: Page, fleet: Fleet) -> None:
    """An install of a tag the worker's Ollama does not know ends failed, with Ollama's message."""
    await page.goto("/models")
    entry = page.locator(f'[data-model="{UNKNOWN_MODEL}"]')
    await entry.locator("button[data-open]").click()
    await entry.locator("dialog[open] button[type=submit]").click()
    install = page.locator("[data-install]").first
    await expect(install).to_have_attribute("data-state", "failed", timeout=LIVE_TIMEOUT_MS)
    await expect(install.locator("[data-field=label]")).to_contain_text(
        "pull model manifest: file does not exist")
    await screenshot(page, "models_install_failed")


async def test_key_created_in_console_works_until_revoked(page: Page, fleet: Fleet) -> None:
    """A key made in the console is shown once, lists models and chats through the openai SDK,
    and gets 401 as soon as it is revoked there."""
    await page.goto("/api-keys")
    await page.fill("input[name=name]", "browser test")
    await page.click("form[action='/api-keys'] button[type=submit]")
    raw = await page.locator("#new-key-value").input_value()
    assert raw.startswith("pdr_sk_")
    await screenshot(page, "api_keys_created")
    sdk = client(fleet, raw)
    models = [m.id async for m in sdk.models.list()]
    assert INSTALL_MODEL in models
    reply = await sdk.chat.completions.create(
        model=INSTALL_MODEL, messages=[{"role": "user", "content": "Say hello"}])
    assert reply.choices[0].message.content
    row = page.locator("#keys tr", has_text="browser test")
    await row.locator("form[action$='/revoke'] button[type=submit]").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_contain_text("Revoke browser test")
    await confirm.locator("[data-confirm-ok]").click()
    await expect(page.locator(".flash-notice")).to_contain_text("Revoked browser test")
    await expect(row.locator(".pill-offline")).to_contain_text("Revoked")
    await screenshot(page, "api_keys")
    with pytest.raises(openai.AuthenticationError):
        await sdk.models.list()
    await sdk.close()


async def test_usage_charts_change_with_requests(page: Page, fleet: Fleet) -> None:
    """Requests sent with an API key show up in the totals (once their batch is written), the
    request chart, the recent list and the breakdown by API, each dialect under a readable name
    (chat as "Chat completions", a legacy completion as "Completions")."""
    await page.goto("/usage?period=1h")
    before = int((await page.locator("[data-stat=requests] .stat-value").inner_text())
                 .replace(",", ""))
    bars_before = await page.locator("[data-chart=requests] rect.bar").count()
    sdk = client(fleet, fleet.api_key)
    for n in range(3):
        await sdk.chat.completions.create(
            model=INSTALL_MODEL, messages=[{"role": "user", "content": f"Count to {n}"}])
    await sdk.completions.create(model=INSTALL_MODEL, prompt="Once upon a time", max_tokens=5)
    await sdk.close()

    async def counted() -> bool:
        # Usage rows are written in batches (at most ~100 ms behind): reload until they are in.
        await page.reload()
        after = int((await page.locator("[data-stat=requests] .stat-value").inner_text())
                    .replace(",", ""))
        return after >= before + 4

    await eventually(counted, timeout_s=10, interval_s=0.2, what="the four requests counted")
    assert await page.locator("[data-chart=requests] rect.bar").count() >= max(1, bars_before)
    await expect(page.locator("#recent tbody tr").first).to_contain_text(INSTALL_MODEL)
    await expect(page.locator("#recent tbody tr").first).to_contain_text("Completions")
    by_api = page.locator("section.card", has=page.get_by_role("heading", name="By API"))
    await expect(by_api.locator("tbody tr", has_text="Chat completions")).to_have_count(1)
    await expect(by_api.locator("tbody td", has_text="Completions")).to_have_count(2)
    await expect(by_api.locator("tbody td").get_by_text("Completions", exact=True)).to_have_count(1)
    await screenshot(page, "usage")


async def test_remove_model_after_confirmation(page: Page, fleet: Fleet) -> None:
    """Remove asks first, then deletes the model from the worker's Ollama; it leaves the page."""
    await page.goto("/models")
    row = page.locator(f'[data-installed="{INSTALL_MODEL}"]')
    await row.locator("button[type=submit]").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_contain_text(f"Remove {INSTALL_MODEL}")
    await confirm.locator("[data-confirm-ok]").click()
    await expect(page.locator(".flash-notice")).to_contain_text(f"Removed {INSTALL_MODEL}")
    await expect(page.locator(f'[data-installed="{INSTALL_MODEL}"]')).to_have_count(0)


async def test_add_worker_and_start_it_with_the_shown_command(page: Page, fleet: Fleet) -> None:
    """Add worker shows a private key and the exact command once; running that command (its
    environment variables) against a second Ollama makes the worker appear connected, live."""
    await page.goto("/workers")
    await page.click("button[data-open=add-worker]")
    await page.fill("#add-worker input[name=name]", "second-gpu")
    await page.click("#add-worker button[type=submit]")
    command = await page.locator("pre[data-command]").inner_text()
    await screenshot(page, "workers_added")
    words = shlex.split(command)
    assert words[-2:] == ["pendra", "worker"]
    env = dict(word.split("=", 1) for word in words[:-2])
    assert set(env) == {"GPU_WORKER_PRIVATE_KEY", "WORKER_ID", "WORKER_NAME",
                        "APP_SERVER_WS_URL"}
    await page.goto("/workers")
    card = page.locator(f'[data-worker="{env["WORKER_ID"]}"]')
    await expect(card).to_have_attribute("data-connected", "no")
    worker = await fleet.start_worker("second worker", env)
    try:
        await expect(card).to_have_attribute("data-connected", "yes", timeout=LIVE_TIMEOUT_MS)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker output:\n{worker.output()}") from exc
    await expect(card.locator(".pill-online").first).to_have_text("Connected")
    await expect(card).to_contain_text("ollama")
    await screenshot(page, "workers")


async def test_account_page(page: Page) -> None:
    """The account page offers the password change form."""
    await page.goto("/account")
    await expect(page.locator("input[name=current_password]")).to_be_visible()
    await screenshot(page, "account")

