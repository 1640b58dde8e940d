"""LLM faults: the fake Anthropic server answers with bursts of 429 (with retry-after), 529, 500,
slow responses, responses slower than the model timeout, dropped connections, and a storm of 529s
for every run at once. Every run must still complete, each model turn must be answered exactly
once, slow answers must not be re-asked, retry-after must be honoured, and 400/401 must fail a run
at once without a retry.

Each run makes `--turns` model turns with one read-only tool call each. The fault of a run turn is
`KINDS[(run + turn) % len(KINDS)]`; its first attempts fail as that kind says.

    ./pants run bench/prove/llm_faults.py -- --runs 40
    PYTHONPATH=src/python:tests:bench python -m prove.llm_faults --runs 40
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

from temporalio.client import WorkflowHandle

from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult, RunStatus
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic, Reply
from kron_testing.fake_composio import FakeComposio
from kron_testing.temporal_server import TemporalDevServer
from prove._common import (
    READ_ONLY_TOOL,
    TOOLKIT,
    AgentScript,
    Fleet,
    add_notes_tools,
    bounded,
    completed,
    conclude,
    connect,
    executions_by_key,
    fmt_seconds,
    goal_for,
    requests_by_run,
    result_of,
    status_counts,
    suite_parser,
    suite_servers,
    worker_env,
)

# Per run turn: which faults its first attempts get. (kind, retry-after seconds or None)
PLANS: dict[str, list[tuple[str, float | None]]] = {
    "429": [("429", 2.0)],
    "429-burst": [("429", 1.0), ("429", 2.0), ("429", 1.0)],
    "529": [("529", None), ("529", None)],
    "500": [("500", None), ("500", None)],
    "drop": [("drop", None)],
    "slow": [("slow", None)],  # answered, slowly (within the model timeout): never re-asked
    "hang": [("hang", None)],  # slower than the model timeout: the client gives up, retries
    "none": [],
}
KINDS = list(PLANS)
FATAL = {"fatal400": 400, "fatal401": 401}  # runs whose first call is refused for good
FAILED_KINDS = {"429", "529", "500", "drop", "hang"}


@dataclass
class FaultConfig:
    runs: int = 40
    turns: int = 3
    slow_seconds: float = 3.0
    model_timeout: float = 4.0  # KRON_MODEL_TIMEOUT_SECONDS of the worker
    hang_seconds: float = 7.0
    storm: int | None = None  # 529s for this many requests once the first wave is in (default: runs)
    workers: int = 1
    timeout: float = 600.0


@dataclass
class Sent:
    tag: str
    turn: int
    attempt: int
    kind: str  # a fault kind, "storm" (529) or "ok"
    retry_after: float | None


@dataclass
class FaultReport:
    config: FaultConfig
    statuses: dict[str, int]
    completed: int
    requests: int = 0
    own_turns: int = 0
    retries: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    answered_twice: int = 0
    slow_reasked: int = 0
    retry_after_total: int = 0
    retry_after_honoured: int = 0
    retry_after_margin: list[float] = field(default_factory=list)  # gap - retry-after (s)
    backoff_gaps: list[float] = field(default_factory=list)  # after 5xx, drops, timeouts (s)
    fatal_failed_at_once: int = 0
    fatal_requests: int = 0
    tool_executions: int = 0
    tool_calls: int = 0
    wall_seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        found = []
        if self.completed != self.config.runs:
            found.append(f"runs completed {self.completed}/{self.config.runs}: {self.statuses}")
        if self.answered_twice:
            found.append(f"model turns answered more than once: {self.answered_twice}")
        if self.slow_reasked:
            found.append(f"slow answers asked again: {self.slow_reasked}")
        if self.retry_after_honoured != self.retry_after_total:
            found.append(f"retry-after honoured {self.retry_after_honoured}/{self.retry_after_total}")
        if self.fatal_failed_at_once != len(FATAL) or self.fatal_requests != len(FATAL):
            found.append(
                f"400/401 failed at once {self.fatal_failed_at_once}/{len(FATAL)} "
                f"with {self.fatal_requests} requests"
            )
        if self.tool_executions != self.tool_calls:
            found.append(f"tool executions {self.tool_executions} != tool calls {self.tool_calls}")
        return found + self.details

    def rows(self) -> list[tuple[str, ...]]:
        c = self.config
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        margin = min(self.retry_after_margin) if self.retry_after_margin else float("nan")
        return [
            ("measure", "value", "must be"),
            ("runs completed", f"{self.completed} / {c.runs}", str(c.runs)),
            ("model requests (runs' own turns)", f"{self.requests} ({self.own_turns})", ""),
            ("retries (requests that got an error)", str(self.retries), ""),
            ("  faults sent", kinds, ""),
            ("model turns answered twice", str(self.answered_twice), "0"),
            ("slow answers asked again", str(self.slow_reasked), "0"),
            ("429 retry-after honoured", f"{self.retry_after_honoured} / {self.retry_after_total}", "all"),
            ("  smallest gap - retry-after (s)", f"{margin:+.2f}", ">= 0"),
            ("gap after 5xx/drop/timeout, p50 / max (s)", fmt_seconds(self.backoff_gaps), ""),
            ("400/401: failed at once (requests)",
             f"{self.fatal_failed_at_once} / {len(FATAL)} ({self.fatal_requests})", f"{len(FATAL)} ({len(FATAL)})"),
            ("tool executions (calls)", f"{self.tool_executions} ({self.tool_calls})", "equal"),
            ("wall time (s)", f"{self.wall_seconds:.0f}", ""),
        ]


class FaultInjector:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self.storm_from = config.runs  # request index: after the first wave
        self.storm_to = self.storm_from + (config.storm if config.storm is not None else config.runs)

    def plan(self, tag: str, turn: int) -> list[tuple[str, float | None]]:
        index = int(tag[1:]) if tag[1:].isdigit() else 0
        return PLANS[KINDS[(index + turn) % len(KINDS)]]

    def __call__(self, tag: str, turn: int, attempt: int, index: int, reply: Reply) -> Reply:
        kind, retry_after = "ok", None
        if tag in FATAL:
            kind = f"fatal{FATAL[tag]}"
        elif self.storm_from <= index < self.storm_to:
            kind = "storm"
        else:
            plan = self.plan(tag, turn)
            if attempt < len(plan):
                kind, retry_after = plan[attempt]
        with self._lock:
            self.sent.append(Sent(tag, turn, attempt, kind, retry_after))
        c = self.config
        match kind:
            case "429":
                return replies.error(429, retry_after=retry_after)
            case "529" | "storm":
                return replies.error(529)
            case "500":
                return replies.error(500)
            case "drop":
                return replies.drop()
            case "slow":
                return replies.delay(c.slow_seconds, reply)
            case "hang":
                return replies.delay(c.hang_seconds, reply)
            case "fatal400":
                return replies.error(400, message="messages: bad request (injected)")
            case "fatal401":
                return replies.error(401)
        return reply


async def run_faults(config: FaultConfig) -> FaultReport:
    with suite_servers() as s:
        return await _run(config, s.server, s.llm, s.composio, s.fleet)


async def _run(
    config: FaultConfig, server: TemporalDevServer, llm: FakeAnthropic, composio: FakeComposio,
    fleet: Fleet,
) -> FaultReport:
    user = "faults-user"
    add_notes_tools(composio, [user])
    injector = FaultInjector(config)
    llm.responder = AgentScript(config.turns, [READ_ONLY_TOOL], injector)
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    env = worker_env(server.address, queue, llm, composio,
                     KRON_MODEL_TIMEOUT_SECONDS=str(config.model_timeout))
    await fleet.workers(env, config.workers)
    client = await connect(server.address)
    started = time.monotonic()
    deadline = started + config.timeout
    tags = [f"f{i:04d}" for i in range(config.runs)]

    async def start(tag: str) -> WorkflowHandle[Any, AgentRunResult]:
        return await client.start_workflow(
            names.AGENT_WORKFLOW,
            AgentRunInput(user_id=user, goal=goal_for(tag), toolkits=[TOOLKIT],
                          max_iterations=config.turns + 3),
            id=f"faults-{tag}-{uuid.uuid4().hex[:6]}", task_queue=queue, result_type=AgentRunResult,
        )

    all_tags = tags + list(FATAL)
    handles = dict(zip(all_tags, await bounded(16, [functools.partial(start, t) for t in all_tags]),
                       strict=True))
    outcomes = await asyncio.gather(*(result_of(handles[t], deadline) for t in all_tags))
    results = dict(zip(all_tags, outcomes, strict=True))
    report = FaultReport(
        config=config,
        statuses=status_counts(results[t] for t in tags),
        completed=completed(results[t] for t in tags),
        wall_seconds=time.monotonic() - started,
    )
    _account(report, config, injector, llm, composio, tags, results)
    return report


def _account(
    report: FaultReport, config: FaultConfig, injector: FaultInjector, llm: FakeAnthropic,
    composio: FakeComposio, tags: list[str], results: dict[str, AgentRunResult | None],
) -> None:
    sent = {(s.tag, s.turn, s.attempt): s for s in injector.sent}
    for s in injector.sent:
        if s.tag not in FATAL and s.kind not in ("ok",):
            report.by_kind[s.kind] = report.by_kind.get(s.kind, 0) + 1
    by_turn = requests_by_run(llm)
    for (tag, turn), requests in by_turn.items():
        if tag in FATAL:
            report.fatal_requests += len(requests)
            continue
        report.requests += len(requests)
        report.own_turns += 1
        kinds = [sent[(tag, turn, attempt)].kind if (tag, turn, attempt) in sent else "?"
                 for attempt in range(len(requests))]
        failed = [k in FAILED_KINDS or k == "storm" for k in kinds]
        report.retries += sum(failed)
        answered = sum(1 for k in kinds if k in ("ok", "slow"))
        report.answered_twice += max(0, answered - 1)
        report.slow_reasked += sum(1 for k in kinds[:-1] if k == "slow")  # a later request followed
        for attempt in range(len(requests) - 1):
            request, following = requests[attempt], requests[attempt + 1]
            info = sent.get((tag, turn, attempt))
            if info is None:
                continue
            # A dropped or timed-out call has no (useful) response time: measure from its start.
            ended = request.responded_at if info.kind in ("429", "529", "500", "storm") else None
            gap = following.received_at - (ended or request.received_at)
            if info.kind == "429" and info.retry_after is not None:
                report.retry_after_total += 1
                margin = gap - info.retry_after
                report.retry_after_margin.append(margin)
                if margin >= 0:
                    report.retry_after_honoured += 1
            elif info.kind in FAILED_KINDS or info.kind == "storm":
                report.backoff_gaps.append(gap)
        if "?" in kinds:
            report.details.append(f"{tag} turn {turn}: a request the injector did not see")
    for tag, status in FATAL.items():
        result = results.get(tag)
        if result is not None and result.status == RunStatus.FAILED and result.error is not None:
            report.fatal_failed_at_once += 1
        elif result is not None:
            report.details.append(f"{tag} (HTTP {status}) ended {result.status}: {result.error}")
    executions = executions_by_key(composio)
    report.tool_calls = len(tags) * config.turns
    report.tool_executions = sum(len(v) for k, v in executions.items() if k[0] in set(tags))


def main() -> None:
    parser = suite_parser(__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    config = FaultConfig(runs=args.runs, turns=args.turns, workers=args.workers, timeout=args.timeout)
    report = asyncio.run(run_faults(config))
    conclude(
        f"LLM faults: {config.runs} concurrent runs x {config.turns} turns on {config.workers} worker(s); "
        f"per run turn one of {', '.join(KINDS)}; a 529 storm over {injector_storm(config)} requests; "
        f"model timeout {config.model_timeout:.0f} s",
        report,
    )


def injector_storm(config: FaultConfig) -> int:
    return config.storm if config.storm is not None else config.runs


if __name__ == "__main__":
    main()
