"""Chaos: many concurrent runs with tool calls while workers are SIGKILLed at random moments and the
Temporal server restarts mid-way. Nothing may be lost and no completed step may be done twice.

Each run makes `--turns` model turns; every turn calls NOTES_LIST (read-only) and NOTES_APPEND
(unsafe) in parallel, then a final turn answers. Model replies take 0.2-1.2 s and tool responses
0.25 s, so kills land on steps in flight. Several worker subprocesses share the runs; every few
seconds one is SIGKILLed (never the last one alive) and a replacement starts; after half the kills
the dev server restarts on the same sqlite file. An unsafe call in flight at a kill may have acted,
so its run waits for a human (`pending_unknown`): this driver is that human and answers SKIP.

Accounting comes from the fake servers (every request and execution, keyed by run, turn and call)
and from each run's Temporal history (when each step completed):
  - model calls re-issued: requests beyond one per run turn (only steps in flight at a disruption);
  - completed model calls / tool calls repeated: a request or execution of a step AFTER its
    activity completed in the history (must be 0);
  - unsafe calls executed twice (must be 0; read-only calls in flight at a kill may run again);
  - tool calls lost: neither executed nor reported as outcome unknown (must be 0).

    ./pants run bench/prove/chaos.py -- --runs 100
    PYTHONPATH=src/python:tests:bench python -m prove.chaos --runs 100
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `prove` (bench/) and kron_testing importable
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[:0] = [os.path.join(_root, d) for d in ("bench", "tests", "src/python")]

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from kron.contracts import names
from kron.contracts.models import (
    AgentRunInput,
    AgentRunResult,
    RunProgress,
    UnknownOutcomeAction,
    UnknownOutcomeDecision,
)
from kron.worker.workflows import AgentWorkflow
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic, Reply
from kron_testing.fake_composio import FakeComposio
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer
from prove._common import (
    READ_ONLY_TOOL,
    TOOLKIT,
    UNSAFE_TOOL,
    AgentScript,
    Clock,
    Fleet,
    StepTimes,
    add_notes_tools,
    bounded,
    completed,
    conclude,
    connect,
    executions_by_key,
    fmt_seconds,
    goal_for,
    last_activity,
    requests_by_run,
    result_of,
    status_counts,
    step_times,
    suite_parser,
    suite_servers,
    tag_of,
    worker_env,
)

TOOLS = (READ_ONLY_TOOL, UNSAFE_TOOL)  # call 0 is read-only, call 1 unsafe
_QUERY_ERRORS = (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError, TimeoutError)


@dataclass
class ChaosConfig:
    runs: int = 100
    turns: int = 5
    workers: int = 3
    kills: int = 12
    kill_every: tuple[float, float] = (2.0, 5.0)  # seconds between disruptions, uniform
    restart_after_kills: int | None = None  # default: half the kills
    model_delay: tuple[float, float] = (0.2, 1.2)
    tool_latency: float = 0.25
    users: int = 5
    seed: int = 1
    timeout: float = 900.0


@dataclass
class Disruption:
    at: float  # monotonic
    kind: str  # "kill" | "restart"


@dataclass
class ChaosReport:
    config: ChaosConfig
    statuses: dict[str, int]
    completed: int
    model_requests: int = 0
    model_own: int = 0
    model_reissued: int = 0
    model_reissued_unexplained: int = 0  # re-issued with no disruption in between
    model_completed_repeated: int = 0
    tool_calls: int = 0
    tool_executions: int = 0
    tool_completed_repeated: int = 0
    unsafe_executed_twice: int = 0
    read_only_rerun: int = 0
    tool_lost: int = 0
    unknown_in_results: int = 0  # tool results that told the model "outcome unknown"
    unknown_in_progress: int = 0  # StepRecord.outcome_unknown in the runs' progress
    unknown_unsafe: int = 0  # of those, unsafe calls (read-only ones are simply retried)
    unknown_resolved: int = 0  # SKIP decisions this driver sent (to finished runs)
    unknown_by_cause: dict[str, int] = field(default_factory=dict)  # disruption kind -> calls
    kills: int = 0
    restarts: int = 0
    workers_started: int = 0
    workers_lost_unexpectedly: int = 0
    resume_seconds: list[float] = field(default_factory=list)
    unknown_surfaced_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    wedged: int = 0  # runs whose workflow task fails on every worker (nondeterminism)
    replayed: int = 0
    replay_failures: int = 0
    details: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        found = []
        if self.completed != self.config.runs:
            found.append(f"runs completed {self.completed}/{self.config.runs}: {self.statuses}")
        if self.replay_failures or self.replayed != self.config.runs:
            found.append(f"histories replayed {self.replayed - self.replay_failures}/{self.config.runs}")
        for name, value in (
            ("completed model calls re-issued", self.model_completed_repeated),
            ("completed tool calls repeated", self.tool_completed_repeated),
            ("unsafe tool calls executed twice", self.unsafe_executed_twice),
            ("tool calls lost", self.tool_lost),
            ("read-only calls reported outcome unknown", self.unknown_in_results - self.unknown_unsafe),
        ):
            if value:
                found.append(f"{name}: {value}")
        if self.unknown_in_results != self.unknown_resolved:
            found.append(
                f"outcome-unknown results {self.unknown_in_results} != SKIP decisions sent "
                f"{self.unknown_resolved}"
            )
        return found + self.details

    def rows(self) -> list[tuple[str, ...]]:
        c = self.config
        return [
            ("measure", "value", "must be"),
            ("runs completed", f"{self.completed} / {c.runs}", f"{c.runs}"),
            ("runs wedged by a nondeterminism error", str(self.wedged), "0"),
            ("worker SIGKILLs / temporal restarts", f"{self.kills} / {self.restarts}", ""),
            ("workers started (incl. replacements)", str(self.workers_started), ""),
            ("model requests (runs' own turns)", f"{self.model_requests} ({self.model_own})", ""),
            ("model calls re-issued (in flight at a disruption)", str(self.model_reissued), ""),
            ("  of which with no disruption in between", str(self.model_reissued_unexplained), ""),
            ("completed model calls re-issued", str(self.model_completed_repeated), "0"),
            ("tool executions (distinct calls)", f"{self.tool_executions} ({self.tool_calls})", ""),
            ("completed tool calls repeated", str(self.tool_completed_repeated), "0"),
            ("unsafe tool calls executed twice", str(self.unsafe_executed_twice), "0"),
            ("read-only calls re-run (in flight at a kill)", str(self.read_only_rerun), "allowed"),
            ("tool calls lost", str(self.tool_lost), "0"),
            ("unsafe calls -> outcome_unknown (progress)", f"{self.unknown_unsafe} ({self.unknown_in_progress})", ""),
            ("  resolved by the driver (SKIP)", str(self.unknown_resolved), "= unknown"),
            ("  after a kill / after the restart",
             f"{self.unknown_by_cause.get('kill', 0)} / {self.unknown_by_cause.get('restart', 0)}", ""),
            ("disruption -> step re-issued, p50 / max (s)", fmt_seconds(self.resume_seconds), ""),
            ("disruption -> run waits for a human, p50 / max (s)", fmt_seconds(self.unknown_surfaced_seconds), ""),
            ("histories that replay deterministically", f"{self.replayed - self.replay_failures} / {c.runs}",
             str(c.runs)),
            ("wall time (s)", f"{self.wall_seconds:.0f}", ""),
        ]


async def run_chaos(config: ChaosConfig) -> ChaosReport:
    with suite_servers() as s:
        return await _run(config, s.server, s.llm, s.composio, s.fleet)


async def _run(
    config: ChaosConfig, server: TemporalDevServer, llm: FakeAnthropic, composio: FakeComposio,
    fleet: Fleet,
) -> ChaosReport:
    rand = random.Random(config.seed)
    clock = Clock()
    users = [f"chaos-user-{i}" for i in range(config.users)]
    add_notes_tools(composio, users, latency=config.tool_latency)

    def slow(tag: str, turn: int, attempt: int, index: int, reply: Reply) -> Reply:
        seconds = random.Random(f"{config.seed}/{tag}/{turn}").uniform(*config.model_delay)
        return replies.delay(seconds, reply)

    llm.responder = AgentScript(config.turns, TOOLS, slow)
    queue = f"chaos-{uuid.uuid4().hex[:8]}"
    env = worker_env(server.address, queue, llm, composio)
    started = time.monotonic()
    deadline = started + config.timeout
    ready: list[KronProcess] = list(await fleet.workers(env, config.workers))
    client = await connect(server.address)

    tags = [f"c{i:04d}" for i in range(config.runs)]
    handles: dict[str, WorkflowHandle[Any, AgentRunResult]] = {}

    async def start(i: int, tag: str) -> None:
        handles[tag] = await client.start_workflow(
            names.AGENT_WORKFLOW,
            AgentRunInput(
                user_id=users[i % len(users)], goal=goal_for(tag), toolkits=[TOOLKIT],
                max_iterations=config.turns + 3, unknown_outcome_timeout_seconds=1800,
            ),
            id=f"chaos-{tag}-{uuid.uuid4().hex[:6]}", task_queue=queue, result_type=AgentRunResult,
        )

    await bounded(16, [functools.partial(start, i, t) for i, t in enumerate(tags)])
    waiters = {tag: asyncio.create_task(result_of(handles[tag], deadline)) for tag in tags}
    disruptions: list[Disruption] = []
    resolved: dict[str, float] = {}  # idempotency key -> when SKIP was sent
    resolved_for: dict[str, str] = {}  # idempotency key -> run
    surfaced: list[tuple[str, int, float]] = []  # (run, turn, when the driver saw it waiting)
    replacements: list[asyncio.Task[KronProcess]] = []
    counters = {"kills": 0, "restarts": 0, "lost": 0}

    def all_done() -> bool:
        return all(w.done() for w in waiters.values())

    def replace() -> None:
        async def spawn() -> KronProcess:
            process = await asyncio.to_thread(fleet.worker, env)
            ready.append(process)
            return process

        replacements.append(asyncio.create_task(spawn()))

    async def chaos() -> None:
        await asyncio.to_thread(llm.wait_for_requests, min(config.runs, 5), 60)
        restart_after = (
            config.restart_after_kills if config.restart_after_kills is not None else config.kills // 2
        )
        while counters["kills"] < config.kills and not all_done():
            await asyncio.sleep(rand.uniform(*config.kill_every))
            alive = [p for p in ready if p.process.poll() is None]
            for dead in [p for p in ready if p.process.poll() is not None and p not in killed]:
                counters["lost"] += 1  # died on its own: report it, replace it
                killed.add(dead)
                replace()
            if all_done():
                return
            if not counters["restarts"] and counters["kills"] >= restart_after:
                disruptions.append(Disruption(time.monotonic(), "restart"))
                await asyncio.to_thread(server.restart)
                counters["restarts"] += 1
                continue
            if len(alive) <= 1:
                continue  # never the last one: wait for a replacement
            victim = rand.choice(alive)
            victim.kill()
            killed.add(victim)
            disruptions.append(Disruption(time.monotonic(), "kill"))
            counters["kills"] += 1
            replace()

    async def human() -> None:
        """Answer SKIP for every unsafe call whose outcome is unknown (runs that went quiet)."""
        while not all_done():
            await asyncio.sleep(1.0)
            latest = last_activity(llm, composio)
            now = time.monotonic()
            quiet_runs = [t for t, w in waiters.items() if not w.done() and now - latest.get(t, started) > 2.0]

            async def check(tag: str) -> None:
                handle = handles[tag]
                try:
                    progress = await handle.query(
                        names.QUERY_PROGRESS, result_type=RunProgress, rpc_timeout=timedelta(seconds=3)
                    )
                    for pending in progress.pending_unknown:
                        sent = resolved.get(pending.idempotency_key)
                        if sent is not None and time.monotonic() - sent < 10:
                            continue
                        seen = time.monotonic()
                        await handle.signal(
                            names.SIGNAL_RESOLVE_UNKNOWN,
                            UnknownOutcomeDecision(
                                action=UnknownOutcomeAction.SKIP, reason="chaos driver",
                                keys=[pending.idempotency_key],  # this call, whenever it waits
                            ),
                            rpc_timeout=timedelta(seconds=5),
                        )
                        if sent is None:
                            args = pending.call.input
                            surfaced.append((tag, int(args.get("turn", -1)), seen))
                        resolved[pending.idempotency_key] = seen
                        resolved_for[pending.idempotency_key] = tag
                except _QUERY_ERRORS:
                    return  # the worker holding it is gone or the server restarts: next round

            await bounded(8, [functools.partial(check, t) for t in quiet_runs])
            # A run quiet for long may be wedged: its workflow task fails on every worker.
            long_quiet = [t for t in quiet_runs if now - latest.get(t, started) > 30 and t not in wedged]
            await bounded(4, [functools.partial(diagnose, t) for t in long_quiet])

    async def diagnose(tag: str) -> None:
        try:
            description = await handles[tag].describe(rpc_timeout=timedelta(seconds=5))
        except RPCError:
            return
        fields = description.raw_description.workflow_execution_info.search_attributes.indexed_fields
        problems = fields["TemporalReportedProblems"].data.decode() if "TemporalReportedProblems" in fields else ""
        if "NonDeterministic" in problems:
            wedged[tag] = problems
            waiters[tag].cancel()  # it will never finish: stop waiting for it

    killed: set[KronProcess] = set()
    wedged: dict[str, str] = {}  # run -> the problem Temporal reports for it
    tasks = [asyncio.create_task(chaos()), asyncio.create_task(human())]
    await asyncio.gather(*waiters.values(), return_exceptions=True)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.gather(*replacements, return_exceptions=True)
    wall = time.monotonic() - started

    results = {tag: None if waiters[tag].cancelled() else waiters[tag].result() for tag in tags}
    report = ChaosReport(
        config=config, statuses=status_counts(results.values()), completed=completed(results.values()),
        kills=counters["kills"], restarts=counters["restarts"], workers_started=len(fleet.processes),
        workers_lost_unexpectedly=counters["lost"], wall_seconds=wall, wedged=len(wedged),
    )
    if counters["lost"]:
        report.details.append(f"{counters['lost']} worker(s) exited without being killed")
    if wedged:
        report.details.append(
            f"runs wedged (their workflow task fails on every worker): {sorted(wedged)}: "
            f"{next(iter(wedged.values()))}"
        )
    finished = {tag for tag, result in results.items() if result is not None}
    report.unknown_resolved = sum(1 for tag in resolved_for.values() if tag in finished)
    await _account(report, config, client, handles, llm, composio, clock, disruptions, surfaced, finished)
    return report


async def _account(
    report: ChaosReport, config: ChaosConfig, client: Client,
    handles: dict[str, WorkflowHandle[Any, AgentRunResult]], llm: FakeAnthropic,
    composio: FakeComposio, clock: Clock, disruptions: list[Disruption],
    surfaced: list[tuple[str, int, float]], finished: set[str],
) -> None:
    tags = list(handles)
    histories: dict[str, StepTimes] = dict(
        zip(tags, await bounded(8, [functools.partial(step_times, client, handles[t].id) for t in tags]), strict=True)
    )

    query_errors: dict[str, str] = {}

    await _replay(report, {handles[t].id: histories[t].history_json for t in tags})

    async def progress_of(tag: str) -> RunProgress | None:
        for _ in range(3):  # a closed run is replayed on a worker to answer: give it time
            try:
                progress: RunProgress = await handles[tag].query(
                    names.QUERY_PROGRESS, result_type=RunProgress, rpc_timeout=timedelta(seconds=15)
                )
                return progress
            except _QUERY_ERRORS as error:
                query_errors[tag] = f"{type(error).__name__}: {error}"[:300]
                await asyncio.sleep(1.0)
        return None

    progresses = await bounded(4, [functools.partial(progress_of, t) for t in tags])
    report.unknown_in_progress = sum(
        1 for p in progresses if p is not None for s in p.steps if s.outcome_unknown
    )
    if any(p is None for p in progresses):
        failed = [t for t, p in zip(tags, progresses, strict=True) if p is None]
        report.details.append(
            f"{len(failed)} progress queries failed, e.g. {handles[failed[0]].id}: {query_errors.get(failed[0])}"
        )

    def disruption_between(start: float, end: float) -> Disruption | None:
        """The disruption that cut a step started at `start` short: the first one after it (steps
        take at most ~1.5 s here and disruptions are seconds apart)."""
        inside = [d for d in disruptions if start < d.at < end]
        return min(inside, key=lambda d: d.at) if inside else None

    # Model calls.
    by_turn = requests_by_run(llm)
    ours = {(t, turn): rs for (t, turn), rs in by_turn.items() if t in handles}
    report.model_requests = sum(len(rs) for rs in ours.values())
    report.model_own = len(ours)
    for (tag, turn), requests in ours.items():
        report.model_reissued += len(requests) - 1
        done_at = histories[tag].model_completed.get(turn)
        if done_at is not None:
            report.model_completed_repeated += sum(1 for r in requests if clock.wall(r.received_at) > done_at)
        for first, again in itertools.pairwise(requests):
            hit = disruption_between(first.received_at, again.received_at)
            if hit is None:
                report.model_reissued_unexplained += 1
            else:
                report.resume_seconds.append(again.received_at - hit.at)

    # Unsafe calls left waiting: from the disruption after their turn's model reply to the moment
    # the driver saw the run waiting (it looks every second).
    for tag, turn, seen in surfaced:
        replied = [r.responded_at or r.received_at for r in ours.get((tag, turn), [])]
        hit = disruption_between(min(replied), seen) if replied else None
        if hit is not None:
            report.unknown_surfaced_seconds.append(seen - hit.at)
            report.unknown_by_cause[hit.kind] = report.unknown_by_cause.get(hit.kind, 0) + 1

    # Tool calls: which results told the model "outcome unknown" (from each run's final request).
    unknown: set[tuple[str, int, int]] = set()
    for (_, turn), requests in ours.items():
        if turn == config.turns:
            unknown |= _unknown_outcomes(requests[-1].body or {})
    report.unknown_in_results = len(unknown)
    report.unknown_unsafe = sum(1 for key in unknown if TOOLS[key[2]] == UNSAFE_TOOL)

    executions = executions_by_key(composio)
    # Only a finished run's last request shows every outcome: lost calls are counted over those.
    expected = {(t, turn, call) for t in tags for turn in range(config.turns) for call in range(len(TOOLS))}
    report.tool_calls = len(expected)
    report.tool_executions = sum(len(executions.get(key, [])) for key in expected)
    for key in expected:
        runs = executions.get(key, [])
        if not runs and key not in unknown and key[0] in finished:
            report.tool_lost += 1
        done_at = histories[key[0]].tool_completed.get(key)
        if done_at is not None:
            report.tool_completed_repeated += sum(1 for e in runs if clock.wall(e.time) > done_at)
        if len(runs) > 1:
            if TOOLS[key[2]] == UNSAFE_TOOL:
                report.unsafe_executed_twice += len(runs) - 1
            else:
                report.read_only_rerun += len(runs) - 1
                for before, after in itertools.pairwise(runs):
                    hit = disruption_between(before.time, after.time)
                    if hit is not None:
                        report.resume_seconds.append(after.time - hit.at)
    strays = [key for key in executions if key not in expected and key[0] in handles]
    if strays:
        report.details.append(f"tool executions for calls no run asked for: {strays[:5]}")


async def _replay(report: ChaosReport, histories: dict[str, str]) -> None:
    """Replay every run's history on a fresh AgentWorkflow: a run that cannot be replayed cannot be
    resumed (or queried) by a worker that does not have it cached. Failing histories are saved."""
    replayer = Replayer(workflows=[AgentWorkflow], data_converter=pydantic_data_converter)
    async def each() -> AsyncIterator[WorkflowHistory]:
        for wid, text in histories.items():
            yield WorkflowHistory.from_json(wid, json.loads(text))

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    report.replayed = len(histories)
    report.replay_failures = len(results.replay_failures)
    if results.replay_failures:
        folder = tempfile.mkdtemp(prefix="kron-chaos-replay-failures-")
        by_run_id = {json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"].get(
            "originalExecutionRunId", ""): (wid, text) for wid, text in histories.items()}
        for run_id in results.replay_failures:
            wid, text = by_run_id.get(run_id, (run_id, ""))
            if text:
                Path(folder, f"{wid}.json").write_text(text)
        first = next(iter(results.replay_failures.values()))
        report.details.append(
            f"{report.replay_failures} histories do not replay (saved in {folder}), e.g.: {str(first)[:300]}"
        )


def _unknown_outcomes(body: dict[str, Any]) -> set[tuple[str, int, int]]:
    """Calls whose tool_result (in this request's conversation) says the outcome is unknown."""
    inputs: dict[str, dict[str, Any]] = {}
    found: set[tuple[str, int, int]] = set()
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if block.get("type") == "tool_use":
                inputs[block.get("id", "")] = block.get("input", {})
            elif block.get("type") == "tool_result":
                text = block.get("content")
                if isinstance(text, list):
                    text = " ".join(str(b.get("text", "")) for b in text if isinstance(b, dict))
                if "outcome unknown" in str(text):
                    args = inputs.get(block.get("tool_use_id", ""), {})
                    found.add((str(args.get("run", tag_of(body))), int(args.get("turn", -1)),
                               int(args.get("call", -1))))
    return found


def main() -> None:
    parser = suite_parser(__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    config = ChaosConfig(
        runs=args.runs, turns=args.turns, workers=max(2, args.workers), kills=args.kills,
        kill_every=tuple(args.kill_every), seed=args.seed, timeout=args.timeout,
    )
    report = asyncio.run(run_chaos(config))
    conclude(
        f"Chaos: {config.runs} concurrent runs x {config.turns} tool turns (NOTES_LIST read-only + "
        f"NOTES_APPEND unsafe per turn), {config.workers} worker processes, SIGKILLs every "
        f"{config.kill_every[0]:.0f}-{config.kill_every[1]:.0f} s, one Temporal restart (seed {config.seed})",
        report,
    )


if __name__ == "__main__":
    main()
