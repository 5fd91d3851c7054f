"""Benchmark 8, nothing traded for speed: what must still hold while the relay is under load.

- Exactly one usage row per request: a fresh key (``pendra keys create``) sends a mix of chats,
  streamed chats and embedding batches from 16 clients; its rows are then counted through
  ``pendra usage --json`` (the public CLI over the store, so however rows are written — batched or
  not — what counts is what lands), polled until the count stops short of nothing or a deadline
  passes. The figure is rows over requests: 1.000 is the only right answer.
- A revoked key is refused on the next request: 8 clients send chats back to back with another
  fresh key while ``pendra keys revoke`` runs; the figures are the status of the first request sent
  once the command has returned (401) and how many requests sent after that were still accepted
  (0).

Nothing here asserts: a wrong figure is reported as it is (a benchmark does not fail on it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from bench.client import HttpError
from bench.deploy import pendra_cli
from bench.load import Relay, Target, embed_targets, targets
from bench.measure import Result
from bench.setup import Setup

NAME = "nothing traded"
CLIENTS = 16
REVOKE_CLIENTS = 8
# Rows written in batches may land a little after their answers; past this they are missing.
ROWS_DEADLINE_S = 15.0
CREATED = re.compile(r"Created key (\S+) ")
RAW_KEY = re.compile(r"(pdr_sk_\S+)")


async def create_key(setup: Setup, name: str) -> Relay:
    """A fresh key made through the CLI, as Pendra's relay; its id is the relay's name."""
    out = await pendra_cli(setup.pendra.home, "keys", "create", "--name", name)
    key_id, raw = CREATED.search(out), RAW_KEY.search(out)
    if key_id is None or raw is None:
        raise RuntimeError(f"unexpected `pendra keys create` output: {out!r}")
    relay = setup.relay
    return Relay(key_id.group(1), relay.base_url, raw.group(1), relay.chat_path, relay.embed_path)


async def usage_rows(setup: Setup, key_id: str) -> int:
    summary = json.loads(await pendra_cli(setup.pendra.home, "usage", "--since", "1d", "--json"))
    return sum(int(row["requests"]) for row in summary["per_key"] if row.get("key_id") == key_id)


async def one_row_per_request(setup: Setup) -> list[Result]:
    relay = await create_key(setup, "bench-usage")
    mix: list[Target] = [
        targets(setup.emulator_url, relay)[1],
        targets(setup.emulator_url, relay, text="a short answer [[tokens=20]]", stream=True)[1],
        embed_targets(setup.emulator_url, relay, 8)[1],
    ]
    total = 300 if setup.quick else 1500
    remaining = [total]
    answered = [0]

    async def client(offset: int) -> None:
        conns = [target.connect() for target in mix]
        try:
            i = offset
            while remaining[0] > 0:
                remaining[0] -= 1
                target, conn = mix[i % len(mix)], conns[i % len(mix)]
                status, body = await conn.request("POST", target.path, target.body)
                if status != 200:
                    raise HttpError(f"{target.path}: {status} {body[:200]!r}")
                answered[0] += 1
                i += 1
        finally:
            for conn in conns:
                await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    ended = time.perf_counter()
    rows = await usage_rows(setup, relay.name)
    while rows < answered[0] and time.perf_counter() - ended < ROWS_DEADLINE_S:
        await asyncio.sleep(0.2)
        rows = await usage_rows(setup, relay.name)
    settled = time.perf_counter() - ended
    return [Result(NAME, "usage rows / requests, under load", rows, "rows",
                   baseline=answered[0],
                   note=f"rows/requests = {rows / max(answered[0], 1):.3f}; {CLIENTS} clients, chats, streams and embeddings at "
                        f"{answered[0] / (ended - started):,.0f} req/s; counted {settled:.1f}s "
                        "after the last answer")]


async def refused_after_revoke(setup: Setup) -> list[Result]:
    relay = await create_key(setup, "bench-revoke")
    target = targets(setup.emulator_url, relay)[1]
    sent: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def client() -> None:
        conn = target.connect()
        try:
            while not stop.is_set():
                at = time.perf_counter()
                status, _ = await conn.request("POST", target.path, target.body)
                sent.append((at, status))
                if status != 200:
                    await asyncio.sleep(0.005)  # refused at once: do not spin
        finally:
            await conn.close()

    clients = [asyncio.create_task(client()) for _ in range(REVOKE_CLIENTS)]
    try:
        await asyncio.sleep(1.0)
        began = time.perf_counter()
        await pendra_cli(setup.pendra.home, "keys", "revoke", relay.name)
        returned = time.perf_counter()
        conn = target.connect()
        try:
            next_status, _ = await conn.request("POST", target.path, target.body)
        finally:
            await conn.close()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    after = [status for at, status in sent if at > returned]
    accepted_after = sum(1 for status in after if status == 200)
    last_accepted = max((at for at, status in sent if at > returned and status == 200),
                        default=None)
    lag = ("" if last_accepted is None else
           f"; the last accepted was sent {(last_accepted - returned) * 1000:.0f} ms after it")
    accepted_during = sum(1 for at, status in sent if began <= at <= returned and status == 200)
    return [
        Result(NAME, "next request after `pendra keys revoke` returned: HTTP status",
               next_status, "", note="401 expected"),
        Result(NAME, "requests with the revoked key accepted after the revoke returned",
               accepted_after, "requests",
               note=f"of {len(after)} sent by {REVOKE_CLIENTS} clients in the next second; "
                    f"{accepted_during} accepted while the command ran "
                    f"({returned - began:.1f}s){lag}"),
    ]


async def run(setup: Setup) -> list[Result]:
    return await one_row_per_request(setup) + await refused_after_revoke(setup)
