"""Reference images (SPEC §4): data URIs, URLs from a real local server, limits, and the forgery guard.

Traffic goes only to the test server on 127.0.0.1. Addresses outside loopback are tested on the pure
:func:`check_address`, never by connecting.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import httpx
import pytest
from PIL import Image

from refserver import ImageServer, data_uri, encode, png_of_size, solid, tls_contexts
from seedream_server.errors import InvalidParameter
from seedream_server.references import (
    IPAddress,
    ReferencePolicy,
    ReferenceRejected,
    UnsafeAddress,
    _parse_url,
    check_address,
    load_references,
    parse_allowlist,
    parse_host,
    sniff_format,
)

LOCAL = ReferencePolicy(allowlist=parse_allowlist("127.0.0.1/32"))
PNG = encode(solid((64, 48)), "png")
JPEG = encode(solid((64, 48)), "jpeg")


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


async def refused(value: str | list[str], policy: ReferencePolicy = LOCAL, **kwargs: object) -> str:
    """Load and expect a 400 on ``image``; return its message."""
    with pytest.raises(InvalidParameter) as info:
        await asyncio.wait_for(load_references(value, policy, **kwargs), 20)  # type: ignore[arg-type]
    assert info.value.param == "image"
    assert info.value.status == 400
    return info.value.message


def no_client() -> httpx.AsyncClient:
    raise AssertionError("no HTTP client may be built for this input")


# ------------------------------------------------------------------------------------------------
# Data URIs and formats


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp", "tiff", "gif"])
async def test_every_format_is_accepted_as_data_uri(fmt: str) -> None:
    data = encode(solid((40, 30), (10, 200, 30)), fmt)
    [ref] = await load_references(data_uri(data, fmt), ReferencePolicy(), client_factory=no_client)
    assert (ref.index, ref.format, ref.width, ref.height, ref.source) == (0, fmt, 40, 30, "data")
    assert ref.image.mode == "RGB" and ref.image.size == (40, 30)
    r, g, b = ref.image.getpixel((5, 5))  # type: ignore[misc]
    assert g > 150 and r < 60 and b < 80


async def test_jpg_is_an_alias_of_jpeg_and_a_list_keeps_order() -> None:
    refs = await load_references([data_uri(JPEG, "jpg"), data_uri(PNG, "png")], ReferencePolicy())
    assert [(r.index, r.format) for r in refs] == [(0, "jpeg"), (1, "png")]


async def test_gif_uses_its_first_frame() -> None:
    frames = [solid((32, 32), (255, 0, 0)), solid((32, 32), (0, 0, 255))]
    buffer = __import__("io").BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    [ref] = await load_references(data_uri(buffer.getvalue(), "gif"), ReferencePolicy())
    r, _, b = ref.image.getpixel((10, 10))  # type: ignore[misc]
    assert r > 200 and b < 50


async def test_exif_orientation_is_applied() -> None:
    image = solid((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    [ref] = await load_references(data_uri(encode(image, "jpeg", exif=exif), "jpeg"), ReferencePolicy())
    assert (ref.width, ref.height) == (20, 40)


async def test_alpha_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    [ref] = await load_references(data_uri(encode(image, "png"), "png"), ReferencePolicy())
    assert ref.image.mode == "RGB" and ref.image.getpixel((3, 3)) == (255, 255, 255)


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


async def test_error_names_the_failing_index() -> None:
    value = [data_uri(PNG, "png"), data_uri(JPEG, "jpeg"), data_uri(PNG, "jpeg")]
    assert (await refused(value)).startswith("image[2]: declared format 'jpeg'")


async def test_more_than_max_count_says_how_many_the_model_takes() -> None:
    uri = data_uri(PNG, "png")
    assert len(await load_references([uri] * 14, ReferencePolicy())) == 14
    assert "takes at most 14" in await refused([uri] * 15)
    message = await refused([uri] * 4, replace(LOCAL, max_count=3))
    assert "4 reference images given" in message and "at most 3" in message


async def test_none_and_empty_list_mean_no_references() -> None:
    assert await load_references(None, ReferencePolicy()) == []
    assert await load_references([], ReferencePolicy()) == []


# ------------------------------------------------------------------------------------------------
# Limits, checked from the header


async def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_of_size(50_000, 50_000)
    assert len(bomb) < 1_000_000  # 2.5 G pixels in a few hundred KB
    message = await refused(data_uri(bomb, "png"))
    assert "more than 36000000 (decompression bomb)" in message
    # under Pillow's own limit, our header check names the size
    message = await refused(data_uri(png_of_size(9000, 9000), "png"))
    assert "9000x9000 = 81000000 pixels, more than 36000000" in message


async def test_pixel_limit_is_exact() -> None:
    assert "more than 36000000" in await refused(data_uri(png_of_size(6001, 6000, full=False), "png"))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((14, 100), "at least 15 px"),
        ((100, 14), "at least 15 px"),
        ((15, 255), "aspect ratio 15:255 is outside [1/16, 16]"),
        ((255, 15), "aspect ratio 255:15"),
    ],
)
async def test_dimension_and_aspect_limits(size: tuple[int, int], expected: str) -> None:
    assert expected in await refused(data_uri(encode(solid(size), "png"), "png"))


@pytest.mark.parametrize("size", [(15, 15), (16, 256), (256, 16)])
async def test_limits_are_inclusive(size: tuple[int, int]) -> None:
    [ref] = await load_references(data_uri(encode(solid(size), "png"), "png"), ReferencePolicy())
    assert (ref.width, ref.height) == size


async def test_truncated_jpeg_is_refused() -> None:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "jpeg")
    message = await refused(data_uri(data[: len(data) // 2], "jpeg"))
    assert "truncated or corrupt" in message


async def test_data_uri_over_the_byte_cap() -> None:
    policy = replace(LOCAL, max_bytes=1000)
    assert "1000-byte limit" in await refused(data_uri(encode(Image.effect_noise((64, 64), 64), "png"), "png"), policy)


# ------------------------------------------------------------------------------------------------
# URLs from the local server (allowlisted)


async def test_url_reference(srv: ImageServer) -> None:
    [ref] = await load_references(srv.url("/img/png"), LOCAL)
    assert (ref.format, ref.width, ref.height, ref.source) == ("png", 64, 48, "url")
    assert srv.connections == 1


async def test_ten_slow_references_are_fetched_concurrently(srv: ImageServer) -> None:
    started = time.monotonic()
    refs = await load_references([srv.url("/slow/500/png")] * 10, LOCAL)
    elapsed = time.monotonic() - started
    assert [r.index for r in refs] == list(range(10))
    assert srv.peak == 10  # all ten requests were in flight at once
    assert elapsed < 5.0  # well under 10 x 0.5 s


async def test_first_failure_cancels_the_other_fetches(srv: ImageServer) -> None:
    started = time.monotonic()
    message = await refused([srv.url("/slow/8000/png")] * 3 + [srv.url("/img/missing")])
    assert message == "image[3]: HTTP 404 fetching the image"
    assert time.monotonic() - started < 6.0  # did not wait for the 8 s responses


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


async def test_redirect_target_is_checked_again(srv: ImageServer) -> None:
    port = srv.port
    targets = {
        f"http://127.0.0.2:{port}/img/png": "address 127.0.0.2 is not allowed: loopback",
        f"http://[::1]:{port}/img/png": "address ::1 is not allowed: loopback",
        f"http://localhost:{port}/img/png": "'localhost' resolves to address ::1",
        f"http://user:pw@127.0.0.1:{port}/img/png": "user info",
        "file:///etc/passwd": "unsupported scheme 'file'",
    }
    for target, expected in targets.items():
        srv.reset_counters()
        location = httpx.QueryParams({"to": target})
        message = await refused(srv.url(f"/goto?{location}"))
        assert message.startswith("image[0]: redirect refused: ") and expected in message, message
        assert srv.connections == 1  # only the redirecting request
    # httpx itself refuses a leading-zero dotted quad in a Location header
    srv.reset_counters()
    location = httpx.QueryParams({"to": f"http://0177.0.0.2:{port}/img/png"})
    assert "Invalid IPv4 address: '0177.0.0.2'" in await refused(srv.url(f"/goto?{location}"))
    assert srv.connections == 1


async def test_redirect_to_another_spelling_of_an_allowed_address(srv: ImageServer) -> None:
    location = httpx.QueryParams({"to": f"http://2130706433:{srv.port}/img/png"})
    [ref] = await load_references(srv.url(f"/goto?{location}"), LOCAL)
    assert ref.format == "png"
    assert srv.hosts[-1] == f"2130706433:{srv.port}"


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
    started = time.monotonic()
    assert "took longer than 1 s" in await refused(srv.url("/trickle"), policy)
    assert time.monotonic() - started < 5


async def test_stalled_body_hits_the_read_timeout(srv: ImageServer) -> None:
    policy = replace(LOCAL, read_timeout=0.3)
    assert "timed out fetching the image (ReadTimeout)" in await refused(srv.url("/stall"), policy)


async def test_connection_refused_is_a_400() -> None:
    with ImageServer() as gone:
        url = gone.url("/img/png")
    assert "could not connect" in await refused(url)


# ------------------------------------------------------------------------------------------------
# Forgery guard over the network: loopback spellings, no allowlist, no connection


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LOCALHOST",
        "img.localhost",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f.1",
        "127.1",
        "127.0.0.1.",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:0:0:1]",
    ],
)
async def test_loopback_spellings_are_refused_without_connecting(srv: ImageServer, host: str) -> None:
    message = await refused(srv.url("/img/png", host=host), ReferencePolicy())
    if host == "0177.0.0.1":  # httpx refuses a dotted quad with leading zeros before we see it
        assert "invalid URL (Invalid IPv4 address" in message
    else:
        assert "not allowed" in message and "loopback" in message, message
    assert srv.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://256.0.0.1/x.png",  # numeric but no address: never sent to DNS
        "http://08.0.0.1/x.png",
        "http://1.2.3.4.5/x.png",
        "http://[fe80::1%25lo]/x.png",
        "http://exa mple.com/x.png",
    ],
)
async def test_malformed_hosts_are_refused(url: str) -> None:
    await refused(url, ReferencePolicy(), client_factory=no_client)


async def test_userinfo_is_refused(srv: ImageServer) -> None:
    assert "user info" in await refused(srv.url("/img/png", host="u:p@127.0.0.1"))
    assert srv.connections == 0


class FakeDNS:
    """A resolver answering from a table (the real one calls loop.getaddrinfo once)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.calls.append((host, port))
        return [ipaddress.ip_address(a) for a in self.table[host]]


