"""Schemathesis against a live ``seedream serve`` (issue 10, "CI runs schemathesis"): about 1,000 requests
generated from the server's own OpenAPI document, with an API key, positive and negative, checking that no
response is a 5xx, every status is documented for its operation, and bodies, media types and headers conform
to what the document says.

The generated requests stay cheap and on loopback, without changing what they mean to the server:

* ``image`` items that are not data URIs (an ``http://`` URL would make the server resolve and fetch it) are
  replaced by a tiny PNG data URI: a valid value for a valid one, so a negative case stays negative;
* ``n`` and ``max_images`` of 3..15 become 2, and a group without ``max_images`` gets 2: at most two images
  of at most 16 MP, whatever the size, instead of fifteen 4K images (seconds each on two cores);
* half the generation and edit cases name the served model (a generated name is almost never one, and would
  only ever test the 404), and half the edits upload a real PNG, so generation itself is exercised.
"""

from __future__ import annotations

import base64
import io
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import LiveServer, start_server, stop_server
from seedream_server.http.openapi import SECURITY_SCHEME
from support import MODEL, wait_until

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: generated cases per operation and mode; about 1,000 requests in all. The generation routes get the most;
#: operations without inputs give one case (and no negative ones), /v1/models and /files/{name} few distinct ones
POSITIVE = {"POST": 170, "GET": 25}
NEGATIVE = {"POST": 100, "GET": 25}
CHEAP_COUNT = 2  # n and max_images above this become this
KEY_LINE = re.compile(r"Created API key 'default' \(shown once, store it now\): (sk-\S+)")


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 40)).save(out, "PNG")
    return out.getvalue()


PNG = tiny_png()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A live server with authentication on; its first key is printed once on stdout (the log)."""
    # failed authentications are not throttled here: negative cases may send a mangled Authorization header
    server = start_server(tmp_path_factory.mktemp("schemathesis"), "--auth-failure-limit", "1000000")
    try:
        key = wait_until(lambda: KEY_LINE.search(server.log.read_text()), "the first key was printed").group(1)
        yield server, key
    finally:
        stop_server(server)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and CHEAP_COUNT < value <= 15


def cheapen(body: Any) -> Any:
    """The generation body as generated, with what would be costly or leave loopback replaced (module doc)."""
    if not isinstance(body, dict):
        return body
    image = body.get("image")
    if isinstance(image, str) and image[:5].lower() != "data:":
        body["image"] = PNG_URI
    elif isinstance(image, list):
        body["image"] = [PNG_URI if isinstance(i, str) and i[:5].lower() != "data:" else i for i in image]
    if _is_count(body.get("n")):
        body["n"] = CHEAP_COUNT
    options = body.get("sequential_image_generation_options")
    if body.get("sequential_image_generation") == "auto" and options is None:
        body["sequential_image_generation_options"] = options = {"max_images": CHEAP_COUNT}
    if isinstance(options, dict) and (options.get("max_images") is None or _is_count(options.get("max_images"))):
        options["max_images"] = CHEAP_COUNT
    return body


class Tally:
    """Requests sent and statuses seen, per operation."""

    def __init__(self) -> None:
        self.statuses: dict[str, Counter[int]] = {}

    def add(self, label: str, status: int) -> None:
        self.statuses.setdefault(label, Counter())[status] += 1

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def summary(self) -> dict[str, dict[int, int]]:
        return {label: dict(sorted(c.items())) for label, c in self.statuses.items()}


def has_inputs(operation: APIOperation) -> bool:
    """Whether a case of ``operation`` can be wrong at all (else negative generation has nothing to negate)."""
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody") or raw.get("security"))


def fuzz(operation: APIOperation, mode: GenerationMode, key: str, tally: Tally) -> None:
    """Send up to the mode's examples of ``operation`` and check each response against the document."""
    label = operation.label
    method = operation.method.upper()
    generates = method == "POST"
    positive = mode is GenerationMode.POSITIVE
    keyed = operation.path.startswith(("/v1/", "/api/v3/"))
    # what a positive case may be turned into: the served model, a real upload (module doc)
    choice = st.booleans() if generates and positive else st.just(False)

    # a negative case of a route with a body gets the key, so that what is wrong is in its body, not its
    # (otherwise mostly missing) Authorization header; without a body, that header is all that can be wrong
    headers = {"Authorization": f"Bearer {key}"} if keyed and not positive and generates else None
    strategy = operation.as_strategy(mode, headers=headers)

    @settings(
        max_examples=(POSITIVE if positive else NEGATIVE)[method],
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run, so a failure in CI reproduces locally
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, served=choice, upload=choice)
    def run(case: Case, served: bool, upload: bool) -> None:
        if generates and isinstance(case.body, dict):
            case.body = cheapen(case.body)
            if served:
                case.body["model"] = MODEL
            if upload and isinstance(case.body.get("image[]"), list):
                case.body["image[]"] = [PNG]
        if keyed and positive and zlib.crc32(repr((case.body, case.query)).encode()) % 8 == 0:
            # one positive case in eight goes without its key (decided by its content, the same on a replay)
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        response = case.call(timeout=60)
        tally.add(label, response.status_code)
        # a case we edited (real PNG bytes for a binary field) may no longer validate against the document's
        # JSON Schema, so schemathesis could take it for a negative one: that check runs on negative cases only
        case.validate_response(response, checks=CHECKS if positive else [*CHECKS, negative_data_rejection])

    run()


def test_schemathesis_against_the_live_server(keyed_server: tuple[LiveServer, str]) -> None:
    server, key = keyed_server
    # the key goes where the document's security scheme says; no schemathesis.toml is read
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {SECURITY_SCHEME: {"bearer": key}}}})
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10, [operation.label for operation in operations]
    tally = Tally()
    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE, key, tally)
        if has_inputs(operation):
            fuzz(operation, GenerationMode.NEGATIVE, key, tally)
    assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200  # still serving after all of it

    summary = tally.summary()
    print(f"schemathesis: {tally.total()} requests; statuses per operation: {summary}")
    assert 900 <= tally.total() <= 1200, summary
    assert not [status for c in tally.statuses.values() for status in c if status >= 500], summary
    for label in ("POST /api/v3/images/generations", "POST /v1/images/generations", "POST /v1/images/edits"):
        assert tally.statuses[label][200] > 0, f"{label} never generated an image: {summary}"
        assert tally.statuses[label][401] > 0, f"{label} was never sent without a key: {summary}"
