"""Prometheus metrics, in a registry owned by one app instance (never the global default registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Requests, images, queue depth, in-flight requests and per-stage latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "seedream_requests",
            "Generation requests by model and outcome.",
            ["model", "status"],
            registry=self.registry,
        )
        self.images = Counter(
            "seedream_images",
            "Images by model and outcome (succeeded, failed).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "seedream_stage_seconds",
            "Latency of each pipeline stage: fetch (references), plan, generate, encode, store.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "seedream_request_seconds",
            "End-to-end generation request latency.",
            ["model"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "seedream_queue_depth", "Jobs waiting for an engine slot.", ["model"], registry=self.registry
        )
        self.responses = Counter(
            "seedream_http_responses",
            "HTTP responses by status code, refusals (401, 403, 429, 503) included.",
            ["status"],
            registry=self.registry,
        )
        self.denoise_steps = Counter(
            "seedream_denoise_steps",
            "Denoising steps finished, by model (engines that have steps).",
            ["model"],
            registry=self.registry,
        )
        self.inflight = Gauge("seedream_inflight_requests", "Generation requests in progress.", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