async def test_host_is_resolved_once_and_the_connection_pinned(srv: ImageServer) -> None:
    dns = FakeDNS({"images.example": ["127.0.0.1"]})
    [ref] = await load_references(srv.url("/img/png", host="images.example"), LOCAL, resolver=dns)
    assert ref.format == "png"
    assert dns.calls == [("images.example", srv.port)]
    assert srv.hosts == [f"images.example:{srv.port}"]  # connected to 127.0.0.1, Host kept


async def test_every_resolved_address_is_checked(srv: ImageServer) -> None:
    dns = FakeDNS({"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    message = await refused(srv.url("/img/png", host="rebind.example"), ReferencePolicy(), resolver=dns)
    assert "'rebind.example' resolves to address 127.0.0.1 is not allowed: loopback" in message
    assert srv.connections == 0


async def test_allowlisted_host_name_may_resolve_anywhere(srv: ImageServer) -> None:
    dns = FakeDNS({"images.internal": ["127.0.0.1"]})
    policy = ReferencePolicy(allowlist=parse_allowlist("images.internal"))
    [ref] = await load_references(srv.url("/img/png", host="images.internal"), policy, resolver=dns)
    assert ref.format == "png"
    assert "not allowed" in await refused(srv.url("/img/png"), policy)  # the address itself is not


async def test_internationalised_host_is_resolved_and_allowlisted_in_idna_form(srv: ImageServer) -> None:
    dns = FakeDNS({"xn--bcher-kva.de": ["127.0.0.1"]})
    policy = ReferencePolicy(allowlist=parse_allowlist("bücher.de"))  # written either way, stored as IDNA
    assert policy.allowlist == ("xn--bcher-kva.de",)
    [ref] = await load_references(srv.url("/img/png", host="bücher.de"), policy, resolver=dns)
    assert ref.format == "png"
    assert dns.calls == [("xn--bcher-kva.de", srv.port)]
    assert srv.hosts == [f"xn--bcher-kva.de:{srv.port}"]
    # not allowlisted: resolved (in IDNA form) and refused for the loopback address, never connected
    message = await refused(srv.url("/img/png", host="BÜCHER.de"), ReferencePolicy(), resolver=dns)
    assert "'xn--bcher-kva.de' resolves to address 127.0.0.1 is not allowed: loopback" in message


async def test_unresolvable_host(srv: ImageServer) -> None:
    async def fail(host: str, port: int) -> Sequence[IPAddress]:
        raise OSError("no such host")

    assert "could not resolve host 'nowhere.example'" in await refused(
        srv.url("/img/png", host="nowhere.example"), ReferencePolicy(), resolver=fail
    )


# ------------------------------------------------------------------------------------------------
# Pure functions: addresses that must never be connected to


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.0.1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.1", "loopback"),
        ("::1", "loopback"),
        ("fc00::1", "unique local"),
        ("fec0::1", "site-local"),
        ("::ffff:10.0.0.1", "v4-mapped IPv6 form of 10.0.0.1, private"),
        ("::ffff:169.254.169.254", "v4-mapped IPv6 form of 169.254.169.254, link-local (cloud metadata)"),
        ("::ffff:127.0.0.1", "v4-mapped IPv6 form of 127.0.0.1, loopback"),
        ("64:ff9b::10.0.0.1", "NAT64 IPv6 form of 10.0.0.1, private"),
        ("64:ff9b::169.254.169.254", "cloud metadata"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2002:7f00:1::1", "6to4 IPv6 form of 127.0.0.1, loopback"),
        ("2002:c0a8:101::1", "6to4 IPv6 form of 192.168.1.1, private"),
        ("::127.0.0.1", "v4-compatible"),
        ("2001::1", "Teredo"),
        ("4000::1", "reserved"),
    ],
)
def test_check_address_refuses(address: str, reason: str) -> None:
    with pytest.raises(UnsafeAddress, match="not allowed") as info:
        check_address(ipaddress.ip_address(address))
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"]
)
def test_check_address_allows_public_addresses(address: str) -> None:
    check_address(ipaddress.ip_address(address))


