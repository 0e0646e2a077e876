"""Prometheus metrics under TF Serving's names (serving-protocol.md §3.3).

TF Serving exports its TensorFlow monitoring metrics with ``/`` replaced by ``:``; the ones a
dashboard for this server needs are kept with the same names, labels and units (microseconds):
``:tensorflow:serving:request_count`` (exposed with prometheus_client's mandatory ``_total``
suffix), ``:tensorflow:serving:request_latency``, ``:tensorflow:serving:runtime_latency`` and the
``:tensorflow:serving:batching_session:*`` histograms.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ServingMetrics"]

# TF Serving's request latency buckets: exponential from 10 us by a factor 1.8 (33 buckets).
_LATENCY_US = tuple(float(f"{10 * 1.8 ** i:.6g}") for i in range(33))
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """The server's metrics, in a registry of their own (no process-wide collectors)."""

    def __init__(self):
        prometheus_client.disable_created_metrics()  # TF Serving exports no *_created series
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_count = Counter(":tensorflow:serving:request_count",
                                     "The total number of requests.", ["model_name", "status"],
                                     registry=r)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_LATENCY_US, registry=r)
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving runtime.",
            ["model_name", "API", "runtime"], buckets=_LATENCY_US, registry=r)
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time (in microseconds) spent in the batch queue.",
            ["thread_pool_name"], buckets=_LATENCY_US, registry=r)
        self.batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Distribution of the examples in each processed batch (before padding).",
            ["thread_pool_name"], buckets=_BATCH_SIZES, registry=r)
        self.padding_size = Histogram(
            ":tensorflow:serving:batching_session:padding_size",
            "Distribution of the padding examples added to reach an allowed batch size.",
            ["thread_pool_name"], buckets=(0,) + _BATCH_SIZES, registry=r)

    def request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        self.request_count.labels(model, status).inc()
        if status == "OK":  # TF Serving only records the latency of successful calls
            self.request_latency.labels(model, api, entrypoint).observe(seconds * 1e6)

    def runtime(self, model: str, api: str, seconds: float) -> None:
        self.runtime_latency.labels(model, api, "TF").observe(seconds * 1e6)

    def batch(self, pool: str, size: int, padding: int, waits: list[float]) -> None:
        self.batch_size.labels(pool).observe(size)
        self.padding_size.labels(pool).observe(padding)
        hist = self.queuing_latency.labels(pool)
        for wait in waits:
            hist.observe(wait * 1e6)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    content_type = prometheus_client.CONTENT_TYPE_LATEST
