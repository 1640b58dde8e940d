"""`kron-gateway`: serves the HTTP API with uvicorn on `KRON_HOST:KRON_PORT`.

Prints `kron-gateway ready port=<port>` on stdout once it accepts connections (supervisors and
tests wait for that line; with `KRON_PORT=0` it is how they learn the port).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator

import uvicorn
from pydantic import ValidationError

from kron.common.logging import configure_logging, get_logger
from kron.gateway.app import create_app
from kron.gateway.server import uvicorn_config
from kron.gateway.settings import GatewaySettings, get_settings

log = get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, so the process dies of the signal;
    like the worker, the gateway drains and then exits 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        # A second signal while draining stops at once.
        self.force_exit = self.should_exit
        self.should_exit = True


async def serve(server: uvicorn.Server, settings: GatewaySettings) -> None:
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # failed to start (port taken, ...): raise it
            return
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    log.info("gateway listening", host=settings.host, port=port,
             loop=type(asyncio.get_running_loop()).__module__,
             http=getattr(server.config, "http_protocol_class", type(None)).__name__)
    print(f"kron-gateway ready port={port}", flush=True)
    await serving
    log.info("gateway stopped")


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as invalid:
        # Name the setting and the rule only: the input may be a secret.
        for error in invalid.errors(include_input=False, include_url=False):
            where = ".".join(map(str, error["loc"])) or "settings"
            print(f"kron-gateway: invalid configuration: {where}: {error['msg']}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level)
    config = uvicorn_config(create_app(settings), settings)
    # uvloop when installed (uvicorn's "auto"), else asyncio; HTTP is always the guarded h11 protocol.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve(_Server(config), settings))


if __name__ == "__main__":
    main()
