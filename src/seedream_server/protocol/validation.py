"""Validation errors (pydantic's, FastAPI's) translated into the Ark envelope's error naming the field."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ..errors import InvalidParameter, MissingParameter, SeedreamError

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _param_of(loc: tuple[int | str, ...]) -> str:
    """``("body", "image", 2)`` -> ``image[2]``; pydantic's union branch labels (``str``,
    ``function-after[_utf8(), str]``, ``list[...]``) are not field names and are skipped."""
    out = ""
    for part in (str(p) for p in loc if p != "body"):
        if part.isdigit():
            out += f"[{part}]"
        elif _FIELD_NAME.match(part) and part not in {"str", "int"}:
            out += ("." if out else "") + part
    return out


def translate_validation_error(exc: ValidationError | Any) -> SeedreamError:
    """Turn the first pydantic/FastAPI validation error into an Ark error naming the field."""
    errors = exc.errors()
    if not errors:
        return InvalidParameter("The request body is not valid.")
    # the first field's most specific error: for ``image: ["ok", 5]`` the list branch's image[1], not "a string"
    first_field = _param_of(tuple(errors[0].get("loc", ())))
    err = max(
        (e for e in errors if _param_of(tuple(e.get("loc", ()))).startswith(first_field)),
        key=lambda e: len(_param_of(tuple(e.get("loc", ())))),
    )
    loc = tuple(err.get("loc", ()))
    param = _param_of(loc)
    kind = err.get("type", "")
    if kind == "json_invalid":
        return InvalidParameter("The request body is not valid JSON.")
    if not param:
        return InvalidParameter("The request body must be a JSON object.")
    field = re.sub(r"\[\d+\]", "", param)  # param names the field (image), the message the item (image[2])
    if kind == "missing" or (err.get("input", ...) is None and param in {"model", "prompt"}):
        return MissingParameter(
            f"The request failed because it is missing one or multiple required parameters: {param}.",
            param=field,
        )
    return InvalidParameter(
        f"The parameter `{param}` specified in the request is not valid: {err.get('msg', 'invalid value')}.",
        param=field,
    )
