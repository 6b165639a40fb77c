"""``GET /files/{name}``: a stored image behind its signed, expiring link (the storage's read side): a local
file, or an object streamed from a bucket (S3 proxy links, ``/files/YYYY/MM/DD/<name>``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from ...errors import AccessDenied
from ...storage import Storage
from ...storage.base import CONTENT_TYPES
from ..openapi import errors_for

CACHE_CONTROL = "private, max-age=3600"
SIGNED_PARAMS = ("expires", "signature")


def files_router(storage: Storage) -> APIRouter:
    router = APIRouter()

    @router.head("/files/{name:path}", include_in_schema=False)
    @router.get(
        "/files/{name:path}",
        summary="A generated image behind a signed link",
        response_class=FileResponse,
        responses={
            200: {
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES.values()},
                "description": "The image bytes.",
            },
            **errors_for(
                403,
                404,
                s403="Missing, duplicated, tampered or expired expires/signature.",
                s404="No such image, or deleted after retention.",
            ),
        },
    )
    async def get_file(
        request: Request, name: str, expires: str | None = None, signature: str | None = None
    ) -> Response:
        for param in SIGNED_PARAMS:
            if len(request.query_params.getlist(param)) > 1:
                raise AccessDenied(f"The file link has more than one {param} parameter.")
        image = await storage.open(name, expires, signature)
        headers = {"Cache-Control": CACHE_CONTROL}
        if image.path is not None:
            return FileResponse(image.path, media_type=image.content_type, headers=headers)
        assert image.body is not None, "a stored image has a path or a body"
        if image.size is not None:
            headers["Content-Length"] = str(image.size)
        if request.method == "HEAD":
            await image.body.aclose()
            return Response(media_type=image.content_type, headers=headers)
        return StreamingResponse(image.body, media_type=image.content_type, headers=headers)

    return router
