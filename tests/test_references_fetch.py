"""Getting a reference's bytes (references/fetch.py): data URIs and URLs from a real local server on
127.0.0.1 (redirects, byte caps, timeouts, HTTPS pinned to the checked address)."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from PIL import Image

from references_support import JPEG, LOCAL, PNG, FakeDNS, no_client, refused
from refserver import ImageServer, data_uri, encode, tls_contexts
from seedream_server.references import ReferencePolicy, load_references


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        srv.files["png"] = (PNG, "image/png")
        srv.files["text-png"] = (PNG, "text/plain")
        srv.files["html"] = (b"<!DOCTYPE html><html><body>nope</body></html>", "image/png")
        yield srv


@pytest.fixture
def srv(server: ImageServer) -> ImageServer:
    server.reset_counters()
    return server


# ------------------------------------------------------------------------------------------------
# Data URIs


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"/>'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (data_uri(PNG, "PNG"), "must be lowercase"),
        (data_uri(PNG, "Jpeg"), "must be lowercase"),
        (data_uri(JPEG, "png"), "declared format 'png' does not match the content, which is 'jpeg'"),
        (data_uri(PNG, "gif"), "declared format 'gif' does not match"),
        ("data:image/png;base64,iVBORw0KGgo!!!", "invalid base64"),
        ("data:image/png;base64,iVBORw0KGgo", "invalid base64"),  # bad padding
        ("data:image/png;base64,", "empty image data"),
        (data_uri(SVG, "svg+xml"), "unsupported image format 'svg'"),
        (data_uri(SVG, "png"), "unsupported image format 'svg'"),
        (data_uri(b"GIF89a", "heic"), "unsupported image format 'heic'"),
        (data_uri(b"just some text here", "png"), "unsupported image format"),
        ("data:image/png,rawbytes", "data:image/<format>;base64,<data>"),
        ("data:text/plain;base64,aGVsbG8=", "data:image/<format>;base64,<data>"),
        ("ftp://127.0.0.1/a.png", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("gopher://127.0.0.1:70/_x", "unsupported scheme 'gopher'"),
        ("/relative/path.png", "unsupported scheme"),
        ("", "non-empty string"),
    ],
)
async def test_bad_data_uris_and_schemes(value: str, expected: str) -> None:
    message = await refused(value, ReferencePolicy(), client_factory=no_client)
    assert message.startswith("image[0]: ")
    assert expected in message


async def test_data_uri_over_the_byte_cap() -> None:
    policy = replace(LOCAL, max_bytes=1000)
    assert "1000-byte limit" in await refused(data_uri(encode(Image.effect_noise((64, 64), 64), "png"), "png"), policy)


async def test_wrapped_base64_is_accepted_as_rfc_2045_allows() -> None:
    encoded = base64.encodebytes(PNG).decode("ascii")  # 76 columns, newline-terminated, as `base64` prints
    assert "\n" in encoded.strip()
    crlf = "\r\n".join(textwrap.wrap(base64.b64encode(JPEG).decode("ascii"), 64))
    spaced = " ".join(textwrap.wrap(base64.b64encode(PNG).decode("ascii"), 4)) + "\t\n"
    values = [f"data:image/png;base64,{encoded}", f"data:image/jpeg;base64,{crlf}", f"data:image/png;base64,{spaced}"]
    refs = await load_references(values, ReferencePolicy(), client_factory=no_client)
    assert [(r.format, r.width, r.height) for r in refs] == [("png", 64, 48), ("jpeg", 64, 48), ("png", 64, 48)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("iVBORw0KGgo-_", "base64url '-' and '_' is not"),
        ("iVBO\u00e9Rw0K", "only A-Z, a-z, 0-9"),
        ("iVBO=Rw0K", "only A-Z, a-z, 0-9"),  # padding in the middle
        ("iVBORw0KG\ngo", "not a multiple of 4"),
        (" \r\n ", "empty image data"),
    ],
)
async def test_garbage_base64_is_refused_with_a_hint(payload: str, expected: str) -> None:
    message = await refused(f"data:image/png;base64,{payload}", ReferencePolicy(), client_factory=no_client)
    assert message.startswith("image[0]: ")
    assert expected in message


# ------------------------------------------------------------------------------------------------
# URLs from the local server (allowlisted)


async def test_url_reference(srv: ImageServer) -> None:
    [ref] = await load_references(srv.url("/img/png"), LOCAL)
    assert (ref.format, ref.width, ref.height, ref.source) == ("png", 64, 48, "url")
    assert srv.connections == 1


async def test_ten_slow_references_are_fetched_concurrently(srv: ImageServer) -> None:
    refs = await load_references([srv.url("/slow/500/png")] * 10, LOCAL)
    assert [r.index for r in refs] == list(range(10))
    assert srv.peak == 10  # all ten requests were in flight at once (wall time: bench/bench_references.py)


async def test_first_failure_cancels_the_other_fetches() -> None:
    with ImageServer() as slow:  # its own server: the slow handlers end only when it stops
        slow.files["png"] = (PNG, "image/png")
        # the slow responses come after 10 minutes (or at shutdown): `refused` gives up after 20 s, so a
        # refusal at all proves the other fetches were not waited for
        message = await refused([slow.url("/slow/600000/png")] * 3 + [slow.url("/img/missing")])
        assert message == "image[3]: HTTP 404 fetching the image"


async def test_404(srv: ImageServer) -> None:
    assert await refused(srv.url("/nothing-here")) == "image[0]: HTTP 404 fetching the image"


async def test_content_type_is_ignored(srv: ImageServer) -> None:
    [ref] = await load_references(srv.url("/img/text-png"), LOCAL)  # png served as text/plain
    assert ref.format == "png"
    assert "unsupported image format 'html'" in await refused(srv.url("/img/html"))  # html as image/png


@pytest.mark.parametrize("hops", [1, 3])
async def test_redirects_are_followed(srv: ImageServer, hops: int) -> None:
    [ref] = await load_references(srv.url(f"/redirect/{hops}/png"), LOCAL)
    assert ref.format == "png"


async def test_more_than_three_redirects_are_refused(srv: ImageServer) -> None:
    assert "too many redirects (more than 3)" in await refused(srv.url("/redirect/4/png"))
    assert srv.connections == 4  # the fourth redirect was not followed


@pytest.mark.parametrize("cl", ["honest", "none", "1000"])
async def test_oversized_body_is_cut_by_the_byte_cap(srv: ImageServer, cl: str) -> None:
    policy = replace(LOCAL, max_bytes=100_000)
    message = await refused(srv.url(f"/big?n=400000&cl={cl}"), policy)
    if cl == "1000":  # an understated length ends the body early: the image is incomplete
        assert "truncated or corrupt" in message
    else:
        assert "100000-byte limit" in message


async def test_never_ending_body_stops_at_the_cap(srv: ImageServer) -> None:
    policy = replace(LOCAL, max_bytes=2_000_000)
    assert "2000000-byte limit" in await refused(srv.url("/endless"), policy)


async def test_trickling_body_stops_at_the_total_timeout(srv: ImageServer) -> None:
    policy = replace(LOCAL, total_timeout=1.0)
    # the trickle never ends; the refusal names the total timeout that ended it
    assert "took longer than 1 s" in await refused(srv.url("/trickle"), policy)


async def test_stalled_body_hits_the_read_timeout(srv: ImageServer) -> None:
    policy = replace(LOCAL, read_timeout=0.3)
    assert "timed out fetching the image (ReadTimeout)" in await refused(srv.url("/stall"), policy)


async def test_connection_refused_is_a_400() -> None:
    with ImageServer() as gone:
        url = gone.url("/img/png")
    assert "could not connect" in await refused(url)


# ------------------------------------------------------------------------------------------------
# HTTPS: the connection goes to the pinned address, TLS still verifies and names the host


async def test_https_is_pinned_but_verified_against_the_host_name() -> None:
    pytest.importorskip("cryptography")
    server_tls, client_tls = tls_contexts("images.example")
    with ImageServer(tls=server_tls) as tls_srv:
        tls_srv.files["png"] = (PNG, "image/png")
        dns = FakeDNS({"images.example": ["127.0.0.1"]})

        def factory() -> httpx.AsyncClient:
            return httpx.AsyncClient(verify=client_tls, trust_env=False)

        url = tls_srv.url("/img/png", host="images.example")
        [ref] = await load_references(url, LOCAL, client_factory=factory, resolver=dns)
        assert ref.format == "png"
        assert tls_srv.sni == ["images.example"]
        assert tls_srv.hosts == [f"images.example:{tls_srv.port}"]
        # the certificate does not cover the bare address: verification fails, nothing is fetched
        assert "could not connect" in await refused(tls_srv.url("/img/png"), client_factory=factory)
        assert tls_srv.hosts == [f"images.example:{tls_srv.port}"]
