"""People and roles in a real browser, against ``pendra up``: the owner invites a member on the
Users page, the member signs in with the one-time password, must choose their own, sees a
member's console (no Users or Audit, no Add worker, no Install, no key limits), makes their own
key; the owner then sees whose key it is, reads the Audit page, and disables the member, whose
open tab is signed out on its next page. Screenshots: artifacts/screenshots/teams_*.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from .conftest import LIVE_TIMEOUT_MS, VIEWPORT, Fleet, screenshot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MEMBER = "mia@example.com"
MEMBER_PASSWORD = "mia's own password"


async def _new_tab(browser: Browser, fleet: Fleet) -> Page:
    context = await browser.new_context(viewport=VIEWPORT, base_url=fleet.base_url)
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    return await context.new_page()


async def _sign_in(page: Page, name: str, password: str) -> None:
    await page.goto("/sign-in")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def owner(browser: Browser, fleet: Fleet) -> AsyncIterator[Page]:
    page = await _new_tab(browser, fleet)
    await _sign_in(page, "admin", fleet.admin_password)
    await expect(page.locator("h1")).to_have_text("Models")
    try:
        yield page
    finally:
        await page.context.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def member(browser: Browser, fleet: Fleet) -> AsyncIterator[Page]:
    page = await _new_tab(browser, fleet)
    try:
        yield page
    finally:
        await page.context.close()


async def test_owner_invites_and_member_chooses_a_password(owner: Page, member: Page) -> None:
    """The owner adds a member on the Users page and copies the one-time password; signing in with
    it lands on Account, which asks for their own password before anything else."""
    await owner.click(".nav a[href='/users']")
    await expect(owner.locator("h1")).to_have_text("Users")
    await owner.fill("#add-user-form input[name=name]", MEMBER)
    await owner.select_option("#add-user-form select[name=role]", "member")
    await owner.click("#add-user-form button[type=submit]")
    await expect(owner.locator("#new-user")).to_be_visible()
    once = await owner.locator("#new-user-password").input_value()
    assert len(once) == 16
    await expect(owner.locator(f"#users tr[data-user='{MEMBER}'] [data-field=state]")
                 ).to_have_text("Invited")
    await screenshot(owner, "teams_users_invited")

    await _sign_in(member, MEMBER, once)
    await expect(member.locator("h1")).to_have_text("Account")
    await expect(member.locator("#must-change")).to_be_visible()
    await member.goto("/models")
    await expect(member.locator("h1")).to_have_text("Account")  # sent back until they choose
    await member.fill("input[name=current_password]", once)
    await member.fill("input[name=new_password]", MEMBER_PASSWORD)
    await member.fill("input[name=confirm_password]", MEMBER_PASSWORD)
    await member.click("form[action='/account'] button[type=submit]")
    await expect(member.locator(".flash")).to_contain_text("Password changed")
    await expect(member.locator("#must-change")).to_have_count(0)


async def test_a_member_sees_a_members_console(member: Page) -> None:
    """No Users or Audit in the navigation, no Add worker, no Install, no Limits; their own key is
    made and listed under their name; the Users page itself is a 403 naming the owner role."""
    await member.goto("/models")
    await expect(member.locator(".nav a[href='/users']")).to_have_count(0)
    await expect(member.locator(".nav a[href='/audit']")).to_have_count(0)
    await expect(member.locator(".sidebar-foot a[href='/account']")).to_contain_text(MEMBER)
    await expect(member.locator(".model-action .btn")).to_have_count(0)
    await member.goto("/workers")
    await expect(member.locator("[data-open=add-worker]")).to_have_count(0)
    await member.goto("/api-keys")
    await expect(member.locator(".limits-details")).to_have_count(0)
    await member.fill("#new-key-form input[name=name]", "mia laptop")
    await member.click("#new-key-form button[type=submit]")
    await expect(member.locator("#new-key")).to_be_visible()
    await expect(member.locator("#keys [data-field=owner]")).to_have_text([MEMBER])
    await expect(member.locator("#keys [data-open^=limits-]")).to_have_count(0)
    await screenshot(member, "teams_member_keys")
    response = await member.goto("/users")
    assert response is not None and response.status == 403
    await expect(member.locator("body")).to_contain_text("Only an owner may manage users")


async def test_owner_sees_whose_keys_and_the_audit_log(owner: Page) -> None:
    """The owner's API keys page lists the member's key under their name; the Audit page lists the
    invite, the password change and the key, with who did each."""
    await owner.goto("/api-keys")
    row = owner.locator("#keys tr", has_text="mia laptop")
    await expect(row.locator("[data-field=owner]")).to_have_text(MEMBER)
    await owner.click(".nav a[href='/audit']")
    await expect(owner.locator("h1")).to_have_text("Audit log")
    for action in ("user.added", "password.changed", "key.created"):
        await expect(owner.locator(f"#audit tr[data-action='{action}']")).to_have_count(1)
    await expect(owner.locator("#audit tr[data-action='key.created']")).to_contain_text(MEMBER)
    await screenshot(owner, "teams_audit")


async def test_disabling_signs_the_member_out(owner: Page, member: Page) -> None:
    """Disabling the member (after the confirm dialog, which says their keys are revoked) signs
    their open tab out on its next page."""
    await owner.goto("/users")
    row = owner.locator(f"#users tr[data-user='{MEMBER}']")
    await row.locator("form[action$='/disable'] button").click()
    await expect(owner.locator("#confirm-dialog")).to_contain_text("API key(s) are revoked")
    await owner.click("#confirm-dialog [data-confirm-ok]")
    await expect(owner.locator(".flash")).to_contain_text("Disabled mia@example.com")
    await expect(row.locator("[data-field=state]")).to_have_text("Disabled")
    await screenshot(owner, "teams_users_disabled")
    await member.goto("/api-keys")
    await expect(member.locator("h1")).to_have_text("Sign in to the console")
