"""The server's Prometheus metrics (GET /metrics), in a registry of its own so that two servers in one
process (tests) do not share counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds; the small end matters: a small net answers in well under a millisecond
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
                   0.5, 1.0, 2.5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ddnn_requests", "Predict requests answered, by HTTP status code", ["code"], registry=r)
        self.rejected = Counter("ddnn_rejected_requests", "Predict requests refused with a 4xx, by reason",
                                ["reason"], registry=r)
        self.latency = Histogram("ddnn_request_latency_seconds", "Time from a predict request's arrival at the "
                                 "handler to its answer (accepted requests)", buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("ddnn_images", "Images answered, by the depth that ran them (the depth mix)",
                              ["depth"], registry=r)
        self.batches = Histogram("ddnn_batch_images", "Images per model call",
                                 buckets=tuple(range(1, max_batch + 1)), registry=r)
        self.inference = Histogram("ddnn_inference_seconds", "Model call time per batch, by depth", ["depth"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Gauge("ddnn_queued_images", "Images waiting for the model", registry=r)

    def batch(self, depth, images: int, ms: float) -> None:
        self.images.labels(depth.name).inc(images)
        self.batches.observe(images)
        self.inference.labels(depth.name).observe(ms / 1e3)

    def text(self) -> bytes:
        return generate_latest(self.registry)
