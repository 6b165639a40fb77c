"""The request forgery guard (references/guard.py): pure address, host and allowlist checks, and the guard
over the network (a real server on 127.0.0.1; loopback spellings, redirects, resolution, allowlist ports).

Traffic goes only to the test server on 127.0.0.1. Addresses outside loopback are tested on the pure
:func:`check_address`, never by connecting.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

import httpx
import pytest

from references_support import LOCAL, PNG, FakeDNS, no_client, refused
from refserver import ImageServer
from seedream_server.references import (
    IPAddress,
    PortEntry,
    ReferencePolicy,
    ReferenceRejected,
    UnsafeAddress,
    check_address,
    load_references,
    parse_allowlist,
    parse_host,
    parse_target,
)


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        srv.files["png"] = (PNG, "image/png")
        yield srv


@pytest.fixture
def srv(server: ImageServer) -> ImageServer:
    server.reset_counters()
    return server


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
    target = parse_target(url, ())  # pure: no resolution, no connection
    assert target.host == "xn--bcher-kva.de"
    assert target.addresses == ()
    assert target.url.raw_host.rstrip(b".") == b"xn--bcher-kva.de"


def test_parse_allowlist_puts_host_names_in_idna_form() -> None:
    assert parse_allowlist("Bücher.de., xn--bcher-kva.de") == ("xn--bcher-kva.de", "xn--bcher-kva.de")


@pytest.mark.parametrize("spec", ["10.0.0.0/33", "0177.0.0.1", "2130706433", "300.1.1.1", "a..b", "host/8", "*.x"])
def test_parse_allowlist_refuses_bad_entries(spec: str) -> None:
    with pytest.raises(ValueError, match="invalid allowlist entry"):
        parse_allowlist(spec)


# ------------------------------------------------------------------------------------------------
# Allowlist entries with a port


def test_parse_allowlist_reads_ports() -> None:
    assert parse_allowlist("127.0.0.1:9000, [::1]:9000, Host.Example:8443, 10.0.0.0/8:443, [fd00::/8]:80") == (
        PortEntry(ipaddress.ip_network("127.0.0.1/32"), 9000),
        PortEntry(ipaddress.ip_network("::1/128"), 9000),
        PortEntry("host.example", 8443),
        PortEntry(ipaddress.ip_network("10.0.0.0/8"), 443),
        PortEntry(ipaddress.ip_network("fd00::/8"), 80),
    )
    assert parse_allowlist("::1, [::1]") == (ipaddress.ip_network("::1/128"),) * 2  # no brackets: no port


@pytest.mark.parametrize("spec", ["127.0.0.1:0", "127.0.0.1:65536", "host:99999", "[::1]:x", "0177.0.0.1:80"])
def test_parse_allowlist_refuses_bad_ports(spec: str) -> None:
    with pytest.raises(ValueError, match="invalid allowlist entry"):
        parse_allowlist(spec)


def test_check_address_honours_the_port_of_an_entry() -> None:
    allow = parse_allowlist("127.0.0.1:9000, [::1]:9000, 10.0.0.0/8:443, 192.168.0.0/16")
    check_address(ipaddress.ip_address("127.0.0.1"), allow, 9000)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), allow, 9000)
    check_address(ipaddress.ip_address("::1"), allow, 9000)
    check_address(ipaddress.ip_address("10.9.8.7"), allow, 443)
    check_address(ipaddress.ip_address("192.168.3.4"), allow, 22)  # no port in the entry: every port
    for address, port in [("127.0.0.1", 9001), ("::1", 80), ("10.9.8.7", 80), ("127.0.0.1", None)]:
        with pytest.raises(UnsafeAddress, match="not allowed"):
            check_address(ipaddress.ip_address(address), allow, port)


def test_targets_honour_the_port_of_an_entry() -> None:
    allow = parse_allowlist("127.0.0.1:9000, images.internal:8443")
    assert parse_target("http://127.0.0.1:9000/a.png", allow).addresses == (ipaddress.ip_address("127.0.0.1"),)
    with pytest.raises(UnsafeAddress, match=r"address 127\.0\.0\.1 is not allowed: loopback"):
        parse_target("http://127.0.0.1:9001/a.png", allow)
    with pytest.raises(UnsafeAddress, match="loopback"):
        parse_target("http://127.0.0.1/a.png", allow)  # port 80
    assert parse_target("https://images.internal:8443/a.png", allow).port == 8443


async def test_allowlisted_port_is_fetched_and_another_port_refused(srv: ImageServer) -> None:
    allowed = ReferencePolicy(allowlist=parse_allowlist(f"127.0.0.1:{srv.port}"))
    [ref] = await load_references(srv.url("/img/png"), allowed)
    assert ref.format == "png"
    assert srv.connections == 1
    srv.reset_counters()
    other = ReferencePolicy(allowlist=parse_allowlist(f"127.0.0.1:{srv.port + 1}"))
    message = await refused(srv.url("/img/png"), other)
    assert message == "image[0]: address 127.0.0.1 is not allowed: loopback"
    assert srv.connections == 0


async def test_allowlisted_host_name_with_a_port(srv: ImageServer) -> None:
    dns = FakeDNS({"images.internal": ["127.0.0.1"]})
    policy = ReferencePolicy(allowlist=parse_allowlist(f"images.internal:{srv.port}"))
    [ref] = await load_references(srv.url("/img/png", host="images.internal"), policy, resolver=dns)
    assert ref.format == "png"
    policy = ReferencePolicy(allowlist=parse_allowlist(f"images.internal:{srv.port + 1}"))
    message = await refused(srv.url("/img/png", host="images.internal"), policy, resolver=dns)
    assert "'images.internal' resolves to address 127.0.0.1 is not allowed: loopback" in message


async def test_redirect_to_another_port_is_refused(srv: ImageServer) -> None:
    policy = ReferencePolicy(allowlist=parse_allowlist(f"127.0.0.1:{srv.port}"))
    location = httpx.QueryParams({"to": f"http://127.0.0.1:{srv.port + 1}/img/png"})
    message = await refused(srv.url(f"/goto?{location}"), policy)
    assert message == "image[0]: redirect refused: address 127.0.0.1 is not allowed: loopback"
    assert srv.connections == 1
