"""The console with three backends on one host (Ollama, LM Studio, vLLM emulators behind a real
`pendra up`), in a real browser: the Workers page shows every backend and what Pendra may install
or remove there; the install picker asks for the target backend of a model that installs into two,
and an install into LM Studio moves live to success; LM Studio and vLLM models get no Remove
button but the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from pendra.testing.servers import run_emulator, run_openai_compat

from .conftest import (LIVE_TIMEOUT_MS, PENDRA, START_S, Fleet, child_env, screenshot, start)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    tmp: Path = tmp_path_factory.mktemp("backends")
    home = tmp / "up-home"
    home.mkdir(mode=0o700)
    async with run_emulator() as ollama, run_openai_compat("lmstudio") as lms, \
            run_openai_compat("vllm") as vllm:
        await lms.configure(download_bytes_per_s=500_000)  # 1.5 MB: about three seconds
        up = await start("pendra up", [str(PENDRA), "up", "--port", "0"],
                         child_env(home, OLLAMA_ENDPOINT=ollama.base_url,
                                   LMSTUDIO_ENDPOINT=lms.base_url, VLLM_ENDPOINT=vllm.base_url,
                                   WORKER_NAME="studio", BACKENDS_DISABLED="speaches"))
        try:
            url = (await up.wait_for_line(r"Pendra is running at (http://\S+)",
                                          START_S)).group(1)
            password = (await up.wait_for_line(r"Admin password:\s+(\S+)", START_S)).group(1)
            key = (await up.wait_for_line(r"API key:\s+(pdr_sk_\S+)", START_S)).group(1)
            yield Fleet(url.rstrip("/"), password, key, up, ollama, ollama, tmp)
        finally:
            await up.stop()


async def test_sign_in(page: Page, fleet: Fleet) -> None:
    await page.goto("/workers")
    await page.fill("input[name=name]", "admin")
    await page.fill("input[name=password]", fleet.admin_password)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Workers")


async def test_workers_page_shows_every_backend_and_its_model_lifecycle(page: Page) -> None:
    await page.goto("/workers")
    worker = page.locator("article.worker").first
    rows = worker.locator("table").first.locator("tbody tr")
    await expect(rows).to_have_count(4, timeout=LIVE_TIMEOUT_MS)
    await expect(rows.filter(has_text="speaches")).to_contain_text("disabled by BACKENDS_DISABLED")
    for kind in ("ollama", "lmstudio", "vllm"):
        row = rows.filter(has_text=kind).first
        await expect(row.locator(".pill-online")).to_have_text("Verified")
    await expect(rows.filter(has_text="vllm").locator("[data-field=lifecycle]")).to_contain_text(
        "vLLM serves the model it was launched with")
    await expect(rows.filter(has_text="lmstudio").locator("[data-field=lifecycle]")).to_contain_text(
        "remove it inside the LM Studio app")
    await expect(rows.filter(has_text="ollama").locator("[data-field=lifecycle]")).to_have_count(0)
    await expect(worker.get_by_role("cell", name=LLAMA, exact=True)).to_be_visible()
    await screenshot(page, "workers_backends")


async def test_install_picker_asks_for_the_backend_and_installs_into_lmstudio(
        page: Page) -> None:
    await page.goto("/models")
    entry = page.locator('[data-model="llama3.2:3b"]')
    await expect(entry.locator("[data-field=kinds]")).to_have_text("Ollama, LM Studio")
    await entry.locator("button[data-open]").click()
    dialog = entry.locator("dialog[open]")
    picker = dialog.locator("select[name=backend]")
    await expect(picker.locator("option")).to_have_text(["Ollama", "LM Studio"])
    await picker.select_option("lmstudio")
    await dialog.locator("select[name=worker]").select_option(label="studio (Ollama, LM Studio)")
    await screenshot(page, "models_install_pick_backend")
    await dialog.locator("button[type=submit]").click()
    install = page.locator("[data-install]").first
    await expect(install.locator("[data-field=backend]")).to_have_text("LM Studio")
    await expect(install).to_have_attribute("data-state", "succeeded", timeout=LIVE_TIMEOUT_MS)
    installed = page.locator('[data-installed="llama-3.2-3b-instruct"]')
    await expect(installed).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    await page.reload()
    installed = page.locator('[data-installed="llama-3.2-3b-instruct"]')
    await expect(installed.locator("button[type=submit]")).to_have_count(0)
    await expect(installed.locator("[data-field=lifecycle]")).to_contain_text("LM Studio app")
    served = page.locator(f'[data-installed="{LLAMA}"]')
    await expect(served.locator("button[type=submit]")).to_have_count(0)
    await expect(served.locator("[data-field=lifecycle]")).to_contain_text("launched with")
    await screenshot(page, "models_backends")


async def test_a_model_only_ollama_takes_has_no_backend_picker(page: Page) -> None:
    await page.goto("/models")
    entry = page.locator('[data-model="gemma3:1b"]')
    await entry.locator("button[data-open]").click()
    dialog = entry.locator("dialog[open]")
    await expect(dialog.locator("select[name=backend]")).to_have_count(0)
    await expect(dialog.locator("input[name=backend]")).to_have_value("ollama")
