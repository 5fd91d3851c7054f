"""Fixtures for the cross-process integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cluster import Cluster, start_cluster


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """One server, workers alpha and beta, each with its own emulated Ollama (shared per module)."""
    async with start_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running
