"""The web-search plug point (Seedream 5.0 lite's ``tools: [{"type": "web_search"}]``).

A request that names the tool, to a model whose profile takes it, goes through the configured
:class:`WebSearch` before planning: it may rewrite the prompt with what it found and says how many
searches it made (``usage.tool_usage.web_search``). Without one configured the model simply does not
search: the tool is echoed and the count is 0. Configure with the ``web_search`` setting
(``package.module:attribute``, a WebSearch class or factory).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import cast

from .plugins import load_plugin


@dataclass(frozen=True)
class SearchResult:
    """The prompt to generate from (rewritten or not) and the searches made for it."""

    prompt: str
    searches: int


class WebSearch(ABC):
    """Searches the web for a prompt and may rewrite it."""

    @abstractmethod
    async def search(self, prompt: str) -> SearchResult:
        """Search for ``prompt``; an exception fails the request with a 500 (log it, do not leak secrets)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def load_web_search(spec: str) -> WebSearch | None:
    return cast(WebSearch | None, load_plugin(spec, WebSearch, "web search"))
