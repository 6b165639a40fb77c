"""Getting a reference's bytes: data URIs decoded, http(s) URLs fetched through the forgery guard.

Per URL: :func:`~.guard.parse_target` (no I/O), then :func:`~.guard.resolve_checked` (one resolution,
every address checked), a connection to exactly such an address (Host header and TLS SNI keep the name),
the body streamed under a byte cap, at most ``policy.max_redirects`` redirects, each re-parsed and
re-guarded the same way. Content-Type and Content-Length are not trusted. Every failure is a
:class:`~.errors.ReferenceRejected`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Final

import httpx

from .errors import ReferenceRejected
from .guard import IPAddress, Resolver, Target, parse_target, resolve_checked
from .header import FORMAT_ALIASES, unsupported
from .policy import ImageFormat, ReferencePolicy

__all__ = ["ClientFactory", "Fetcher", "default_client", "parse_data_uri", "system_resolve"]

ClientFactory = Callable[[], httpx.AsyncClient]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024
_DATA_URI = re.compile(r"^data:image/([^;,]*);base64,", re.IGNORECASE)
# RFC 2045 §6.8: line breaks (and other white space) in base64 are to be ignored; `base64` wraps at 76
_WHITESPACE: Final = str.maketrans("", "", " \t\r\n\f\v")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*={0,2}")


# --------------------------------------------------------------------------------------------------
# Data URIs


def _b64decode(payload: str) -> bytes:
    """Strict base64 after dropping white space, with a hint at what is wrong."""
    text = payload.translate(_WHITESPACE)
    if not _BASE64_TEXT.fullmatch(text):
        raise ReferenceRejected(
            "invalid base64 data: only A-Z, a-z, 0-9, '+', '/', '=' padding at the end, and white space are "
            "allowed (base64url '-' and '_' is not)"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReferenceRejected(f"invalid base64 data: {len(text)} characters, not a multiple of 4 (padding)") from exc


def parse_data_uri(item: str, policy: ReferencePolicy) -> tuple[bytes, ImageFormat]:
    """``data:image/<format>;base64,<data>`` -> (bytes, declared format); RFC 2045 white space is allowed."""
    match = _DATA_URI.match(item)
    if match is None:
        if item[:5].lower() == "data:":
            raise ReferenceRejected("a data URI must look like data:image/<format>;base64,<data>")
        raise ReferenceRejected("unsupported data URI")
    declared = match.group(1)
    if declared != declared.lower():
        raise ReferenceRejected(f"the format in a data URI must be lowercase, got '{declared}'")
    base = declared.split("+", 1)[0]  # svg+xml -> svg
    if base not in FORMAT_ALIASES:
        raise unsupported(base or "none")
    payload = item[match.end() :]
    if not payload.strip():
        raise ReferenceRejected("empty image data")
    # 76-column lines with CRLF add 2/76: allow that much white space before decoding anything
    if len(payload) > ((policy.max_bytes + 2) // 3 * 4 + 4) * 78 // 76 + 2:
        raise ReferenceRejected(f"image is more than the {policy.max_bytes}-byte limit")
    return _b64decode(payload), FORMAT_ALIASES[base]


# --------------------------------------------------------------------------------------------------
# URLs


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """One ``getaddrinfo`` call: every address of ``host``, in order, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def default_client() -> httpx.AsyncClient:
    """The client for reference URLs: no environment proxy, no keep-alive, no automatic redirects."""
    # trust_env=False: an environment proxy would resolve the name itself and defeat the guard.
    # No keep-alive: a pooled connection is keyed by address, and one TLS session must not serve
    # another host name that happens to share the address.
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": "seedream-server (reference fetcher)"},
    )


class Fetcher:
    """Fetches reference URLs with one client, under the policy's byte cap, timeouts and redirect limit."""

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

    async def fetch(self, url: str) -> bytes:
        """The body of ``url`` (after redirects); raises :class:`ReferenceRejected`."""
        try:
            async with asyncio.timeout(self.policy.total_timeout):
                return await self._follow(url)
        except TimeoutError as exc:
            raise ReferenceRejected(f"fetching the image took longer than {self.policy.total_timeout:g} s") from exc

    async def _follow(self, url: str) -> bytes:
        target = parse_target(url, self.policy.allowlist)
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
                target = parse_target(location, self.policy.allowlist, base=target.url)
            except ReferenceRejected as exc:
                raise type(exc)(f"redirect refused: {exc}") from None
        raise ReferenceRejected(f"too many redirects (more than {self.policy.max_redirects})")

    async def _get(self, target: Target) -> tuple[int, str | None, bytes]:
        addresses = await resolve_checked(target, self.policy.allowlist, self.resolve, self.policy.connect_timeout)
        last_error: Exception | None = None
        for ip in addresses:  # only checked addresses; the next one only if connecting failed
            try:
                return await self._get_from(target, ip)
            except httpx.ConnectError as exc:
                last_error = exc
        raise ReferenceRejected(f"could not connect to {target.host}:{target.port}") from last_error

    async def _get_from(self, target: Target, ip: IPAddress) -> tuple[int, str | None, bytes]:
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
                return 200, None, await self._read_body(response)
            finally:
                await response.aclose()
        except httpx.ConnectError:
            raise
        except httpx.TimeoutException as exc:
            raise ReferenceRejected(f"timed out fetching the image ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            # e.g. RemoteProtocolError, also for a redirect whose Location is no valid URL
            raise ReferenceRejected(f"fetching the image failed ({type(exc).__name__}: {exc})") from exc

    async def _read_body(self, response: httpx.Response) -> bytes:
        limit = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ReferenceRejected(f"image is {declared} bytes, more than the {limit}-byte limit")
        body = bytearray()
        async for chunk in response.aiter_raw(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise ReferenceRejected(f"image is more than the {limit}-byte limit")
        return bytes(body)
