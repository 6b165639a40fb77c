"""Reference images: turning the request's ``image`` strings into checked, decoded PIL images.

This module owns step 2 of a request (SPEC §4): parsing ``data:image/<fmt>;base64,...`` URIs and
http(s) URLs, fetching URLs safely, sniffing the format from the bytes, enforcing the size, dimension,
pixel and aspect limits *from the header* before any pixel is decoded, and decoding to RGB.

Pipeline of :func:`load_references`::

    1. count      more than policy.max_count -> 400 naming the model's limit
    2. parse      every item, no I/O: data URI (lowercase format, strict base64, sniffed format ==
                  declared format) or URL (http/https, no userinfo, literal IP hosts guarded)
    3. fetch      URLs concurrently in one TaskGroup; per URL: resolve the host ONCE, check every
                  address (:func:`check_address`), connect to that exact address (Host header and
                  TLS SNI keep the name), stream with a byte cap, follow <= max_redirects redirects,
                  each re-parsed and re-guarded; Content-Type and Content-Length are not trusted
    4. decode     in worker threads: open (header only), check limits, then load; EXIF orientation,
                  first frame of animations, alpha flattened on white, RGB

Any failure is an :class:`~seedream_server.errors.InvalidParameter` with ``param="image"`` and a
message ``image[<index>]: <reason>``; the first failure cancels every other fetch and decode, so a
request never proceeds with a partial set of references.

The server-side request forgery guard is made of two pure functions, :func:`parse_host` (every IPv4
spelling ``inet_aton`` accepts: decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short
``127.1``; IPv6 with or without brackets) and :func:`check_address` (loopback, private, link-local and
cloud metadata, multicast, reserved, unspecified, shared/CGNAT, and the IPv4 embedded in v4-mapped,
NAT64 and 6to4 IPv6 forms), so they can be tested without any traffic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import httpx
from PIL import Image, ImageOps

from seedream_server.errors import InvalidParameter

if TYPE_CHECKING:
    from seedream_server.config import Settings

__all__ = [
    "FORMATS",
    "AllowEntry",
    "IPAddress",
    "Reference",
    "ReferencePolicy",
    "ReferenceRejected",
    "Resolver",
    "UnsafeAddress",
    "check_address",
    "decode_image",
    "load_references",
    "parse_allowlist",
    "parse_host",
    "sniff_format",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowEntry = IPNetwork | str
"""An allowlist entry: a network, or a lowercase host name allowed whatever it resolves to."""

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""``resolve(host, port) -> addresses``; the default calls ``loop.getaddrinfo`` once."""

ClientFactory = Callable[[], httpx.AsyncClient]

ImageFormat = Literal["jpeg", "png", "webp", "bmp", "tiff", "gif"]
FORMATS: Final[tuple[ImageFormat, ...]] = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
_PIL_NAMES: Final[dict[str, str]] = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
    "gif": "GIF",
}
_FORMAT_ALIASES: Final[dict[str, ImageFormat]] = {f: f for f in FORMATS} | {"jpg": "jpeg"}
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024


# --------------------------------------------------------------------------------------------------
# Policy and results


