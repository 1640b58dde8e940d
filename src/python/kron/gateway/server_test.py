"""The server's connection guards, on a real uvicorn on loopback: slow or stalled requests are closed,
a connection past the limit gets a JSON 503, and the HTTP parser's own refusals are JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from kron.gateway.app import create_app
from kron.gateway.server import uvicorn_config
from kron.gateway.settings import GatewaySettings

# Generous against a loaded machine: a guard that works closes in ~TIMEOUT; one that does not, never.
TIMEOUT = 0.5
CLOSED_WITHIN = 20.0


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "dev_mode": True, "temporal_address": "127.0.0.1:1", "temporal_startup_wait_seconds": 0,
        "header_timeout_seconds": TIMEOUT, "body_timeout_seconds": TIMEOUT, "max_header_bytes": 4096,
    }
    return GatewaySettings(**{**values, **overrides})


@asynccontextmanager
async def serving(gateway_settings: GatewaySettings) -> AsyncIterator[int]:
    app: FastAPI = create_app(gateway_settings, connections_factory=None)

    @app.get("/slow", include_in_schema=False)
    async def slow() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):  # 1.2 s in all: longer than the header timeout
                await asyncio.sleep(0.3)
                yield b"tick\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    server = uvicorn.Server(uvicorn_config(app, gateway_settings, port=0, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        server.force_exit = True
        await task


async def connect(port: int, first: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it does not)."""
    return await asyncio.wait_for(reader.read(), timeout=CLOSED_WITHIN)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


async def test_connections_whose_headers_never_complete_are_closed() -> None:
    async with serving(settings()) as port:
        partial = [await connect(port, b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Slow: ") for _ in range(200)]
        silent = [await connect(port) for _ in range(20)]
        answers = await asyncio.gather(*(until_closed(r) for r, _ in partial + silent))
        for raw in answers[:200]:
            status, headers, body = parse(raw)
            assert status == 408 and headers["content-type"] == "application/json"
            assert json.loads(body)["error"] == "request_timeout"
        assert answers[200:] == [b""] * 20  # nothing asked, nothing answered
        for _, writer in partial + silent:
            writer.close()


async def test_headers_trickled_a_byte_at_a_time_are_cut_off() -> None:
    async with serving(settings()) as port:
        reader, writer = await connect(port, b"GET /livez HTTP/1.1\r\n")

        async def trickle() -> None:
            while not writer.is_closing():
                writer.write(b"x")
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        try:
            assert parse(await until_closed(reader))[0] == 408
        finally:
            trickling.cancel()
            writer.close()


async def test_stalled_request_bodies_are_a_408_and_closed() -> None:
    async with serving(settings()) as port:
        head = b"POST /auth/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        stalled = [await connect(port, head + b'{"user_id"') for _ in range(20)]
        for raw in await asyncio.gather(*(until_closed(r) for r, _ in stalled)):
            status, headers, body = parse(raw)
            assert status == 408 and headers["connection"] == "close" and headers["x-request-id"]
            assert json.loads(body)["error"] == "request_timeout"
        for _, writer in stalled:
            writer.close()


async def test_requests_in_flight_and_prompt_keep_alive_requests_are_not_cut() -> None:
    async with serving(settings()) as port:
        reader, writer = await connect(port, b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        # Chunked: the stream of four ticks outlives the header timeout and arrives whole.
        response = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), timeout=CLOSED_WITHIN)
        assert parse(response)[0] == 200 and response.count(b"tick") == 4
        writer.write(b"GET /livez HTTP/1.1\r\nHost: gw\r\n\r\n")  # the same connection, kept alive
        livez = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), timeout=CLOSED_WITHIN)
        assert parse(livez)[0] == 200
        assert await until_closed(reader) == b""  # then idle: closed
        writer.close()


async def test_connections_past_the_limit_get_a_json_503() -> None:
    async with serving(settings(header_timeout_seconds=30, max_connections=2)) as port:
        held = [await connect(port) for _ in range(2)]
        await asyncio.sleep(0.2)  # accepted before the next one
        reader, writer = await connect(port, b"GET /livez HTTP/1.1\r\nHost: gw\r\n\r\n")
        status, headers, body = parse(await until_closed(reader))
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"] == "overloaded"
        writer.close()
        for held_reader, held_writer in held:  # the ones within the limit are served
            held_writer.write(b"GET /livez HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            assert parse(await until_closed(held_reader))[0] == 200
            held_writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n", 431, "request_header_too_large"),
        (b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 8192, 431, "request_header_too_large"),
        (b"POST /auth/token HTTP/1.1\r\nHost: gw\r\nContent-Length: ten\r\n\r\n", 400, "bad_request"),
        (b"POST /auth/token HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400,
         "bad_request"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
    ],
    ids=["oversized header", "oversized header still arriving", "bad content-length", "conflicting content-length", "garbage"],
)
async def test_requests_the_http_parser_refuses_get_json(request_bytes: bytes, status: int, error: str) -> None:
    async with serving(settings()) as port:
        reader, writer = await connect(port, request_bytes)
        got_status, headers, body = parse(await until_closed(reader))
        assert (got_status, headers["content-type"]) == (status, "application/json")
        assert json.loads(body)["error"] == error and json.loads(body)["detail"]
        writer.close()
