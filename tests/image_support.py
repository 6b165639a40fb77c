"""What the image-function tests share: a provenance label and a smooth test image."""

from __future__ import annotations

from PIL import Image, ImageChops

from seedream_server.provenance import Provenance

FORMATS = ["jpeg", "png", "webp"]


def provenance_label(content_id: str = "cgt-20250910-0001", **kw: object) -> Provenance:
    fields: dict[str, object] = {
        "model": "doubao-seedream-4-0-250828",
        "content_id": content_id,
        "created": 1757469561,
        "watermarked": True,
        "engine": "preview",
    }
    fields.update(kw)
    return Provenance(**fields)  # type: ignore[arg-type]


def gradient(width: int, height: int) -> Image.Image:
    """A smooth, non-uniform RGB test image."""
    x = Image.linear_gradient("L").resize((width, height))
    y = x.transpose(Image.Transpose.ROTATE_90).resize((width, height))
    return Image.merge("RGB", (x, y, ImageChops.invert(x)))
