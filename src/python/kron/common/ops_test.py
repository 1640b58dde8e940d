from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from kron.common.ops import Health, OpsServer, serve_ops


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[Health, Clock, httpx.Client]]:
    clock = Clock()
    health = Health(stall_seconds=30, clock=clock)
    registry = CollectorRegistry()
    Counter("kron_example", "An example.", registry=registry).inc()
    server: OpsServer = serve_ops(0, "127.0.0.1", health, registry)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as http:
            yield health, clock, http
    finally:
        server.close()


def test_metrics_are_served_with_the_given_registry(served: tuple[Health, Clock, httpx.Client]) -> None:
    _, _, http = served
    response = http.get("/metrics")
    assert response.status_code == 200 and "kron_example_total 1.0" in response.text
    missing = http.get("/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


def test_readiness_follows_start_temporal_and_drain(served: tuple[Health, Clock, httpx.Client]) -> None:
    health, _, http = served
    assert (http.get("/livez").status_code, http.get("/livez").json()) == (200, {"status": "ok"})
    starting = http.get("/readyz")
    assert (starting.status_code, starting.json()) == (503, {"error": "not_ready", "detail": "starting"})

    health.started()
    assert (http.get("/readyz").status_code, http.get("/readyz").json()) == (200, {"status": "ready"})

    health.temporal("RPCError")
    down = http.get("/readyz")
    assert down.status_code == 503 and down.json()["detail"] == "Temporal unreachable: RPCError"
    assert http.get("/livez").status_code == 200  # an outage is not a reason to restart

    health.temporal(None)
    assert http.get("/readyz").status_code == 200
    health.draining()
    assert http.get("/readyz").json() == {"error": "not_ready", "detail": "draining"}


def test_a_stalled_event_loop_fails_liveness(served: tuple[Health, Clock, httpx.Client]) -> None:
    health, clock, http = served
    health.started()
    clock.now += 29
    assert http.get("/livez").status_code == 200
    clock.now += 2
    stalled = http.get("/livez")
    assert stalled.status_code == 503
    assert stalled.json() == {"error": "not_live", "detail": "event loop unresponsive for 31 s"}
    assert http.get("/readyz").status_code == 503
    health.beat()
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
