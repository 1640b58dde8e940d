"""Prometheus helpers. Metric names use the `kron_` prefix, base units and no unbounded labels."""

from __future__ import annotations

# Step and request latencies span a few ms (fake servers, cache hits) to minutes (long model calls).
LATENCY_BUCKETS_SECONDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)