@dataclass(frozen=True)
class ReferencePolicy:
    """Limits for reference images; the defaults are SPEC §4's."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 36_000_000
    min_side: int = 15
    min_ratio: float = 1 / 16
    max_ratio: float = 16.0
    max_count: int = 14
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 3
    allowlist: tuple[AllowEntry, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings, *, max_count: int = 14) -> ReferencePolicy:
        """The policy a server runs with: byte cap, read timeout and allowlist come from settings."""
        return cls(
            max_bytes=settings.reference_max_bytes,
            read_timeout=settings.reference_timeout_s,
            allowlist=parse_allowlist(settings.reference_allowlist),
            max_count=max_count,
        )


@dataclass(frozen=True)
class Reference:
    """One checked reference image, decoded to RGB (orientation applied, alpha on white)."""

    index: int
    image: Image.Image
    format: ImageFormat
    width: int
    height: int
    source: Literal["data", "url"]


class ReferenceRejected(ValueError):
    """A reference was refused; ``str(exc)`` is the reason, without the index."""


class UnsafeAddress(ReferenceRejected):
    """:func:`check_address` refused an address (server-side request forgery guard)."""


# --------------------------------------------------------------------------------------------------
# Server-side request forgery guard (pure functions)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

_METADATA: Final[frozenset[IPAddress]] = frozenset(
    {ipaddress.IPv4Address("169.254.169.254"), ipaddress.IPv6Address("fd00:ec2::254")}
)

# Order matters only for the reason given; every listed network is refused.
_BLOCKED_V4: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared address space (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.0.2.0/24"), "reserved (documentation)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay)"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("198.51.100.0/24"), "reserved (documentation)"),
    (_V4("203.0.113.0/24"), "reserved (documentation)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),  # includes 255.255.255.255 broadcast
)

_V4_MAPPED: Final = _V6("::ffff:0:0/96")
_V4_COMPATIBLE: Final = _V6("::/96")
_NAT64: Final = _V6("64:ff9b::/96")
_SIXTOFOUR: Final = _V6("2002::/16")
_GLOBAL_UNICAST_V6: Final = _V6("2000::/3")

_BLOCKED_V6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "private (local-use NAT64)"),
    (_V6("100::/64"), "reserved (discard)"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments, Teredo)"),
    (_V6("2001:db8::/32"), "reserved (documentation)"),
    (_V6("3fff::/20"), "reserved (documentation)"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "private (site-local)"),
    (_V6("ff00::/8"), "multicast"),
)


def _allowed(ip: IPAddress, allowlist: Iterable[AllowEntry]) -> bool:
    return any(not isinstance(entry, str) and ip in entry for entry in allowlist)


def _host_allowed(host: str, allowlist: Iterable[AllowEntry]) -> bool:
    return any(isinstance(entry, str) and entry == host for entry in allowlist)


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 form carries, with the form's name, if it carries one."""
    if ip in _V4_MAPPED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "v4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in _SIXTOFOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF), "6to4"
    if ip in _V4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "v4-compatible"
    return None


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    if ip in _METADATA:
        return "link-local (cloud metadata)"
    for network, reason in _BLOCKED_V4:
        if ip in network:
            return reason
    return None


def _v6_reason(ip: ipaddress.IPv6Address) -> str | None:
    if ip.scope_id:
        return "IPv6 zone identifier"
    if ip in _METADATA:
        return "private (cloud metadata)"
    for network, reason in _BLOCKED_V6:
        if ip in network:
            return reason
    if ip not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


def check_address(ip: IPAddress, allowlist: Iterable[AllowEntry] = ()) -> None:
    """Refuse an address a reference URL must not reach, unless an allowlist network contains it.

    Raises :class:`UnsafeAddress` for loopback, private, shared (100.64/10), link-local (including
    the cloud metadata addresses 169.254.169.254 and fd00:ec2::254), multicast, reserved and
    unspecified addresses, for IPv6 forms that embed such an IPv4 address (v4-mapped ``::ffff:a.b.c.d``,
    NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``; with a public IPv4 inside they pass), for the deprecated
    v4-compatible ``::a.b.c.d`` and for other IPv6 outside global unicast ``2000::/3``. An allowlisted
    IPv4 address is allowed in its v4-mapped form too. Host-name entries of the allowlist are ignored
    here (they are matched against the URL's host before resolution). Pure: no I/O.
    """
    entries = tuple(allowlist)
    if _allowed(ip, entries):
        return
    if isinstance(ip, ipaddress.IPv4Address):
        reason = _v4_reason(ip)
    else:
        embedded = _embedded_v4(ip)
        if embedded is None:
            reason = _v6_reason(ip)
        else:
            v4, form = embedded
            if form == "v4-compatible":
                reason = f"reserved (deprecated v4-compatible form of {v4})"
            elif form == "v4-mapped" and _allowed(v4, entries):
                return  # the socket goes to exactly that IPv4 address
            else:
                inner = _v4_reason(v4)
                reason = f"{form} IPv6 form of {v4}, {inner}" if inner else None
    if reason is not None:
        raise UnsafeAddress(f"address {ip} is not allowed: {reason}")


_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


def _parse_ipv4_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)  # raises ValueError on 8 or 9, like inet_aton
    return int(part)


