"""The worker's and the scheduler's ops endpoints as their Kubernetes probes see them, against their
own Temporal server: ready once polling, not ready (but live) while Temporal is down, ready again
when it is back; SIGTERM still exits 0. (Draining and a stalled loop: kron/common/ops_test.py.)"""

from __future__ import annotations

import time

import httpx
import pytest

from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer, free_port

DEPLOYABLES = {
    "worker": ("kron.worker.main", {"KRON_DEMO_MODE": "true"}),
    "scheduler": ("kron.scheduler.main", {"KRON_DEV_MODE": "true"}),
}


def _until_status(http: httpx.Client, path: str, status: int, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = http.get(path)
            if response.status_code == status:
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{path} never answered {status}"
        time.sleep(0.2)


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_probes_follow_temporal_and_the_drain(name: str) -> None:
    module, env = DEPLOYABLES[name]
    port = free_port()
    with TemporalDevServer() as temporal:
        env = {**env, "KRON_TEMPORAL_ADDRESS": temporal.address, "KRON_METRICS_PORT": str(port),
               "KRON_LOG_LEVEL": "WARNING", "KRON_DRAIN_SECONDS": "1"}
        with KronProcess(module, env, ready_marker=f"kron-{name} ready").wait_ready() as process, \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0, trust_env=False) as http:
            assert http.get("/readyz").json() == {"status": "ready"}
            assert http.get("/livez").json() == {"status": "ok"}
            assert "python_info" in http.get("/metrics").text

            temporal.stop()
            down = _until_status(http, "/readyz", 503)
            assert down.json()["error"] == "not_ready" and "Temporal unreachable" in down.json()["detail"]
            assert http.get("/livez").status_code == 200

            temporal.start()
            _until_status(http, "/readyz", 200)
            assert process.terminate(timeout=30) == 0
