"""The HTTP plumbing the fake servers share: a threaded server on 127.0.0.1 in a background thread.

A subclass implements `_handle(handler)` for every request. `stop()` cuts open keep-alive
connections, so clients see a connection error (what an outage looks like); `start()` after
`stop()` reuses the port, so `base_url` stays valid across a simulated outage.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class LoopbackServer:
    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._lock = threading.Lock()  # subclasses guard their own state with it too
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()  # set while stopping: cuts waits short (e.g. delays)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _handle(self, handler: LoopbackHandler) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Listen on 127.0.0.1. A restart after `stop()` reuses the port, so `base_url` holds."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections (clients then see a connection error)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDKs reuse connections
    disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per response
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, open_=False)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_PATCH(self) -> None:
        self.server.fake._handle(self)

    def do_DELETE(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() cuts connections instead of waiting for idle keep-alives
    request_queue_size = 128  # the listen backlog; the default 5 refuses bursts of connections

    def __init__(self, address: tuple[str, int], fake: LoopbackServer) -> None:
        self.fake = fake
        super().__init__(address, LoopbackHandler)