def test_check_address_allowlist() -> None:
    allow = parse_allowlist("127.0.0.1/32, 10.0.0.0/8, images.internal")
    check_address(ipaddress.ip_address("10.1.2.3"), allow)
    check_address(ipaddress.ip_address("127.0.0.1"), allow)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), allow)  # the same socket address
    for address in ["127.0.0.2", "169.254.169.254", "::1", "192.168.0.1", "64:ff9b::a00:1"]:
        with pytest.raises(UnsafeAddress):
            check_address(ipaddress.ip_address(address), allow)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("10.0.0.1.", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[fd00:ec2::254]", "fd00:ec2::254"),
    ],
)
def test_parse_host_reads_every_spelling(host: str, address: str) -> None:
    assert parse_host(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "images.internal", "localhost", "1x.example", "a-1.b2"])
def test_parse_host_leaves_names_alone(host: str) -> None:
    assert parse_host(host) is None


@pytest.mark.parametrize("host", ["256.0.0.1", "1.2.3.4.5", "08.0.0.1", "1.2.3.0x100", "4294967296", "a.1", "[::g]"])
def test_parse_host_refuses_numeric_non_addresses(host: str) -> None:
    with pytest.raises(ReferenceRejected):
        parse_host(host)


def test_parse_allowlist() -> None:
    assert parse_allowlist("127.0.0.1/32,10.0.0.0/8,images.internal") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        "images.internal",
    )
    assert parse_allowlist("::1, 192.168.1.7, Images.Internal.") == (
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.7/32"),
        "images.internal",
    )
    assert parse_allowlist("") == ()


