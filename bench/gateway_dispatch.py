"""Dispatch latency and throughput through one gateway process, next to bare Temporal StartWorkflow.

Starts its own Temporal dev server and one `python -m kron.gateway.main` (uvicorn, one process, dev
mode, no toolkit preflight), then on loopback:
  1. bare `client.start_workflow` from this process (the floor: what Temporal itself costs),
  2. `POST /tasks/dispatch` through the gateway (auth, validation, start, response),
  3. the same with an `Idempotency-Key` (adds a describe to tell a new task from a replay).
Each sends `--count` requests with `--concurrency` in flight, in interleaved rounds. No worker runs: runs stay queued, only
the start path is measured. Prints figures; asserts nothing.

    PYTHONPATH=src/python:tests python bench/gateway_dispatch.py --count 400 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # kron_testing

import httpx
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter

from kron.contracts import names
from kron.contracts.models import AgentRunInput
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import issue_token
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer

JWT_SECRET = "bench-jwt-secret-0123456789abcdefghijklmnop"
TASK_QUEUE = "bench-no-worker"
ROUNDS = 4


@dataclass
class Result:
    name: str
    latencies: list[float]
    wall_seconds: float
    errors: int

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rate = len(ordered) / self.wall_seconds
        return f"{self.name:<38} {len(ordered):>5} {p50:>8.1f} {p99:>8.1f} {rate:>10.0f} {self.errors:>6}"

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall_seconds


def merge(name: str, parts: list[Result]) -> Result:
    return Result(
        name,
        [latency for part in parts for latency in part.latencies],
        sum(part.wall_seconds for part in parts),
        sum(part.errors for part in parts),
    )


async def run_load(name: str, count: int, concurrency: int, call: Callable[[int], Awaitable[bool]]) -> Result:
    latencies: list[float] = []
    errors = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, errors
        while next_index < count:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            ok = await call(index)
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, latencies, time.perf_counter() - started, errors)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--log-level", default="INFO", help="the gateway's KRON_LOG_LEVEL")
    args = parser.parse_args()
    count, concurrency = max(ROUNDS, min(args.count, 5000)), max(1, min(args.concurrency, 256))

    with TemporalDevServer() as temporal:
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        env = {
            "KRON_DEV_MODE": "true",
            "KRON_JWT_SECRET": JWT_SECRET,
            "KRON_TEMPORAL_ADDRESS": temporal.address,
            "KRON_TASK_QUEUE": TASK_QUEUE,
            "KRON_PORT": "0",
            "KRON_LOG_LEVEL": args.log_level,
            "KRON_DISPATCH_RATE_PER_SECOND": "1000000",
            "KRON_DISPATCH_BURST": "1000000",
            "COMPOSIO_API_KEY": "",
        }
        with KronProcess("kron.gateway.main", env, ready_marker="kron-gateway ready").wait_ready() as gateway:
            ready = next(line for line in gateway.output if "kron-gateway ready" in line)
            match = re.search(r"port=(\d+)", ready)
            assert match is not None
            base_url = f"http://127.0.0.1:{match.group(1)}"
            settings = GatewaySettings(dev_mode=True, jwt_secret=SecretStr(JWT_SECRET))
            users = [f"bench-{i}" for i in range(concurrency)]
            tokens = {u: f"Bearer {issue_token(u, settings).access_token}" for u in users}
            user_key = SearchAttributeKey.for_keyword(names.SEARCH_ATTRIBUTE_USER)
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

            async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:

                async def bare(i: int) -> bool:
                    user = users[i % concurrency]
                    await client.start_workflow(
                        names.AGENT_WORKFLOW,
                        AgentRunInput(user_id=user, goal=f"bench goal {i}"),
                        id=f"run-{uuid.uuid4().hex}",
                        task_queue=TASK_QUEUE,
                        search_attributes=TypedSearchAttributes([SearchAttributePair(user_key, user)]),
                        memo={"goal": f"bench goal {i}"},
                    )
                    return True

                def through_gateway(idempotent: bool) -> Callable[[int], Awaitable[bool]]:
                    async def call(i: int) -> bool:
                        user = users[i % concurrency]
                        headers = {"Authorization": tokens[user]}
                        if idempotent:
                            headers["Idempotency-Key"] = uuid.uuid4().hex
                        response = await http.post(
                            "/tasks/dispatch", json={"goal": f"bench goal {i}"}, headers=headers
                        )
                        return response.status_code == 202

                    return call

                # Warm up both paths (connections, caches, JIT-less but lazy imports).
                await run_load("warm-up", 2 * concurrency, concurrency, bare)
                await run_load("warm-up", 2 * concurrency, concurrency, through_gateway(False))

                # Interleaved rounds, so server-side background work (visibility, sqlite) left by
                # one path does not land on the next path's figures only.
                paths = {
                    "temporal StartWorkflow (bare)": bare,
                    "gateway POST /tasks/dispatch": through_gateway(False),
                    "gateway dispatch + Idempotency-Key": through_gateway(True),
                }
                rounds = [
                    [await run_load(name, count // ROUNDS, concurrency, call) for name, call in paths.items()]
                    for _ in range(ROUNDS)
                ]
                results = [merge(name, [r[i] for r in rounds]) for i, name in enumerate(paths)]
            gateway.terminate(timeout=15)

    print(f"\n{count} requests per row, {concurrency} in flight, loopback, 1 gateway process "
          f"(log level {args.log_level}), Temporal dev server (sqlite WAL), no worker\n")
    print(f"{'path':<38} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'starts/s':>10} {'errors':>6}")
    for result in results:
        print(result.row())
    bare_result, gateway_result, idempotent_result = results
    print(
        f"\ngateway / bare: p50 x{gateway_result.p50 / bare_result.p50:.2f}, "
        f"throughput x{gateway_result.rate / bare_result.rate:.2f}; "
        f"with Idempotency-Key: p50 x{idempotent_result.p50 / bare_result.p50:.2f}, "
        f"throughput x{idempotent_result.rate / bare_result.rate:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
