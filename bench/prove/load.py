"""Load: dispatch many runs through a real gateway process (`python -m kron.gateway.main`) against 1
and then 2 worker processes, and hold hundreds of runs in flight at once on one worker.

Per phase: `--runs` dispatches (`POST /tasks/dispatch`, `--concurrency` in flight, `--users` users,
toolkit preflight on) while the phase's workers run them (one NOTES_LIST turn, then the answer).
Reports dispatch latency (client side), completed runs per second (first dispatch to last close
time in Temporal) and the workers' peak RSS (VmHWM).

Hold: one fresh worker, `--hold` runs whose model call blocks until released, so every one of them
is in flight on that worker at the same moment; reports how many were in flight and the worker's RSS
then (goal: >= 500 within 512 MiB).

    ./pants run bench/prove/load.py -- --runs 1000 --hold 600
    PYTHONPATH=src/python:tests:bench python -m prove.load --runs 1000 --hold 600
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):  # run as a file: make `prove` (bench/) and kron_testing importable
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[:0] = [os.path.join(_root, d) for d in ("bench", "tests", "src/python")]

import httpx
from pydantic import SecretStr
from temporalio.client import Client

from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult, RunStatus
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import issue_token
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic, Reply
from kron_testing.fake_composio import FakeComposio
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer
from prove._common import (
    JWT_SECRET,
    READ_ONLY_TOOL,
    TOOLKIT,
    AgentScript,
    Fleet,
    MemoryUse,
    add_notes_tools,
    bounded,
    conclude,
    connect,
    fmt_ms,
    gateway_env,
    goal_for,
    memory_of,
    ready_value,
    suite_parser,
    suite_servers,
    tag_of,
    worker_env,
)


@dataclass
class LoadConfig:
    runs: int = 1000  # per phase
    worker_counts: tuple[int, ...] = (1, 2)
    concurrency: int = 32
    users: int = 50
    turns: int = 1
    hold: int = 600  # 0: skip the hold measurement
    hold_limit_mib: float = 512.0
    timeout: float = 1800.0


@dataclass
class Phase:
    workers: int
    dispatched: int = 0
    dispatch_errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    dispatch_seconds: float = 0.0
    completed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    seconds_to_last_close: float = 0.0
    peak_rss_mib: list[float] = field(default_factory=list)

    @property
    def runs_per_second(self) -> float:
        return self.completed / self.seconds_to_last_close if self.seconds_to_last_close else 0.0


@dataclass
class Hold:
    target: int
    in_flight: int = 0
    seconds_to_all_in_flight: float = 0.0
    idle: MemoryUse | None = None
    holding: MemoryUse | None = None
    completed_after_release: int = 0


@dataclass
class LoadReport:
    config: LoadConfig
    phases: list[Phase] = field(default_factory=list)
    hold: Hold | None = None
    gateway_peak_rss_mib: float = 0.0
    details: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        found = []
        for phase in self.phases:
            if phase.dispatch_errors:
                found.append(f"{phase.workers} worker(s): dispatch errors {phase.dispatch_errors}")
            if phase.completed != self.config.runs:
                found.append(f"{phase.workers} worker(s): completed {phase.completed}/{self.config.runs} "
                             f"{phase.statuses}")
        hold = self.hold
        if hold is not None:
            if hold.in_flight < hold.target:
                found.append(f"hold: only {hold.in_flight}/{hold.target} runs in flight at once")
            if hold.holding is None or hold.holding.hwm_mib > self.config.hold_limit_mib:
                found.append(f"hold: worker peak RSS {hold.holding} over {self.config.hold_limit_mib} MiB")
            if hold.completed_after_release != hold.target:
                found.append(f"hold: {hold.completed_after_release}/{hold.target} completed after release")
        return found + self.details

    def rows(self) -> list[tuple[str, ...]]:
        width = max(1, len(self.phases))
        rows: list[tuple[str, ...]] = [
            ("measure", *(f"{p.workers} worker(s)" for p in self.phases)) if self.phases else ("measure", "value")
        ]

        def row(name: str, value: Any) -> None:
            if self.phases:
                rows.append((name, *(str(value(p)) for p in self.phases)))

        row("runs dispatched through the gateway", lambda p: p.dispatched)
        row("dispatch errors", lambda p: sum(p.dispatch_errors.values()))
        row("dispatch p50 / p99 (ms)", lambda p: fmt_ms(p.latencies))
        row("dispatches/s", lambda p: f"{p.dispatched / p.dispatch_seconds:.0f}" if p.dispatch_seconds else "-")
        row("runs completed", lambda p: p.completed)
        row("runs/s completed (first dispatch -> last close)", lambda p: f"{p.runs_per_second:.1f}")
        row("worker peak RSS, VmHWM (MiB)", lambda p: " + ".join(f"{m:.0f}" for m in p.peak_rss_mib))
        hold = self.hold
        if hold is not None:
            idle = f"{hold.idle.rss_mib:.0f}" if hold.idle else "-"
            held = (f"{hold.holding.rss_mib:.0f} (peak {hold.holding.hwm_mib:.0f})"
                    if hold.holding else "-")
            rows.append(("one worker: runs in flight at once", f"{hold.in_flight} / {hold.target}",
                         *[""] * (width - 1)))
            rows.append(("  its RSS idle -> holding them (MiB)", f"{idle} -> {held}", *[""] * (width - 1)))
            rows.append((f"  within {self.config.hold_limit_mib:.0f} MiB",
                         "yes" if hold.holding and hold.holding.hwm_mib <= self.config.hold_limit_mib
                         else "no", *[""] * (width - 1)))
        rows.append(("gateway peak RSS (MiB)", f"{self.gateway_peak_rss_mib:.0f}", *[""] * (width - 1)))
        return rows


class HoldGate:
    """Model calls of `h*` runs block until released; every other run follows the script."""

    def __init__(self, script: AgentScript) -> None:
        self.script = script
        self.release = threading.Event()

    def __call__(self, body: dict[str, Any], index: int) -> Reply:
        tag = tag_of(body) or ""
        if tag.startswith("h"):
            self.release.wait(timeout=900)
            return replies.text(f"done: {tag}")
        return self.script(body, index)


async def run_load(config: LoadConfig) -> LoadReport:
    with suite_servers() as s:
        gate = HoldGate(AgentScript(config.turns, [READ_ONLY_TOOL]))
        s.llm.responder = gate
        try:
            return await _run(config, s.server, s.llm, s.composio, s.fleet, gate)
        finally:
            gate.release.set()


async def _run(
    config: LoadConfig, server: TemporalDevServer, llm: FakeAnthropic, composio: FakeComposio,
    fleet: Fleet, gate: HoldGate,
) -> LoadReport:
    users = [f"load-user-{i}" for i in range(config.users)]
    add_notes_tools(composio, users)
    queue = f"load-{uuid.uuid4().hex[:8]}"
    gateway = await asyncio.to_thread(fleet.gateway, gateway_env(
        server.address, queue, composio,
        KRON_DISPATCH_RATE_PER_SECOND="1000000", KRON_DISPATCH_BURST="1000000",
    ))
    base_url = f"http://127.0.0.1:{ready_value(gateway, 'kron-gateway ready', 'port')}"
    client = await connect(server.address)
    report = LoadReport(config)
    minting = GatewaySettings(dev_mode=True, jwt_secret=SecretStr(JWT_SECRET))
    tokens = {u: f"Bearer {issue_token(u, minting).access_token}" for u in users}
    env = worker_env(server.address, queue, llm, composio)
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
        for index, count in enumerate(config.worker_counts if config.runs else ()):
            workers = await fleet.workers(env, count)
            phase = await _phase(config, client, http, tokens, queue, index, workers)
            report.phases.append(phase)
            for worker in workers:
                await asyncio.to_thread(worker.terminate, 30)
    gateway_memory = memory_of(gateway.process.pid)
    report.gateway_peak_rss_mib = gateway_memory.hwm_mib if gateway_memory else 0.0
    if config.hold:
        report.hold = await _hold(config, client, llm, composio, fleet, gate, server.address)
    return report


async def _phase(
    config: LoadConfig, client: Client, http: httpx.AsyncClient, tokens: dict[str, str], queue: str,
    index: int, workers: list[KronProcess],
) -> Phase:
    phase = Phase(workers=len(workers))
    users = list(tokens)
    task_ids: list[str] = []
    started_wall = time.time()
    started = time.perf_counter()

    async def dispatch(i: int) -> None:
        user = users[i % len(users)]
        body = {"goal": goal_for(f"p{index}r{i:05d}"), "toolkits": [TOOLKIT]}
        began = time.perf_counter()
        try:
            response = await http.post("/tasks/dispatch", json=body, headers={"Authorization": tokens[user]})
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        phase.latencies.append(time.perf_counter() - began)
        if status == 202:
            task_ids.append(response.json()["task_id"])
        else:
            phase.dispatch_errors[status] = phase.dispatch_errors.get(status, 0) + 1

    await bounded(config.concurrency, [functools.partial(dispatch, i) for i in range(config.runs)])
    phase.dispatch_seconds = time.perf_counter() - started
    phase.dispatched = len(task_ids)

    # Wait for every run to close (visibility count), then read the results and close times.
    deadline = time.monotonic() + config.timeout
    ids = set(task_ids)
    query = f"TaskQueue = '{queue}' AND ExecutionStatus != 'Running'"
    while time.monotonic() < deadline:
        closed = 0
        async for execution in client.list_workflows(query):
            closed += execution.id in ids
        if closed >= len(ids):
            break
        await asyncio.sleep(1.0)
    last_close = 0.0
    async for execution in client.list_workflows(query):
        if execution.id in ids and execution.close_time is not None:
            last_close = max(last_close, execution.close_time.timestamp())
    phase.seconds_to_last_close = max(0.0, last_close - started_wall)

    async def result(task_id: str) -> AgentRunResult | None:
        try:
            outcome: AgentRunResult = await asyncio.wait_for(
                client.get_workflow_handle(task_id, result_type=AgentRunResult).result(), timeout=30
            )
            return outcome
        except Exception:  # noqa: BLE001 - counted as not completed
            return None

    results = await bounded(32, [functools.partial(result, t) for t in task_ids])
    for outcome in results:
        key = outcome.status.value if outcome else "unfinished"
        phase.statuses[key] = phase.statuses.get(key, 0) + 1
    phase.completed = sum(1 for r in results if r is not None and r.status == RunStatus.COMPLETED)
    phase.peak_rss_mib = [m.hwm_mib for w in workers if (m := memory_of(w.process.pid)) is not None]
    return phase


async def _hold(
    config: LoadConfig, client: Client, llm: FakeAnthropic, composio: FakeComposio, fleet: Fleet,
    gate: HoldGate, address: str,
) -> Hold:
    hold = Hold(target=config.hold)
    queue = f"hold-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        address, queue, llm, composio,
        KRON_MAX_CONCURRENT_ACTIVITIES=str(config.hold + 100),
        KRON_MAX_CACHED_WORKFLOWS=str(max(2000, config.hold + 100)),
    )
    worker = await asyncio.to_thread(fleet.worker, env)
    await asyncio.sleep(1.0)
    hold.idle = memory_of(worker.process.pid)
    started = time.monotonic()
    tags = [f"h{i:05d}" for i in range(config.hold)]

    async def start(tag: str) -> str:
        handle = await client.start_workflow(
            names.AGENT_WORKFLOW, AgentRunInput(user_id="hold-user", goal=goal_for(tag)),
            id=f"hold-{tag}-{uuid.uuid4().hex[:6]}", task_queue=queue, result_type=AgentRunResult,
        )
        return handle.id

    ids = await bounded(32, [functools.partial(start, t) for t in tags])

    def in_flight() -> int:
        return sum(1 for r in llm.requests if r.status is None and (tag_of(r.body) or "").startswith("h"))

    deadline = time.monotonic() + config.timeout
    while time.monotonic() < deadline:
        hold.in_flight = max(hold.in_flight, in_flight())
        if hold.in_flight >= config.hold:
            break
        await asyncio.sleep(0.5)
    hold.seconds_to_all_in_flight = time.monotonic() - started
    await asyncio.sleep(3.0)  # let heartbeats and caches settle while everything is held
    hold.in_flight = max(hold.in_flight, in_flight())
    hold.holding = memory_of(worker.process.pid)
    gate.release.set()

    async def result(workflow_id: str) -> bool:
        try:
            outcome: AgentRunResult = await asyncio.wait_for(
                client.get_workflow_handle(workflow_id, result_type=AgentRunResult).result(), timeout=300
            )
            return outcome.status == RunStatus.COMPLETED
        except Exception:  # noqa: BLE001 - counted as not completed
            return False

    hold.completed_after_release = sum(await bounded(64, [functools.partial(result, i) for i in ids]))
    await asyncio.to_thread(worker.terminate, 30)
    return hold


def main() -> None:
    parser = suite_parser(__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="dispatches per phase (0: hold only)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, one phase each")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--hold", type=int, default=600, help="runs held in flight on one worker (0: skip)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    config = LoadConfig(runs=args.runs, worker_counts=tuple(args.workers), concurrency=args.concurrency,
                        users=args.users, hold=args.hold, timeout=args.timeout)
    report = asyncio.run(run_load(config))
    conclude(
        f"Load: {config.runs} runs per phase dispatched through one gateway process "
        f"({config.concurrency} in flight, {config.users} users, toolkit preflight on), each run "
        f"{config.turns} tool turn(s) + answer; hold: {config.hold} blocked runs on one worker",
        report,
    )


if __name__ == "__main__":
    main()
