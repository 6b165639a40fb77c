"""ReferencePolicy (references/policy.py): the limits a server runs with come from its settings."""

from __future__ import annotations

import ipaddress

from seedream_server.config import Settings
from seedream_server.references import MAX_JPEG_SCANS, PortEntry, ReferencePolicy


def test_policy_from_settings() -> None:
    settings = Settings(reference_allowlist="10.0.0.0/8", reference_max_bytes=1234, reference_timeout_s=2.5)
    policy = ReferencePolicy.from_settings(settings, max_count=3)
    assert (policy.max_bytes, policy.read_timeout, policy.max_count) == (1234, 2.5, 3)
    assert policy.allowlist == (ipaddress.ip_network("10.0.0.0/8"),)


def test_policy_defaults_and_ports_from_settings() -> None:
    policy = ReferencePolicy.from_settings(Settings(reference_allowlist="127.0.0.1:9000,images.internal"))
    assert policy.allowlist == (PortEntry(ipaddress.ip_network("127.0.0.1/32"), 9000), "images.internal")
    assert (policy.max_count, policy.max_pixels, policy.max_jpeg_scans) == (14, 36_000_000, MAX_JPEG_SCANS)
