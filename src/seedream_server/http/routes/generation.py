"""``POST /api/v3/images/generations``, ``/v1/images/generations`` and the OpenAI multipart
``/v1/images/edits``: parse, prepare the job (every refusal here is a plain JSON error), respond."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from ...errors import InvalidParameter
from ...protocol import (
    GenerationRequest,
    ImageEditForm,
    ImageGenerationRequest,
    ImagesResponse,
    edit_form_to_request,
    to_generation_request,
)
from ...service import ImageService
from ..context import context_of
from ..openapi import errors_for, stream_doc
from ..render import JobResponse

log = logging.getLogger("seedream_server.http")

#: what the handlers answer; install_openapi adds the middlewares' 401, 429 and 503
GENERATION_RESPONSES = {**errors_for(400, 403, 404, 429, 500, 503), 200: stream_doc()}
MAX_FORM_FIELDS = 64
UPLOAD_FIELDS = frozenset({"image", "image[]"})


def generation_router(service: ImageService) -> APIRouter:
    router = APIRouter()
    policy = service.reference_policy

    async def respond(request: Request, generation: GenerationRequest, openai: bool) -> JobResponse:
        ctx = context_of(request)
        job = await service.admit(generation, ctx.request_id, key=ctx.api_key)
        ctx.admitted = True  # from here the job settles its queue place, limit and ledger row
        await service.prepare(job)
        return JobResponse(job, openai_usage=openai)  # OpenAI routes: usage in OpenAI's shape too

    def generation_handler(openai: bool) -> Callable[[Request, ImageGenerationRequest], Awaitable[JobResponse]]:
        async def generate(request: Request, body: ImageGenerationRequest) -> JobResponse:
            context_of(request).model = body.model
            if body.model_extra:
                log.debug("ignoring unknown fields %s", sorted(body.model_extra))
            return await respond(request, to_generation_request(body), openai)

        return generate

    for path, openai in (("/api/v3/images/generations", False), ("/v1/images/generations", True)):
        router.add_api_route(
            path,
            generation_handler(openai),
            methods=["POST"],
            response_model=ImagesResponse,
            responses=GENERATION_RESPONSES,
            summary="Generate images (text-to-image, references, groups, streaming)",
            name=f"generate{path.replace('/', '_')}",
        )

    async def edit(request: Request) -> JobResponse:
        """OpenAI ``/v1/images/edits``: uploaded files go to the reference loader as they are."""
        fields: list[tuple[str, str]] = []
        uploads: list[bytes] = []
        async with request.form(max_files=policy.max_count + 1, max_fields=MAX_FORM_FIELDS) as form:
            for name, value in form.multi_items():
                if isinstance(value, str):
                    fields.append((name, value))
                    if name == "model":
                        context_of(request).model = value
                    continue
                uploads.append(await _read_upload(name, value, len(uploads), policy.max_bytes))
        return await respond(request, edit_form_to_request(fields, uploads), True)

    router.add_api_route(
        "/v1/images/edits",
        edit,
        methods=["POST"],
        response_model=ImagesResponse,
        responses=GENERATION_RESPONSES,
        summary="OpenAI image edits: multipart image[] files + prompt, mapped onto the same generation",
        openapi_extra=_edit_request_body(),
    )
    return router


async def _read_upload(name: str, upload: UploadFile, index: int, max_bytes: int) -> bytes:
    if name == "mask":
        raise InvalidParameter("The parameter `mask` is not supported by Seedream models.", param="mask")
    if name not in UPLOAD_FIELDS:
        raise InvalidParameter(f"Unexpected file field {name[:64]!r}; send images as image[].", param=name[:64])
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidParameter(f"image[{index}]: larger than {max_bytes} bytes", param="image")
    return data


def _edit_request_body() -> dict[str, Any]:
    schema = ImageEditForm.model_json_schema(by_alias=True)
    schema.pop("title", None)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
