"""The server-side request forgery guard: which addresses, hosts and ports a reference URL may reach.

Pure parts, testable without traffic: :func:`parse_host` reads every IPv4 spelling ``inet_aton`` accepts
(decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short ``127.1``) and IPv6 with or without
brackets; :func:`check_address` refuses loopback, private, link-local and cloud metadata, multicast,
reserved, unspecified and shared/CGNAT addresses, and the IPv4 embedded in v4-mapped, NAT64 and 6to4 IPv6
forms; :func:`parse_allowlist` reads the operator's exceptions (networks, host names, each optionally with
one port); :func:`parse_target` parses and guards a URL before any I/O.

One routine, :func:`resolve_checked`, turns a target into the addresses a connection may use (literal
address, ``localhost`` answered locally, or ONE resolution) and checks every one of them; the fetcher
calls it for the first request and for every redirect, and connects to exactly those addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from .errors import ReferenceRejected, UnsafeAddress, not_a_reference, short

__all__ = [
    "AllowEntry",
    "IPAddress",
    "PortEntry",
    "Resolver",
    "Target",
    "check_address",
    "parse_allowlist",
    "parse_host",
    "parse_target",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PortEntry:
    """An allowlist entry for one port only: ``127.0.0.1:9000``, ``[::1]:9000``, ``images.internal:8443``."""

    target: IPNetwork | str
    port: int


AllowEntry = IPNetwork | str | PortEntry
"""An allowlist entry: a network, a lowercase host name allowed whatever it resolves to, or either of them
limited to one port (:class:`PortEntry`); entries without a port allow every port."""

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""``resolve(host, port) -> addresses``; the default calls ``loop.getaddrinfo`` once."""

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

_LOCALHOST: Final[tuple[IPAddress, ...]] = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
HOST_NAME: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)
_PORT_SUFFIX = re.compile(r"^(?P<target>\[[^\]]*\](?:/\d+)?|[^:\[\]]+):(?P<port>\d{1,5})$")


# --------------------------------------------------------------------------------------------------
# Addresses


def _entries(allowlist: Iterable[AllowEntry], port: int | None) -> Iterable[IPNetwork | str]:
    """The entries that apply on ``port``: those without a port, and those naming exactly it."""
    for entry in allowlist:
        if not isinstance(entry, PortEntry):
            yield entry
        elif port is not None and entry.port == port:
            yield entry.target


def _allowed(ip: IPAddress, allowlist: Iterable[AllowEntry], port: int | None) -> bool:
    return any(not isinstance(entry, str) and ip in entry for entry in _entries(allowlist, port))


def _host_allowed(host: str, allowlist: Iterable[AllowEntry], port: int | None) -> bool:
    return any(isinstance(entry, str) and entry == host for entry in _entries(allowlist, port))


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


def check_address(ip: IPAddress, allowlist: Iterable[AllowEntry] = (), port: int | None = None) -> None:
    """Refuse an address a reference URL must not reach, unless an allowlist network contains it.

    Raises :class:`UnsafeAddress` for loopback, private, shared (100.64/10), link-local (including
    the cloud metadata addresses 169.254.169.254 and fd00:ec2::254), multicast, reserved and
    unspecified addresses, for IPv6 forms that embed such an IPv4 address (v4-mapped ``::ffff:a.b.c.d``,
    NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``; with a public IPv4 inside they pass), for the deprecated
    v4-compatible ``::a.b.c.d`` and for other IPv6 outside global unicast ``2000::/3``. An allowlisted
    IPv4 address is allowed in its v4-mapped form too. An entry with a port allows only connections to
    that ``port`` (with ``port=None`` it allows none). Host-name entries of the allowlist are ignored
    here (they are matched against the URL's host before resolution). Pure: no I/O.
    """
    entries = tuple(allowlist)
    if _allowed(ip, entries, port):
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
            elif form == "v4-mapped" and _allowed(v4, entries, port):
                return  # the socket goes to exactly that IPv4 address
            else:
                inner = _v4_reason(v4)
                reason = f"{form} IPv6 form of {v4}, {inner}" if inner else None
    if reason is not None:
        raise UnsafeAddress(f"address {ip} is not allowed: {reason}")


# --------------------------------------------------------------------------------------------------
# Hosts and the allowlist


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
            raise ReferenceRejected(f"invalid IPv6 address {short(host, 64)}") from exc
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
        raise ReferenceRejected(f"invalid IPv4 address {short(host, 64)}") from exc


def _ascii_host(name: str) -> str:
    """The IDNA form of a Unicode host name (``bücher.de`` -> ``xn--bcher-kva.de``); else ``name``."""
    if name.isascii():
        return name
    try:
        return httpx.URL(scheme="http", host=name).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return name  # refused below as not a host name


