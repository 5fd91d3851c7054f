"""Fixtures shared by the control-plane tests: a real API server (``api``) and, connected to it,
one well-behaved fake worker serving every test model (``alpha``). A test module that needs other
bounds defines its own ``api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api_fixtures import Api, FakeWorker, fleet, running_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def alpha(api: Api) -> AsyncIterator[FakeWorker]:
    async with fleet(api, FakeWorker("alpha")) as (worker,):
        yield worker
