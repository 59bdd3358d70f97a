"""Prometheus metrics of the server, in a registry of its own (one per app, so tests can run
several apps in one process). Counters and histograms are fed by the engine's listeners and
the request gate; gauges read the engine when scraped."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from aigc.errors import AigcError

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self) -> None:
        self.engine = None
        self.registry = r = CollectorRegistry()
        self.requests = Counter("aigc_http_requests", "HTTP requests by route and status", ["path", "status"],
                                registry=r)
        self.generations = Counter("aigc_generations", "Finished generation requests", ["kind", "status"],
                                   registry=r)
        self.tokens = Counter("aigc_tokens_generated", "Tokens generated", registry=r)
        self.ttft = Histogram("aigc_time_to_first_token_seconds", "Time from submission to the first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("aigc_request_latency_seconds", "Time from submission to the end of a request",
                                 ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("aigc_queue_depth", "Requests waiting for a batch row or the image worker", registry=r)
        self.batch = Gauge("aigc_active_batch_rows", "Sequences being decoded right now", registry=r)
        self.loaded = Gauge("aigc_loaded_runs", "Runs held in memory", registry=r)
        self.loaded_bytes = Gauge("aigc_loaded_bytes", "Bytes of weights and caches of loaded runs", registry=r)

    def watch(self, engine) -> None:
        self.engine = engine
        engine.listeners.append(self._on_result)

    def _on_result(self, kind: str, result) -> None:
        self.generations.labels(kind=kind, status=result.status).inc()
        self.latency.labels(kind=kind).observe(result.total_s)
        if kind == "text":
            self.tokens.inc(result.completion_tokens)
            if result.ttft_s is not None:
                self.ttft.observe(result.ttft_s)

    def render(self) -> tuple[bytes, str]:
        """The exposition text; the gauges are read from one ``engine.stats()`` (a round trip when
        the engine runs in its own process; they read NaN if that process is gone)."""
        try:
            stats = self.engine.stats() if self.engine is not None else None
        except AigcError:
            stats = None
        if stats is None:
            for gauge in (self.queue, self.batch, self.loaded, self.loaded_bytes):
                gauge.set(float("nan"))
        else:
            self.queue.set(stats["queue_depth"])
            self.batch.set(stats["active_rows"])
            self.loaded.set(len(stats["loaded"]))
            self.loaded_bytes.set(stats["loaded_bytes"])
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