def _split_port(item: str) -> tuple[str, int | None]:
    """``"127.0.0.1:9000"`` -> ``("127.0.0.1", 9000)``; IPv6 needs brackets: ``"[::1]:9000"``."""
    match = _PORT_SUFFIX.match(item)
    if match is None:
        return item, None
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"invalid allowlist entry {item!r}: port {port} is outside 1-65535")
    return match["target"], port


def _parse_entry(item: str) -> IPNetwork | str:
    try:
        return ipaddress.ip_network(item.replace("[", "").replace("]", ""), strict=False)
    except ValueError:
        pass
    name = _ascii_host(item.lower().rstrip("."))
    try:
        looks_numeric = "/" in name or parse_host(name) is not None
    except ReferenceRejected:
        looks_numeric = True
    if looks_numeric:
        raise ValueError(f"invalid allowlist entry {item!r}: write networks as CIDR, e.g. 10.0.0.0/8")
    if not HOST_NAME.match(name):
        raise ValueError(f"invalid allowlist entry {item!r}: not a network nor a host name")
    return name


def parse_allowlist(spec: str | Iterable[str]) -> tuple[AllowEntry, ...]:
    """Parse ``"127.0.0.1/32,10.0.0.0/8:443,images.internal,[::1]:9000"`` (or a list of entries).

    A bare address means its /32 or /128. Host names are lowercased, put in IDNA form (``xn--...``) and
    matched exactly against the URL's host, in the same form; such a host may resolve anywhere. An entry
    may end in ``:<port>`` (IPv6 in brackets): then it allows that port only (:class:`PortEntry`). Raises
    ValueError for an entry that is neither a network in canonical notation nor a valid host name.
    """
    items = spec.replace(",", " ").split() if isinstance(spec, str) else [s.strip() for s in spec]
    entries: list[AllowEntry] = []
    for item in items:
        if not item:
            continue
        target, port = _split_port(item)
        entry = _parse_entry(target)
        entries.append(entry if port is None else PortEntry(entry, port))
    return tuple(entries)


# --------------------------------------------------------------------------------------------------
# Targets: a URL parsed and guarded, then its addresses resolved once and checked


@dataclass(frozen=True)
class Target:
    """A parsed URL: what to fetch, and (for literal addresses and localhost) the already-checked addresses."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]  # empty: resolve the host name (once) when fetching


def _check_all(target: Target, addresses: Sequence[IPAddress], allowlist: Sequence[AllowEntry]) -> None:
    """Every address must pass (a single bad one refuses the host), unless the host name is allowlisted."""
    literal = parse_host(target.host) is not None
    if not literal and _host_allowed(target.host, allowlist, target.port):
        return
    for ip in addresses:
        try:
            check_address(ip, allowlist, target.port)
        except UnsafeAddress as exc:
            if literal:
                raise
            raise UnsafeAddress(f"host {target.host!r} resolves to {exc}") from None


def parse_target(text: str, allowlist: Sequence[AllowEntry], *, base: httpx.URL | None = None) -> Target:
    """Parse and guard a URL before any I/O; literal IP hosts and ``localhost`` are checked here."""
    try:
        url = base.join(text) if base is not None else httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        reason = str(exc) if len(str(exc)) <= 80 else str(exc)[:80] + "…"  # httpx quotes the input
        raise ReferenceRejected(f"invalid URL ({reason})") from exc
    if url.scheme not in ("http", "https"):
        raise not_a_reference(text, url.scheme)
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
        addresses = (address,)
    else:
        host = host.rstrip(".")
        if not HOST_NAME.match(host):
            raise ReferenceRejected(f"invalid host name {short(host, 64)}")
        if host == "localhost" or host.endswith(".localhost"):
            addresses = _LOCALHOST  # RFC 6761: always loopback; answered here, never asked of DNS
    target = Target(url=url, host=host, port=port, addresses=addresses)
    _check_all(target, addresses, allowlist)
    return target


async def resolve_checked(
    target: Target, allowlist: Sequence[AllowEntry], resolve: Resolver, resolve_timeout_s: float
) -> tuple[IPAddress, ...]:
    """The addresses a connection to ``target`` may use: known ones, or ONE resolution; all checked."""
    if target.addresses:
        found: Sequence[IPAddress] = target.addresses
    else:
        try:
            async with asyncio.timeout(resolve_timeout_s):
                found = list(await resolve(target.host, target.port))
        except TimeoutError as exc:
            raise ReferenceRejected(f"timed out resolving host {target.host!r}") from exc
        except OSError as exc:
            raise ReferenceRejected(f"could not resolve host {target.host!r}") from exc
        if not found:
            raise ReferenceRejected(f"could not resolve host {target.host!r}")
    _check_all(target, found, allowlist)
    return tuple(found)
