"""Upstream engines: relays to Volcengine Ark (:class:`ArkEngine`) and to OpenAI-compatible images servers
(:class:`OpenAIEngine`), sharing one transport (key pool, replicas, retries, error mapping, re-hosting).

::

    ark.py / openai.py      the engines: requests in the upstream's shape, results out
    transport.py            Upstream.call: replica + key, retries, readiness probe
    keys.py                 KeyPool (rotation, cooldown), scrub (no secret leaves)
    replicas.py             ReplicaSet (least in flight, passive health)
    retry.py                RetryPolicy (backoff with jitter, Retry-After), Retryable
    errors.py               upstream answers -> our error tree
    rehost.py               upstream images -> results (fetched under a byte cap, or passed through)
    options.py              the [[models]] options of both engines (the documented table)
"""

from .ark import ArkEngine
from .openai import OpenAIEngine
from .options import UpstreamOptions, UpstreamSetupError

__all__ = ["ArkEngine", "OpenAIEngine", "UpstreamOptions", "UpstreamSetupError"]
