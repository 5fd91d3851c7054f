"""Model names on the wire: the control plane resolves what a client typed, once, by Ollama's rule
(pendra/names.py), and sends the worker the exact id it listed."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from api_fixtures import ALL_MODELS, CHAT_MODEL, IMAGE_MODEL, TIMEOUT_S, Api, FakeWorker, fleet

HELLO = [{"role": "user", "content": "hi"}]


def client(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S, headers=api.headers)


@pytest.mark.parametrize("typed", ["llama3.2", "Llama3.2", "LLAMA3.2:Latest", "library/llama3.2",
                                   "registry.ollama.ai/library/llama3.2:latest"])
async def test_any_name_ollama_accepts_reaches_the_worker_as_its_id(
        api: Api, alpha: FakeWorker, typed: str) -> None:
    """Case, ``:latest`` and the ``library`` namespace do not matter (as in Ollama); the worker is
    sent exactly the id it listed, and the answer echoes what the client typed."""
    async with client(api) as http:
        response = await http.post("/api/v1/chat/completions",
                                   json={"model": typed, "messages": HELLO})
    assert response.status_code == 200, response.text
    assert [r.model for r in alpha.requests] == [CHAT_MODEL.id]
    assert alpha.requests[0].body["model"] == typed


async def test_a_namespaced_model_resolves_in_any_case(api: Api, alpha: FakeWorker) -> None:
    """``X/Z-Image-Turbo`` is the served ``x/z-image-turbo:latest``; ``z-image-turbo`` (another
    namespace) is not served: 404."""
    async with client(api) as http:
        image = await http.post("/api/v1/images/generations",
                                json={"model": "X/Z-Image-Turbo", "prompt": "a red square"})
        missing = await http.post("/api/v1/images/generations",
                                  json={"model": "z-image-turbo", "prompt": "a red square"})
        listed = await http.get("/api/v1/models/X/Z-IMAGE-TURBO")
    assert image.status_code == 200, image.text
    assert [r.model for r in alpha.requests] == [IMAGE_MODEL.id]
    assert missing.status_code == 404
    assert listed.status_code == 200 and listed.json()["id"] == IMAGE_MODEL.id


async def test_an_explicit_tag_is_not_latest(api: Api, alpha: FakeWorker) -> None:
    """A tag the fleet does not serve is 404 even when ``:latest`` of that model is served."""
    async with client(api) as http:
        response = await http.post("/api/v1/chat/completions",
                                   json={"model": "llama3.2:1b", "messages": HELLO})
    assert response.status_code == 404 and alpha.requests == []


async def test_the_exact_id_wins_over_a_case_variant(api: Api) -> None:
    """When two workers list the same model in different case, a client naming one exactly gets
    that one; any other spelling gets one fixed id (the alphabetically first)."""
    upper = replace(CHAT_MODEL, id="Llama3.2:latest")
    async with fleet(api, FakeWorker("alpha"),
                     FakeWorker("beta", models=(upper, *ALL_MODELS[1:]))) as (alpha, beta):
        async with client(api) as http:
            for typed in ("Llama3.2:latest", "llama3.2:latest", "LLAMA3.2"):
                response = await http.post("/api/v1/chat/completions",
                                           json={"model": typed, "messages": HELLO})
                assert response.status_code == 200, response.text
    sent = [r.model for r in alpha.requests] + [r.model for r in beta.requests]
    assert sorted(sent) == ["Llama3.2:latest", "Llama3.2:latest", "llama3.2:latest"]
    assert [r.model for r in beta.requests] == ["Llama3.2:latest", "Llama3.2:latest"]
