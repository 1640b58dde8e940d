"""The ops endpoint of a process with no web app of its own (the worker, the scheduler): `/metrics`,
`/livez` and `/readyz` on one port, served from a background thread.

- `/livez` answers 200 while the process's asyncio event loop still turns: `Health.watch` beats every
  second from the loop, and a loop stuck for `stall_seconds` (a blocking call, a deadlock) fails
  liveness, so Kubernetes restarts the pod. A Temporal outage never fails liveness: the SDK
  reconnects on its own, and a restart would not help.
- `/readyz` answers 200 once the process polls its task queue, while Temporal answers its health
  check, and until it starts draining (SIGTERM).

Failures are 503 with `{"error": "not_live" | "not_ready", "detail": ...}`, as on the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from temporalio.client import Client

from kron.common.logging import get_logger

log = get_logger(__name__)

BEAT_SECONDS = 1.0


class Health:
    """What `/livez` and `/readyz` report. Thread-safe: the loop writes, the server thread reads."""

    def __init__(self, *, stall_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._beat = clock()
        self._started = False
        self._draining = False
        self._temporal_error: str | None = None

    def beat(self) -> None:
        with self._lock:
            self._beat = self._clock()

    def started(self) -> None:
        with self._lock:
            self._started = True

    def draining(self) -> None:
        with self._lock:
            self._draining = True

    def temporal(self, error: str | None) -> None:
        """The last Temporal health check: None when it answered SERVING."""
        with self._lock:
            self._temporal_error = error

    def liveness(self) -> str | None:
        """None when live, else why not."""
        with self._lock:
            stalled = self._clock() - self._beat
        if stalled > self.stall_seconds:
            return f"event loop unresponsive for {stalled:.0f} s"
        return None

    def readiness(self) -> str | None:
        """None when ready, else why not."""
        with self._lock:
            if self._draining:
                return "draining"
            if not self._started:
                return "starting"
            if self._temporal_error is not None:
                return f"Temporal unreachable: {self._temporal_error}"
        return self.liveness()

    async def watch(self, client: Client, check_every_seconds: float = 5.0) -> None:
        """Beat from the event loop and check Temporal's health, until cancelled."""
        next_check, last_error = 0.0, None
        while True:
            self.beat()
            now = time.monotonic()
            if now >= next_check:
                next_check = now + check_every_seconds
                error = await _temporal_error(client, timeout=min(check_every_seconds, 5.0))
                if error != last_error:
                    if error is None:
                        log.info("temporal reachable again")
                    else:
                        log.warning("temporal health check failed: not ready", error=error)
                    last_error = error
                self.temporal(error)
            await asyncio.sleep(BEAT_SECONDS)

    @contextlib.asynccontextmanager
    async def watching(self, client: Client) -> AsyncIterator[None]:
        """`watch` in the background for the duration of the block."""
        task = asyncio.create_task(self.watch(client))
        try:
            yield
        finally:
            task.cancel()


async def _temporal_error(client: Client, timeout: float) -> str | None:
    try:
        serving = await client.service_client.check_health(timeout=timedelta(seconds=timeout))
    except Exception as error:  # noqa: BLE001 - whatever fails, we are not ready (never a crash)
        return type(error).__name__
    return None if serving else "not serving"


class OpsServer:
    def __init__(self, server: ThreadingWSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would flood the logs


def ops_app(health: Health, registry: CollectorRegistry = REGISTRY) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/livez":
            problem, good, bad = health.liveness(), {"status": "ok"}, "not_live"
        elif path == "/readyz":
            problem, good, bad = health.readiness(), {"status": "ready"}, "not_ready"
        else:
            problem, good, bad = f"No route {path}: /metrics, /livez, /readyz", {}, "not_found"
        status = "200 OK" if problem is None else ("404 Not Found" if bad == "not_found" else "503 Service Unavailable")
        body = json.dumps(good if problem is None else {"error": bad, "detail": problem}).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve_ops(port: int, host: str, health: Health, registry: CollectorRegistry = REGISTRY) -> OpsServer:
    """Serve /metrics, /livez and /readyz on `host:port` from a background thread; port 0 picks a
    free one."""
    server = make_server(host, port, ops_app(health, registry), ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="ops-server", daemon=True)
    thread.start()
    return OpsServer(server, thread)
