"""What the relay engines share: their options, the upstream they call (replicas, key pool, retries) and
the Engine plumbing around it (capabilities, readiness, start, close)."""

from __future__ import annotations

from collections.abc import Sequence

from ..base import Engine, EngineCapabilities
from .keys import KeyPool
from .options import UpstreamOptions
from .transport import Upstream


class RelayEngine(Engine):
    """A model served by an upstream images API; subclasses say how a job becomes upstream calls."""

    def __init__(
        self, name: str, options: UpstreamOptions, base_urls: Sequence[str], capabilities: EngineCapabilities
    ) -> None:
        self.name = name
        self.options = options
        keys = KeyPool(options.keys)
        self.upstream = Upstream(name, tuple(base_urls), keys, options.timeout_s, options.max_retries)
        self._capabilities = capabilities

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    @property
    def ready(self) -> bool:
        return self.upstream.ready

    async def start(self) -> None:
        await self.upstream.start()

    async def aclose(self) -> None:
        await self.upstream.aclose()
