"""Constants the whole suite shares (imported as ``from suite_env import WAIT``).

``WAIT`` scales every bound a test waits on (set PENDRA_TEST_WAIT_SCALE=3 on a slow machine): no test
asserts a timing, but every wait has a ceiling so a broken build fails instead of hanging.
"""

from __future__ import annotations

import os

WAIT = float(os.environ.get("PENDRA_TEST_WAIT_SCALE", "1"))
POSTGRES_URL = os.environ.get("PENDRA_TEST_POSTGRES_URL",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
# Worker settings that look only for Ollama (the other backends' default ports are not probed):
# the tests of Ollama's own behaviour pass it as ``backends_disabled``.
ONLY_OLLAMA = ("lmstudio", "vllm", "speaches")
