"""Bad input against a running control plane: the OpenAPI surface fuzzed with schemathesis, and
oversized bodies refused with 413 before they are read.

The target is a real ``pendra server`` process with one real ``pendra worker`` over an emulated
Ollama, so a generated request that names a served model goes all the way to the backend and back.
Schemathesis (sync, ``requests``) runs in a thread while the event loop keeps reading the
processes' output. The request bodies' full schemas (chat_schema.py, media_schema.py) are in the
OpenAPI document, so the generated requests use every field Pendra maps, with and without their
types and ranges.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import pytest_asyncio
import requests
import schemathesis
from cluster import Cluster, start_cluster
from hypothesis import strategies as st
from schemathesis import GenerationMode
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Examples per operation and generation mode: 13 operations x 2 modes x this stays well under a
# minute on two cores, and is enough to walk every route's validation and error paths.
EXAMPLES = 15
SERVED = "llama3.2:latest"
# Half the generated bodies for these routes are aimed at a model the worker serves.
# (First match wins: "/chat/completions" before the legacy "/completions".)
SERVED_FOR = {"/chat/completions": SERVED, "/completions": SERVED,
              "/embeddings": "nomic-embed-text:latest",
              "/images/generations": "x/z-image-turbo:latest", "/responses": SERVED}
# A small limit so an over-limit body is cheap to make and "not read whole" is easy to see.
MAX_BODY_BYTES = 1024 * 1024
# What an oversize request announces (or would go on to send, chunked).
OVERSIZE_BYTES = 64 * MAX_BODY_BYTES
CHUNK = b"x" * 65536


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with start_cluster(tmp_path_factory.mktemp("fuzz"), workers=("alpha",),
                             server_env={"MAX_BODY_BYTES": str(MAX_BODY_BYTES)}) as running:
        yield running


def _admin_token(cluster: Cluster) -> str:
    text = (cluster.root / "server" / "server.yaml").read_text()
    return re.search(r"admin_token:\s*(\S+)", text).group(1)  # type: ignore[union-attr]


def _aim(body: dict[str, Any], model: str) -> None:
    """Make a generated body name a served model (and give its messages a role), so that it gets
    past the first checks to the worker, the translation and Ollama; the rest stays generated."""
    body["model"] = model
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            message.setdefault("role", "user")


def _deliberate(response: requests.Response) -> bool:
    """501 "unsupported" is the documented answer for what no backend can do (transcription on
    Ollama): a refusal, not a failure."""
    if response.status_code != 501:
        return False
    body = response.json()
    return isinstance(body, dict) and body.get("error", {}).get("type") == "unsupported"


def _fuzz_operation(operation: Any, mode: GenerationMode, *, base_url: str,
                    session: requests.Session, headers: dict[str, str]) -> list[str]:
    """Run one operation's examples in one generation mode; return what answered 5xx."""
    failures: list[str] = []
    model = next((m for suffix, m in SERVED_FOR.items() if operation.path.endswith(suffix)), None)

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), served=st.booleans())
    def check(case: Any, served: bool) -> None:
        if served and isinstance(case.body, dict) and model is not None:
            _aim(case.body, model)
        response = case.call(base_url=base_url, session=session, headers=headers,
                             timeout=30 * WAIT)
        if response.status_code >= 500 and not _deliberate(response):
            failures.append(f"{response.status_code} {operation.label} ({mode}): "
                            f"{response.text[:300]}\n  {case.as_curl_command()}")

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        # Nothing can break the schema of an operation without inputs (GET /catalogue).
        assert mode == GenerationMode.NEGATIVE, operation.label
    return failures


def _fuzz(cluster: Cluster) -> list[str]:
    """Every operation's positive and negative examples; what answered 5xx."""
    schema = schemathesis.openapi.from_url(cluster.base_url + "/api/v1/openapi.json",
                                           timeout=10 * WAIT)
    key = {"Authorization": f"Bearer {cluster.api_key}"}
    admin = {"Authorization": f"Bearer {_admin_token(cluster)}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            headers = admin if re.search(r"/(installs|workers)\b", operation.path) else key
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += _fuzz_operation(operation, mode, base_url=cluster.base_url,
                                            session=session, headers=headers)
    return failures


async def test_fuzzed_openapi_surface_never_answers_5xx(fleet: Cluster) -> None:
    """Schema-valid and schema-breaking requests to every operation in /api/v1/openapi.json, with
    a real API key (admin token for the admin routes): never a 5xx, and the server is still up
    and serving afterwards."""
    failures = await asyncio.wait_for(asyncio.to_thread(_fuzz, fleet), 300 * WAIT)
    reached = {path: len(await fleet.emulator_of["alpha"].requests(path))
               for path in ("/api/chat", "/api/embed", "/api/generate")}
    assert all(reached.values()), reached  # generated requests got through to Ollama
    # ... using the mapped fields the schema told schemathesis about, not only model + messages.
    mapped = {key for sent in await fleet.emulator_of["alpha"].requests("/api/chat")
              for key in [*sent["body"], *(sent["body"].get("options") or {})]}
    assert mapped - {"model", "messages", "stream", "options", "num_ctx"}, mapped
    assert not failures, "\n".join(failures[:10])
    assert fleet.server.process is not None and fleet.server.process.returncode is None
    async with fleet.http() as http:
        response = await http.post("/api/v1/chat/completions",
                                   json={"model": SERVED, "messages": [{"role": "user",
                                                                        "content": "still there?"}]})
    assert response.status_code == 200, response.text


# --- oversized bodies --------------------------------------------------------------------------------


async def _send_oversized(cluster: Cluster, *, chunked: bool) -> bytes:
    """Start a POST of ``OVERSIZE_BYTES`` to chat/completions on a raw socket, send only part of
    it, and return the head of the answer.

    With Content-Length no body byte is sent; chunked, the limit plus two chunks are sent and the
    body is never finished. So any answer at all shows the server did not wait for the rest, and
    the client stops writing before the server hangs up (a write into a closed connection would
    reset it and could wipe the unread answer)."""
    host, port = cluster.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        framing = (b"Transfer-Encoding: chunked\r\n" if chunked
                   else f"Content-Length: {OVERSIZE_BYTES}\r\n".encode())
        writer.write(b"POST /api/v1/chat/completions HTTP/1.1\r\n"
                     + f"Host: {host}:{port}\r\nAuthorization: Bearer {cluster.api_key}\r\n".encode()
                     + b"Content-Type: application/json\r\n" + framing + b"\r\n")
        if chunked:
            for _ in range(MAX_BODY_BYTES // len(CHUNK) + 2):
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        await writer.drain()
        async with asyncio.timeout(30 * WAIT):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_is_refused_with_413_before_it_is_read(fleet: Cluster,
                                                                    chunked: bool) -> None:
    """A body over MAX_BODY_BYTES gets 413 while the client is still sending it: at once when
    Content-Length announces it (before a body byte), and as soon as the running count passes the
    limit when it comes chunked without one (the body never ends, so the server cannot have waited
    for it)."""
    head = await _send_oversized(fleet, chunked=chunked)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"x-request-id:" in head.lower()
