"""Served models: names and aliases resolved to one engine and its queue, and which keys may use them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .accounts import ApiKey
from .admission import ModelQueue
from .engines.base import Engine
from .errors import AccessDenied, NotFoundError
from .profiles import DEFAULT_PROFILE, Profile, ProfileTable


@dataclass
class ServedModel:
    """A configured model: its engine, its aliases, its bounded queue and the Seedream profile it answers by."""

    name: str
    engine: Engine
    queue: ModelQueue
    aliases: tuple[str, ...] = ()
    profile: Profile = field(default_factory=lambda: ProfileTable().get(DEFAULT_PROFILE))


class ModelRegistry:
    """Every served model by name and alias; one per app."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = {served.name: served for served in models}
        self._lookup = {name: served for served in models for name in (served.name, *served.aliases)}

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def names(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, name: str) -> ServedModel:
        """The model a request names, or 404."""
        served = self._lookup.get(name)
        if served is None:
            shown = name if len(name) <= 128 else name[:128] + "..."
            raise NotFoundError(
                f"The model or endpoint {shown} does not exist or you do not have access to it.", param="model"
            )
        return served

    def allows(self, key: ApiKey | None, served: ServedModel) -> bool:
        """Whether ``key`` may use ``served``: no key (auth off), an empty model list, or one naming it."""
        if key is None or not key.models:
            return True
        return any(self._lookup[m] is served for m in key.models if m in self._lookup)

    def check_access(self, key: ApiKey | None, served: ServedModel) -> None:
        """403 unless :meth:`allows`."""
        if key is not None and not self.allows(key, served):
            raise AccessDenied(
                f"The API key {key.name!r} is not allowed to use the model {served.name}.", param="model"
            )
