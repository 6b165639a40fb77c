"""``GET /v1/models`` and ``/api/v3/models``: the served models a key may use, OpenAI list shape."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel

from ...models import ModelRegistry
from ..context import context_of


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "seedream-server"
    engine: str
    aliases: list[str]
    max_references: int
    description: str
    profile: str  # the Seedream profile the model answers by
    size_tiers: list[str]


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


def models_router(models: ModelRegistry) -> APIRouter:
    router = APIRouter()

    async def list_models(request: Request) -> ModelList:
        created = int(time.time())
        key = context_of(request).api_key
        cards = [
            ModelCard(
                id=served.name,
                created=created,
                engine=served.engine.kind,
                aliases=list(served.aliases),
                max_references=min(served.engine.capabilities.max_references, served.profile.max_references),
                description=served.engine.capabilities.description,
                profile=served.profile.name,
                size_tiers=list(served.profile.tiers),
            )
            for served in models
            if models.allows(key, served)
        ]
        return ModelList(data=cards)

    for path, name in (("/v1/models", "list_models"), ("/api/v3/models", "ark_models")):
        # no error of its own: install_openapi documents the access middleware's 401, 429 and 503
        router.add_api_route(path, list_models, methods=["GET"], summary="Served models", name=name)
    return router
