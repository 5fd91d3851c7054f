"""Worker-host commands that need no control plane: list, inspect, install and remove locally.

Each call runs one discovery pass with a registry of its own and closes it before returning, so
the CLI can call them one after another without leaking connections. When no Ollama answers, the
error says where Pendra looked and how to get Ollama (Pendra never installs it itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from pendra.backends.base import Backend, BackendStatus, ModelInfo, ProgressCallback
from pendra.backends.registry import BackendRegistry
from pendra.config import WorkerSettings
from pendra.errors import BackendUnavailable

OLLAMA_DOWNLOAD_URL = "https://ollama.com/download"


def no_ollama_message(statuses: Sequence[BackendStatus], *, daemon: bool = True) -> str:
    """The hint when discovery found no Ollama, naming every endpoint it tried."""
    tried = next((s.tried or (s.endpoint,) for s in statuses if s.kind == "ollama"), ())
    where = " or ".join(tried) or "any endpoint"
    message = f"No Ollama found at {where}; install it from {OLLAMA_DOWNLOAD_URL}"
    return message + (" — it will be found on the next refresh tick" if daemon else "")


@asynccontextmanager
async def discovered(settings: WorkerSettings,
                     probe_urls: Sequence[str] | None = None) -> AsyncIterator[BackendRegistry]:
    """A registry after one discovery pass, closed on exit."""
    registry = BackendRegistry(settings, probe_urls=probe_urls)
    try:
        await registry.refresh()
        yield registry
    finally:
        await registry.aclose()


def _ollama(registry: BackendRegistry) -> Backend:
    statuses = registry.statuses()
    if not any(s.kind == "ollama" and s.verified for s in statuses):
        raise BackendUnavailable(no_ollama_message(statuses, daemon=False))
    return registry.backend_of_kind("ollama")


async def local_models(settings: WorkerSettings,
                       probe_urls: Sequence[str] | None = None) -> list[ModelInfo]:
    """The models this host would serve (the MODELS filter applied)."""
    async with discovered(settings, probe_urls) as registry:
        return registry.models()


async def local_backends(settings: WorkerSettings,
                         probe_urls: Sequence[str] | None = None) -> list[BackendStatus]:
    """Every backend kind with where it was looked for and whether it verified."""
    async with discovered(settings, probe_urls) as registry:
        return registry.statuses()


async def install_local(settings: WorkerSettings, model_tag: str, on_progress: ProgressCallback,
                        probe_urls: Sequence[str] | None = None, *, kind: str = "ollama") -> None:
    """Install ``model_tag`` into this host's ``kind`` backend (Ollama: pull the tag; LM Studio:
    its download API); raises InstallFailed with the backend's message."""
    async with discovered(settings, probe_urls) as registry:
        backend = _ollama(registry) if kind == "ollama" else registry.backend_of_kind(kind)
        await backend.install(model_tag, on_progress)


async def remove_local(settings: WorkerSettings, model_tag: str,
                       probe_urls: Sequence[str] | None = None) -> None:
    """Delete ``model_tag`` from this host's Ollama; raises ModelNotFound when it is not there."""
    async with discovered(settings, probe_urls) as registry:
        await _ollama(registry).uninstall(model_tag)
