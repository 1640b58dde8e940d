"""Shared pieces of the "prove it" suites: fakes wired per run, subprocesses, accounting.

Every suite starts its own Temporal dev server, fake Anthropic and Composio servers (in this process,
on 127.0.0.1) and kron's own entry points as subprocesses (`python -m kron.worker.main`,
`python -m kron.gateway.main`). Only processes started here are ever signalled, by pid.

Runs are told apart by a tag in their goal (`[run:<tag>]`): the fake model reads it from the request,
so every model request and every tool execution is attributed to its run, turn and call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import random
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from _harness import table
from kron.contracts.models import AgentRunResult, RunStatus
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic, RecordedRequest, Reply
from kron_testing.fake_composio import Execution, FakeComposio
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer

__all__ = ["table"]

# Secrets of the suites: long and unique, so finding one anywhere is never a coincidence.
ANTHROPIC_KEY = "sk-ant-prove-4f1d0a2b9c8e7d6f5a4b3c2d1e0f9a8b"
COMPOSIO_KEY = "ck-prove-7e6d5c4b3a29180f7e6d5c4b3a291807"
# A Standard Webhooks secret: whsec_ and the base64 of its key.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"prove-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d").decode()
JWT_SECRET = "jwt-prove-secret-3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f"

TOOLKIT = "notes"
READ_ONLY_TOOL = "NOTES_LIST"  # verb LIST: read-only, retried freely
UNSAFE_TOOL = "NOTES_APPEND"  # verb APPEND: unsafe, never re-run blindly
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"run": {"type": "string"}, "turn": {"type": "integer"}, "call": {"type": "integer"}},
    "required": ["run", "turn", "call"],
}

_TAG = re.compile(r"\[run:([A-Za-z0-9_.-]+)\]")
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Runs, tags and the scripted model


def goal_for(tag: str, text: str = "append notes and list them") -> str:
    return f"[run:{tag}] {text}"


def tag_of(body: Mapping[str, Any] | None) -> str | None:
    """The run tag in a model request (its first user message is the goal)."""
    if not body:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        return None
    content = messages[0].get("content")
    if isinstance(content, list):
        content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    match = _TAG.search(str(content))
    return match.group(1) if match else None


def tool_key(arguments: Mapping[str, Any]) -> tuple[str, int, int]:
    return (str(arguments.get("run")), int(arguments.get("turn", -1)), int(arguments.get("call", -1)))


# (tag, turn, attempt, request index, the scripted reply) -> the reply to send
ReplyHook = Callable[[str, int, int, int, Reply], Reply]


class AgentScript:
    """The fake model's responder: every run calls `tools[i]` for call i, `turns` turns, then ends.

    Tool inputs carry `{run, turn, call}`, so every execution names its step. `hook` may replace
    any reply (faults, delays, blocking); `attempt` counts earlier requests for the same run turn.
    """

    def __init__(self, turns: int, tools: Sequence[str], hook: ReplyHook | None = None) -> None:
        self.turns = turns
        self.tools = list(tools)
        self.hook = hook
        self._attempts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any], index: int) -> Reply:
        tag = tag_of(body) or "untagged"
        turn = replies.turn_of(body)
        with self._lock:
            attempt = self._attempts.get((tag, turn), 0)
            self._attempts[(tag, turn)] = attempt + 1
        reply: Reply
        if turn >= self.turns:
            reply = replies.text(f"done: {tag}")
        else:
            reply = replies.tool_use(
                [(name, {"run": tag, "turn": turn, "call": i}) for i, name in enumerate(self.tools)]
            )
        return self.hook(tag, turn, attempt, index, reply) if self.hook else reply


def add_notes_tools(composio: FakeComposio, users: Iterable[str], latency: float = 0.0) -> str:
    """NOTES_LIST (read-only) and NOTES_APPEND (unsafe) in toolkit `notes`, connected for `users`."""

    def handler(user: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "run": args.get("run"), "turn": args.get("turn"), "call": args.get("call")}

    composio.add_tool(READ_ONLY_TOOL, TOOLKIT, "List the notes.", TOOL_SCHEMA, handler)
    composio.add_tool(UNSAFE_TOOL, TOOLKIT, "Append a note.", TOOL_SCHEMA, handler)
    for user in users:
        composio.connect(user, TOOLKIT)
    composio.latency = latency
    return TOOLKIT


# --------------------------------------------------------------------------------------------
# Processes


def worker_env(
    temporal_address: str, task_queue: str, llm: FakeAnthropic, composio: FakeComposio, **extra: str
) -> dict[str, str]:
    env = {
        "KRON_TEMPORAL_ADDRESS": temporal_address,
        "KRON_TASK_QUEUE": task_queue,
        "KRON_METRICS_PORT": "0",
        "KRON_DRAIN_SECONDS": "5",
        "KRON_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "KRON_LOG_LEVEL": "WARNING",
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": llm.base_url,
        "COMPOSIO_API_KEY": COMPOSIO_KEY,
        "COMPOSIO_BASE_URL": composio.base_url,
    }
    env.update(extra)
    return env


def gateway_env(temporal_address: str, task_queue: str, composio: FakeComposio, **extra: str) -> dict[str, str]:
    env = {
        "KRON_TEMPORAL_ADDRESS": temporal_address,
        "KRON_TASK_QUEUE": task_queue,
        "KRON_PORT": "0",
        "KRON_JWT_SECRET": JWT_SECRET,
        "COMPOSIO_API_KEY": COMPOSIO_KEY,
        "COMPOSIO_BASE_URL": composio.base_url,
        "KRON_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


@dataclass
class MemoryUse:
    rss_mib: float
    hwm_mib: float  # peak RSS (VmHWM)


def memory_of(pid: int) -> MemoryUse | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return None

    def mib(name: str) -> float:
        return int(fields.get(name, "0 kB").split()[0]) / 1024

    return MemoryUse(mib("VmRSS"), mib("VmHWM"))


def ready_value(process: KronProcess, marker: str, key: str) -> int:
    line = next(line for line in process.output if marker in line)
    match = re.search(rf"{key}=(\d+)", line)
    assert match is not None, line
    return int(match.group(1))


class Fleet:
    """Every subprocess a suite starts. `close()` stops them all (SIGKILL unless drained first)."""

    def __init__(self) -> None:
        self.processes: list[KronProcess] = []
        self._lock = threading.Lock()

    def start(self, module: str, env: Mapping[str, str], marker: str, timeout: float = 120.0) -> KronProcess:
        process = KronProcess(module, env, marker)
        with self._lock:
            self.processes.append(process)
        return process.wait_ready(timeout)

    def worker(self, env: Mapping[str, str]) -> KronProcess:
        return self.start("kron.worker.main", env, "kron-worker ready")

    def gateway(self, env: Mapping[str, str]) -> KronProcess:
        return self.start("kron.gateway.main", env, "kron-gateway ready")

    async def workers(self, env: Mapping[str, str], count: int) -> list[KronProcess]:
        return list(await asyncio.gather(*(asyncio.to_thread(self.worker, env) for _ in range(count))))

    def alive(self) -> list[KronProcess]:
        with self._lock:
            return [p for p in self.processes if p.process.poll() is None]

    def output(self) -> str:
        with self._lock:
            return "\n".join("\n".join(p.output) for p in self.processes)

    def close(self) -> None:
        with self._lock:
            processes = list(self.processes)
        for process in processes:
            process.kill()


@dataclass(frozen=True)
class SuiteServers:
    server: TemporalDevServer
    llm: FakeAnthropic
    composio: FakeComposio
    fleet: Fleet


@contextlib.contextmanager
def suite_servers() -> Iterator[SuiteServers]:
    """What every suite runs against: a Temporal dev server, the fake Anthropic and Composio
    servers (with the suites' keys; quiet about cut connections) and a Fleet for its subprocesses,
    all stopped afterwards (the subprocesses first)."""
    fleet = Fleet()
    with (
        TemporalDevServer() as server,
        FakeAnthropic(api_key=ANTHROPIC_KEY) as llm,
        FakeComposio(api_key=COMPOSIO_KEY) as composio,
    ):
        quiet(llm, composio)
        try:
            yield SuiteServers(server, llm, composio, fleet)
        finally:
            fleet.close()


# --------------------------------------------------------------------------------------------
# Temporal


async def connect(address: str) -> Client:
    return await Client.connect(address, data_converter=pydantic_data_converter)


async def result_of(
    handle: WorkflowHandle[Any, AgentRunResult], deadline: float
) -> AgentRunResult | None:
    """The run's result, riding out Temporal restarts; None if the deadline passes first."""
    while time.monotonic() < deadline:
        try:
            return await asyncio.wait_for(handle.result(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return None
        except RPCError:
            await asyncio.sleep(0.5)  # the server is restarting: ask again
    return None


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


@dataclass
class StepTimes:
    """What a run's history says about its activities (wall-clock seconds)."""

    # call_model: turn -> when its activity completed; execute_tool: (run, turn, call) -> same.
    model_completed: dict[int, float] = field(default_factory=dict)
    tool_completed: dict[tuple[str, int, int], float] = field(default_factory=dict)
    # How often the workflow scheduled each step (more than once: the workflow re-did a step).
    model_scheduled: dict[int, int] = field(default_factory=dict)
    tool_scheduled: dict[tuple[str, int, int], int] = field(default_factory=dict)
    history_json: str = ""


async def step_times(client: Client, workflow_id: str) -> StepTimes:
    """Read the run's history (its latest run; suites never continue-as-new)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    times = StepTimes(history_json=history.to_json())
    scheduled: dict[int, tuple[str, Any]] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            payloads = attrs.input.payloads
            data = json.loads(payloads[0].data) if payloads else {}
            if attrs.activity_type.name == "call_model":
                # Inline requests (before transcripts-v1) hold the conversation; references say the turn.
                turn = (replies.turn_of(data["request"]) if data.get("request")
                        else int(data.get("transcript", {}).get("turn", 0)))
                scheduled[event.event_id] = ("model", turn)
                times.model_scheduled[turn] = times.model_scheduled.get(turn, 0) + 1
            elif attrs.activity_type.name == "execute_tool":
                key = tool_key(data.get("call", {}).get("input", {}))
                scheduled[event.event_id] = ("tool", key)
                times.tool_scheduled[key] = times.tool_scheduled.get(key, 0) + 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs_done = event.activity_task_completed_event_attributes
            kind_key = scheduled.get(attrs_done.scheduled_event_id)
            when = event.event_time.ToDatetime().timestamp() if event.event_time else 0.0
            if when and kind_key is not None:
                kind, key = kind_key
                if kind == "model":
                    times.model_completed[key] = when
                else:
                    times.tool_completed[key] = when
    return times


# --------------------------------------------------------------------------------------------
# Accounting over the fakes' records


class Clock:
    """The fakes stamp with time.monotonic(); Temporal with wall-clock time."""

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()

    def wall(self, monotonic: float) -> float:
        return monotonic + self.offset


def requests_by_run(llm: FakeAnthropic) -> dict[tuple[str, int], list[RecordedRequest]]:
    grouped: dict[tuple[str, int], list[RecordedRequest]] = {}
    for request in llm.requests:
        tag = tag_of(request.body)
        if tag is not None:
            grouped.setdefault((tag, request.turn), []).append(request)
    return grouped


def executions_by_key(composio: FakeComposio) -> dict[tuple[str, int, int], list[Execution]]:
    grouped: dict[tuple[str, int, int], list[Execution]] = {}
    for execution in composio.executions:
        grouped.setdefault(tool_key(execution.arguments), []).append(execution)
    return grouped


def last_activity(llm: FakeAnthropic, composio: FakeComposio) -> dict[str, float]:
    """Run tag -> monotonic time of its latest model request or tool execution."""
    latest: dict[str, float] = {}
    for request in llm.requests:
        tag = tag_of(request.body)
        if tag is not None:
            latest[tag] = max(latest.get(tag, 0.0), request.responded_at or request.received_at)
    for execution in composio.executions:
        tag = str(execution.arguments.get("run"))
        latest[tag] = max(latest.get(tag, 0.0), execution.time)
    return latest


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def fmt_seconds(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.1f} / {max(values):.1f}"


def fmt_ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5) * 1000:.1f} / {percentile(values, 0.99) * 1000:.1f}"


def status_counts(results: Iterable[AgentRunResult | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        key = result.status.value if result is not None else "unfinished"
        counts[key] = counts.get(key, 0) + 1
    return counts


def completed(results: Iterable[AgentRunResult | None]) -> int:
    return sum(1 for r in results if r is not None and r.status == RunStatus.COMPLETED)


def rng(seed: int | None) -> random.Random:
    return random.Random(seed)


def print_report(title: str, rows: list[tuple[str, ...]], notes: Sequence[str] = ()) -> None:
    print(f"\n{title}\n")
    print(table(rows))
    for note in notes:
        print(note)
    print(flush=True)


def quiet(*fakes: FakeAnthropic | FakeComposio) -> None:
    """Connections cut by a SIGKILL are expected here: don't print a traceback for each."""
    for fake in fakes:
        server = getattr(fake, "_server", None)
        if server is not None:
            server.handle_error = lambda request, client_address: None


# --------------------------------------------------------------------------------------------
# Command line


class SuiteReport(Protocol):
    def rows(self) -> list[tuple[str, ...]]: ...

    def violations(self) -> list[str]: ...


def suite_parser(description: str | None) -> argparse.ArgumentParser:
    """A suite's argument parser; `description` is its module docstring, shown as written."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def conclude(title: str, report: SuiteReport, notes: Sequence[str] = ()) -> NoReturn:
    """Print the report and whether every invariant held, then exit: 0 if all held, else 1.
    os._exit: the process ends here even if a thread the suite started is still running."""
    print_report(title, report.rows(), notes)
    failed = report.violations()
    print("invariants: " + ("all held" if not failed else "FAILED\n  " + "\n  ".join(failed)), flush=True)
    sys.stdout.flush()
    os._exit(1 if failed else 0)
