"""A local Ray for the tests that need one: small (2 CPUs, no dashboard), on loopback, shut down after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray


@contextlib.contextmanager
def local_ray() -> Iterator[str]:
    """Start a local Ray of 2 CPUs and yield its address; Serve and Ray are shut down after."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2, namespace="seedream-tests")
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")  # Ray's own traffic on loopback
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        from ray import serve

        try:
            with contextlib.suppress(Exception):
                serve.shutdown()
        finally:
            ray.shutdown()