@pytest.mark.parametrize("url", ["http://bücher.de/a.png", "http://xn--bcher-kva.de/a.png", "https://BÜCHER.de./a.png"])
def test_internationalised_domain_names_parse_to_their_idna_form(url: str) -> None:
    target = _parse_url(url, ReferencePolicy())  # pure: no resolution, no connection
    assert target.host == "xn--bcher-kva.de"
    assert target.addresses == ()
    assert target.url.raw_host.rstrip(b".") == b"xn--bcher-kva.de"


def test_parse_allowlist_puts_host_names_in_idna_form() -> None:
    assert parse_allowlist("Bücher.de., xn--bcher-kva.de") == ("xn--bcher-kva.de", "xn--bcher-kva.de")


@pytest.mark.parametrize("spec", ["10.0.0.0/33", "0177.0.0.1", "2130706433", "300.1.1.1", "a..b", "host/8", "*.x"])
def test_parse_allowlist_refuses_bad_entries(spec: str) -> None:
    with pytest.raises(ValueError, match="invalid allowlist entry"):
        parse_allowlist(spec)


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"BM\x00\x00", "bmp"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
        (b"GIF87a", "gif"),
        (b"\x00\x00\x00\x1cftypavif", "avif"),
        (b"<svg xmlns=", "svg"),
        (b"<!doctype html>", "html"),
        (b"%PDF-1.7", "pdf"),
        (b"\x00\x01\x02", "unknown"),
    ],
)
def test_sniff_format(head: bytes, fmt: str) -> None:
    assert sniff_format(head) == fmt


def test_policy_from_settings() -> None:
    from seedream_server.config import Settings

    settings = Settings(reference_allowlist="10.0.0.0/8", reference_max_bytes=1234, reference_timeout_s=2.5)
    policy = ReferencePolicy.from_settings(settings, max_count=3)
    assert (policy.max_bytes, policy.read_timeout, policy.max_count) == (1234, 2.5, 3)
    assert policy.allowlist == (ipaddress.ip_network("10.0.0.0/8"),)


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
