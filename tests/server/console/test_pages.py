"""What each console page shows, signed in: headings, empty states, usage charts, headers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pendra.server.store import usage as usage_store
from pendra.server.store.tables import utcnow
from pendra.server.store.usage import UsageRecord

from .conftest import Console, SignedIn


@pytest.mark.parametrize(("path", "heading"), [
    ("/models", "Catalogue"), ("/workers", "Workers"), ("/api-keys", "Create key"),
    ("/usage", "Recent requests"), ("/account", "Change password")])
async def test_each_page_renders_inside_the_console_frame(admin: SignedIn, path: str,
                                                          heading: str) -> None:
    """Every page has the sidebar, its own content, our CSP and no framing."""
    response = await admin.http.get(path)
    assert response.status_code == 200
    page = response.text
    assert heading in page
    for link in ("/models", "/workers", "/api-keys", "/usage"):
        assert f'href="{link}"' in page
    assert 'aria-current="page"' in page or path == "/account"
    assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in page, "no inline script (the CSP would block it)"


async def test_empty_states(admin: SignedIn) -> None:
    """With nothing enrolled or recorded, pages say so instead of showing empty tables."""
    workers = (await admin.http.get("/workers")).text
    assert "No workers enrolled" in workers
    usage = (await admin.http.get("/usage")).text
    assert "No requests in this period" in usage


async def test_models_page_lists_the_catalogue_and_filters(admin: SignedIn) -> None:
    """The catalogue is listed; search and capability narrow it; with no worker connected the
    Install button is disabled and says why."""
    page = (await admin.http.get("/models")).text
    assert "data-model=" in page
    assert "No worker with Ollama connected" in page
    nothing = (await admin.http.get("/models", params={"q": "zzz-no-such-model"})).text
    assert "No models match" in nothing
    embeddings = (await admin.http.get("/models", params={"capability": "embedding"})).text
    chats = (await admin.http.get("/models", params={"capability": "chat"})).text
    assert embeddings.count("data-model=") >= 1 and chats.count("data-model=") >= 1
    assert embeddings.count("data-model=") + chats.count("data-model=") <= page.count(
        "data-model=")


async def test_usage_page_draws_what_was_recorded(console: Console, admin: SignedIn) -> None:
    """Recorded requests appear in the totals, the SVG charts, the breakdowns and the recent list,
    and only inside the chosen period."""
    now = utcnow()
    async with console.store.session() as session:
        for n, (age, status) in enumerate([(timedelta(minutes=5), 200),
                                           (timedelta(minutes=20), 502),
                                           (timedelta(days=3), 200)]):
            await usage_store.record_usage(session, UsageRecord(
                request_id=f"r{n}", kind="chat", model_requested="gemma3:1b",
                model_served="gemma3:1b", worker_name="box", status=status, latency_ms=300,
                prompt_tokens=11, completion_tokens=7, created_at=now - age))
        await session.commit()
    hour = (await admin.http.get("/usage", params={"period": "1h"})).text
    week = (await admin.http.get("/usage", params={"period": "7d"})).text
    assert '<rect class="bar bar-ok"' in hour and '<rect class="bar bar-err"' in hour
    assert "<polyline" in hour
    cell = '<td class="mono">gemma3:1b</td>'  # requested and served per recent row, one model row
    assert hour.count(cell) == 2 * 2 + 1
    assert week.count(cell) == 3 * 2 + 1
    assert 'data-stat="requests"><span class="stat-label">Requests</span><span class="stat-value">2<' in hour
    unknown = await admin.http.get("/usage", params={"period": "century"})
    assert unknown.status_code == 200 and 'aria-current="true">24h<' in unknown.text