def parse_host(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, in any spelling, or None for a host name.

    IPv4 follows ``inet_aton`` (and the WHATWG URL standard): 1 to 4 dot-separated parts, each
    decimal, octal (leading ``0``) or hex (``0x``), the last filling the remaining bytes; so
    ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` all are 127.0.0.1. A single trailing dot
    is ignored. IPv6 may be bracketed (``[::1]``). Raises :class:`ReferenceRejected` for a host that
    looks numeric but is no valid address (``256.1.1.1``, ``08.1``), so that it can never reach DNS.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        text = text.replace("%25", "%")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError as exc:
            raise ReferenceRejected(f"invalid IPv6 address {host!r}") from exc
    if text.endswith("."):
        text = text[:-1]
    parts = text.split(".")
    if not text or not _NUMERIC_PART.match(parts[-1]):
        return None  # a host name (the last label of a host name is never numeric)
    try:
        if not all(_NUMERIC_PART.match(p) for p in parts) or len(parts) > 4:
            raise ValueError(host)
        numbers = [_parse_ipv4_number(p) for p in parts]
        *head, last = numbers
        if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
            raise ValueError(host)
        value = last
        for i, n in enumerate(head):
            value |= n << (8 * (3 - i))
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ReferenceRejected(f"invalid IPv4 address {host!r}") from exc


def _ascii_host(name: str) -> str:
    """The IDNA form of a Unicode host name (``bücher.de`` -> ``xn--bcher-kva.de``); else ``name``."""
    if name.isascii():
        return name
    try:
        return httpx.URL(scheme="http", host=name).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return name  # refused below as not a host name


def parse_allowlist(spec: str | Iterable[str]) -> tuple[AllowEntry, ...]:
    """Parse ``"127.0.0.1/32,10.0.0.0/8,images.internal"`` (or a list of entries).

    A bare address means its /32 or /128. Host names are lowercased, put in IDNA form (``xn--...``) and
    matched exactly against the URL's host, in the same form; such a host may resolve anywhere. Raises
    ValueError for an entry that is neither a network in canonical notation nor a valid host name.
    """
    items = spec.replace(",", " ").split() if isinstance(spec, str) else [s.strip() for s in spec]
    entries: list[AllowEntry] = []
    for item in items:
        if not item:
            continue
        try:
            entries.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = _ascii_host(item.lower().rstrip("."))
        try:
            looks_numeric = "/" in name or parse_host(name) is not None
        except ReferenceRejected:
            looks_numeric = True
        if looks_numeric:
            raise ValueError(f"invalid allowlist entry {item!r}: write networks as CIDR, e.g. 10.0.0.0/8")
        if not _HOST_NAME.match(name):
            raise ValueError(f"invalid allowlist entry {item!r}: not a network nor a host name")
        entries.append(name)
    return tuple(entries)


# --------------------------------------------------------------------------------------------------
# Bytes -> image


def sniff_format(data: bytes) -> str:
    """Name the format of ``data`` from its magic bytes (one of FORMATS, or another name)."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "avif" if brand in (b"avif", b"avis") else "heic"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ico"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    if text.startswith((b"<", b"{", b"[")):
        return "text"
    return "unknown"


def _unsupported(fmt: str) -> ReferenceRejected:
    if fmt == "unknown":
        return ReferenceRejected("unsupported image format (not jpeg, png, webp, bmp, tiff or gif)")
    return ReferenceRejected(f"unsupported image format '{fmt}'")


def _check_size(width: int, height: int, policy: ReferencePolicy) -> None:
    if width < policy.min_side or height < policy.min_side:
        raise ReferenceRejected(f"image is {width}x{height} px; width and height must be at least {policy.min_side} px")
    if width * height > policy.max_pixels:
        raise ReferenceRejected(f"image is {width}x{height} = {width * height} pixels, more than {policy.max_pixels}")
    ratio = width / height
    if not policy.min_ratio <= ratio <= policy.max_ratio:
        raise ReferenceRejected(
            f"aspect ratio {width}:{height} is outside [1/{round(1 / policy.min_ratio)}, {policy.max_ratio:g}]"
        )


# Not postprocess._to_rgb: decoded uploads may be 16-bit or float (I;16, I, F), scaled to 8 bits here, and
# a grey image's "transparency" key is dropped, not flattened; engine outputs need neither.
def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I").point(lambda v: v * (1 / 256))
    if image.mode in ("I", "F"):
        image = image.convert("L")
    return image.convert("RGB")


def decode_image(data: bytes, fmt: ImageFormat, policy: ReferencePolicy) -> Image.Image:
    """Open ``data`` (header only), check the limits, then decode to an RGB image.

    Pixels are allocated only after the header passed :func:`_check_size`; Pillow's own
    decompression-bomb check (on by default) is a second line for images past twice its limit.
    """
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]]) as opened:
            width, height = opened.size
            _check_size(width, height, policy)
            opened.seek(0)  # first frame of gif / animated webp / multi-page tiff
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
            rgb = _to_rgb(image)
            if rgb is opened:
                rgb = opened.copy()
    except ReferenceRejected:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses at open (header only) past 2 x Image.MAX_IMAGE_PIXELS, before _check_size.
        raise ReferenceRejected(
            f"image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, more than {policy.max_pixels} "
            "(decompression bomb)"
        ) from exc
    except Exception as exc:  # untrusted bytes: Pillow raises OSError, SyntaxError, ValueError, ...
        raise ReferenceRejected(f"could not decode the {fmt} image (truncated or corrupt)") from exc
    if (rgb.width, rgb.height) != (width, height):  # rotated by EXIF orientation
        _check_size(rgb.width, rgb.height, policy)
    return rgb


def _inspect(data: bytes, declared: ImageFormat | None, policy: ReferencePolicy) -> ImageFormat:
    """Check byte size and sniffed format (against the declared one) without touching Pillow."""
    if not data:
        raise ReferenceRejected("empty image data")
    if len(data) > policy.max_bytes:
        raise ReferenceRejected(f"image is {len(data)} bytes, more than the {policy.max_bytes}-byte limit")
    sniffed = sniff_format(data)
    if sniffed not in _PIL_NAMES:
        raise _unsupported(sniffed)
    fmt = _FORMAT_ALIASES[sniffed]
    if declared is not None and declared != fmt:
        raise ReferenceRejected(f"declared format '{declared}' does not match the content, which is '{fmt}'")
    return fmt


# --------------------------------------------------------------------------------------------------
# Parsing the items

_DATA_URI = re.compile(r"^data:image/([^;,]*);base64,", re.IGNORECASE)


_LOCALHOST: Final[tuple[IPAddress, ...]] = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


@dataclass(frozen=True)
class _Target:
    """A parsed URL: what to fetch, and (for literal addresses) the already-checked address."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]  # empty: resolve the host name (once) when fetching


def _parse_data_uri(item: str, policy: ReferencePolicy) -> tuple[bytes, ImageFormat]:
    match = _DATA_URI.match(item)
    if match is None:
        if item[:5].lower() == "data:":
            raise ReferenceRejected("a data URI must look like data:image/<format>;base64,<data>")
        raise ReferenceRejected("unsupported data URI")
    declared = match.group(1)
    if declared != declared.lower():
        raise ReferenceRejected(f"the format in a data URI must be lowercase, got '{declared}'")
    base = declared.split("+", 1)[0]  # svg+xml -> svg
    if base not in _FORMAT_ALIASES:
        raise _unsupported(base or "none")
    payload = item[match.end() :]
    if not payload:
        raise ReferenceRejected("empty image data")
    if len(payload) > (policy.max_bytes + 2) // 3 * 4 + 4:
        raise ReferenceRejected(f"image is more than the {policy.max_bytes}-byte limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReferenceRejected("invalid base64 data") from exc
    fmt = _inspect(data, _FORMAT_ALIASES[base], policy)
    return data, fmt


def _parse_url(text: str, policy: ReferencePolicy, *, base: httpx.URL | None = None) -> _Target:
    """Parse and guard a URL before any I/O; literal IP hosts are checked here."""
    try:
        url = base.join(text) if base is not None else httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ReferenceRejected(f"invalid URL ({exc})") from exc
    if url.scheme not in ("http", "https"):
        scheme = url.scheme or text.split(":", 1)[0]
        raise ReferenceRejected(
            f"unsupported scheme '{scheme}' (use an http(s) URL or a data:image/<format>;base64 URI)"
        )
    if url.userinfo:
        raise ReferenceRejected("URLs with user info (user:password@) are not allowed")
    # the IDNA (punycode) form, as DNS, SNI, the Host header and the allowlist see it: url.host is the
    # Unicode form ("bücher.de"), which the host-name check below would always refuse
    host = url.raw_host.decode("ascii")
    if not host:
        raise ReferenceRejected("URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    address = parse_host(host)
    addresses: tuple[IPAddress, ...] = ()
    if address is not None:
        check_address(address, policy.allowlist)
        addresses = (address,)
    else:
        host = host.rstrip(".")
        if not _HOST_NAME.match(host):
            raise ReferenceRejected(f"invalid host name {host!r}")
        if host == "localhost" or host.endswith(".localhost"):
            # RFC 6761: always loopback; answered here, never asked of DNS.
            addresses = _LOCALHOST
            if not _host_allowed(host, policy.allowlist):
                for ip in addresses:
                    try:
                        check_address(ip, policy.allowlist)
                    except UnsafeAddress as exc:
                        raise UnsafeAddress(f"host {host!r} resolves to {exc}") from None
    return _Target(url=url, host=host, port=port, addresses=addresses)


def _count_error(count: int, policy: ReferencePolicy) -> InvalidParameter:
    return InvalidParameter(
        f"image: {count} reference images given; this model takes at most {policy.max_count}",
        param="image",
    )


# --------------------------------------------------------------------------------------------------
# Fetching


async def _system_resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def _default_client() -> httpx.AsyncClient:
    # trust_env=False: an environment proxy would resolve the name itself and defeat the guard.
    # No keep-alive: a pooled connection is keyed by address, and one TLS session must not serve
    # another host name that happens to share the address.
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": "seedream-server (reference fetcher)"},
    )


class _Fetcher:
    def __init__(self, client: httpx.AsyncClient, policy: ReferencePolicy, resolve: Resolver) -> None:
        self.client = client
        self.policy = policy
        self.resolve = resolve
        self.timeout = httpx.Timeout(
            connect=policy.connect_timeout,
            read=policy.read_timeout,
            write=policy.read_timeout,
            pool=policy.connect_timeout,
        )

    async def addresses(self, target: _Target) -> list[IPAddress]:
        """Resolve once and check every address (a single bad one refuses the host)."""
        if target.addresses:
            return list(target.addresses)
        try:
            async with asyncio.timeout(self.policy.connect_timeout):
                found = list(await self.resolve(target.host, target.port))
        except TimeoutError as exc:
            raise ReferenceRejected(f"timed out resolving host {target.host!r}") from exc
        except OSError as exc:
            raise ReferenceRejected(f"could not resolve host {target.host!r}") from exc
        if not found:
            raise ReferenceRejected(f"could not resolve host {target.host!r}")
        if not _host_allowed(target.host, self.policy.allowlist):
            for ip in found:
                try:
                    check_address(ip, self.policy.allowlist)
                except UnsafeAddress as exc:
                    raise UnsafeAddress(f"host {target.host!r} resolves to {exc}") from None
        return found

    async def fetch(self, url: str) -> bytes:
        try:
            async with asyncio.timeout(self.policy.total_timeout):
                return await self._follow(url)
        except TimeoutError as exc:
            raise ReferenceRejected(f"fetching the image took longer than {self.policy.total_timeout:g} s") from exc

    async def _follow(self, url: str) -> bytes:
        target = _parse_url(url, self.policy)
        for hop in range(self.policy.max_redirects + 1):
            status, location, body = await self._get(target)
            if status not in _REDIRECTS:
                if status != 200:
                    raise ReferenceRejected(f"HTTP {status} fetching the image")
                return body
            if hop == self.policy.max_redirects:
                break
            if not location:
                raise ReferenceRejected(f"HTTP {status} redirect without a Location")
            try:
                target = _parse_url(location, self.policy, base=target.url)
            except ReferenceRejected as exc:
                raise type(exc)(f"redirect refused: {exc}") from None
        raise ReferenceRejected(f"too many redirects (more than {self.policy.max_redirects})")

    async def _get(self, target: _Target) -> tuple[int, str | None, bytes]:
        addresses = await self.addresses(target)
        last_error: Exception | None = None
        for ip in addresses:  # only checked addresses; the next one only if connecting failed
            try:
                return await self._get_from(target, ip)
            except httpx.ConnectError as exc:
                last_error = exc
        raise ReferenceRejected(f"could not connect to {target.host}:{target.port}") from last_error

    async def _get_from(self, target: _Target, ip: IPAddress) -> tuple[int, str | None, bytes]:
        pinned = target.url.copy_with(host=str(ip))
        headers = {"Host": target.url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
        request = self.client.build_request(
            "GET",
            pinned,
            headers=headers,
            timeout=self.timeout,
            extensions={"sni_hostname": target.host} if target.url.scheme == "https" else {},
        )
        try:
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                if response.status_code != 200:
                    return response.status_code, response.headers.get("location"), b""
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.policy.max_bytes:
                    raise ReferenceRejected(
                        f"image is {declared} bytes, more than the {self.policy.max_bytes}-byte limit"
                    )
                body = bytearray()
                async for chunk in response.aiter_raw(_CHUNK):
                    body += chunk
                    if len(body) > self.policy.max_bytes:
                        raise ReferenceRejected(f"image is more than the {self.policy.max_bytes}-byte limit")
                return 200, None, bytes(body)
            finally:
                await response.aclose()
        except httpx.ConnectError:
            raise
        except httpx.TimeoutException as exc:
            raise ReferenceRejected(f"timed out fetching the image ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            # e.g. RemoteProtocolError, also for a redirect whose Location is no valid URL
            raise ReferenceRejected(f"fetching the image failed ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------------------------------
# Entry point


class _Failed(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(index, reason)
        self.index = index
        self.reason = reason


async def load_references(
    value: str | list[str] | None,
    policy: ReferencePolicy,
    *,
    client_factory: ClientFactory | None = None,
    resolver: Resolver | None = None,
) -> list[Reference]:
    """Turn the request's ``image`` value into checked RGB references, in order.

    ``client_factory`` builds the httpx client used for URLs (default: no environment proxies, no
    keep-alive); a custom one must not use a proxy, or the address pinning is lost. ``resolver``
    replaces the one ``loop.getaddrinfo`` call per host (tests use it to map names to 127.0.0.1).
    Raises :class:`InvalidParameter` (``param="image"``) naming the first failing index.
    """
    if value is None:
        return []
    items: list[object] = [value] if isinstance(value, str) else list(value)
    if len(items) > policy.max_count:
        raise _count_error(len(items), policy)

    # 2. parse every item before any I/O
    parsed: list[tuple[bytes, ImageFormat] | str] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, str) or not item:
                raise ReferenceRejected("each image must be a non-empty string")
            if item[:5].lower() == "data:":
                parsed.append(_parse_data_uri(item, policy))
            else:
                _parse_url(item, policy)
                parsed.append(item)
        except ReferenceRejected as exc:
            raise InvalidParameter(f"image[{index}]: {exc}", param="image") from exc
    if not parsed:
        return []

    # 3 + 4. fetch URLs concurrently, decode in threads; the first failure cancels the rest
    needs_client = any(isinstance(p, str) for p in parsed)
    client = (client_factory or _default_client)() if needs_client else None
    fetcher = _Fetcher(client, policy, resolver or _system_resolve) if client is not None else None

    async def one(index: int, entry: tuple[bytes, ImageFormat] | str) -> Reference:
        try:
            if isinstance(entry, str):
                assert fetcher is not None
                data = await fetcher.fetch(entry)
                fmt = _inspect(data, None, policy)
                source: Literal["data", "url"] = "url"
            else:
                (data, fmt), source = entry, "data"
            image = await asyncio.to_thread(decode_image, data, fmt, policy)
        except ReferenceRejected as exc:
            raise _Failed(index, str(exc)) from exc
        return Reference(index, image, fmt, image.width, image.height, source)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i, entry)) for i, entry in enumerate(parsed)]
    except BaseExceptionGroup as group_error:
        failures = [e for e in group_error.exceptions if isinstance(e, _Failed)]
        if failures:
            first = min(failures, key=lambda e: e.index)
            raise InvalidParameter(f"image[{first.index}]: {first.reason}", param="image") from first.__cause__
        raise group_error.exceptions[0] from group_error
    finally:
        if client is not None:
            await client.aclose()
    return [task.result() for task in tasks]
