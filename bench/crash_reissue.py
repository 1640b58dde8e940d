"""Recovery after a worker dies at turn k, and the work it repeats: kron (one activity per step) vs.
the reference design (the whole loop in one activity), on the same fake servers and agent loop.

Two workers poll the run's queue. A run of N turns (one tool call per turn, a model that takes
`--model-ms`) starts; when turn k's model call reaches a worker, that worker is killed (SIGKILL: a
crash; SIGTERM: a drain) after an offset spread evenly over 0..1.5x the model latency, so kills land
both during the call and just after its answer (when the dead worker may already hold the next workflow task). The
other worker finishes the run; a fresh worker replaces the dead one before the next kill. Each
worker has its own fake Anthropic server, which tells which worker had the call in flight.

kill -> resume: the kill to the next model request or tool execution anywhere (the surviving
worker's). kill -> done: the kill to the run's result. The fake servers count every request.

    ./pants run bench/crash_reissue.py -- --turns 10 --kill-at 5 --kills 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from _harness import ANTHROPIC_KEY, COMPOSIO_KEY, STEP_TOOL, add_step_tool, table
from kron.common import agent_runs
from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult, RunStatus
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic
from kron_testing.fake_composio import FakeComposio
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer
from reference_design import REFERENCE_WORKFLOW, WholeLoopInput

USER = "bench-user"
DESIGNS = {
    "kron": ("kron.worker.main", "kron-worker ready"),
    "reference": ("reference_worker", "reference-worker ready"),
}


@dataclass
class Kills:
    resume_s: list[float] = field(default_factory=list)
    done_s: list[float] = field(default_factory=list)
    reissued_model_calls: int = 0
    repeated_tool_calls: int = 0


class Pool:
    """Two worker slots, each with its own fake Anthropic; a killed slot gets a fresh worker."""

    def __init__(self, design: str, server: TemporalDevServer, composio: FakeComposio,
                 llms: list[FakeAnthropic]) -> None:
        self.module, self.marker = DESIGNS[design]
        self.queue = f"bench-{design}-{uuid.uuid4().hex[:6]}"
        self.llms = llms
        self.envs = [{
            "KRON_TEMPORAL_ADDRESS": server.address, "KRON_TASK_QUEUE": self.queue,
            "KRON_METRICS_PORT": "0", "KRON_LOG_LEVEL": "WARNING",
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": llm.base_url,
            "COMPOSIO_API_KEY": COMPOSIO_KEY, "COMPOSIO_BASE_URL": composio.base_url,
        } for llm in llms]
        self.workers: list[KronProcess | None] = [None, None]

    def fill(self) -> None:
        started = [(i, KronProcess(self.module, self.envs[i], self.marker))
                   for i, w in enumerate(self.workers) if w is None or w.process.poll() is not None]
        for i, worker in started:
            self.workers[i] = worker.wait_ready(timeout=300)  # a loaded box starts workers slowly

    def close(self) -> None:
        for worker in self.workers:
            if worker is not None:
                worker.kill()


async def start(client: Client, design: str, queue: str, toolkit: str, turns: int) -> Any:
    if design == "kron":
        # The same start options as the gateway and the scheduler give a run.
        return await client.start_workflow(
            names.AGENT_WORKFLOW,
            AgentRunInput(user_id=USER, goal="bench", toolkits=[toolkit], max_iterations=turns + 5),
            id=f"bench-{uuid.uuid4()}", task_queue=queue, result_type=AgentRunResult,
            task_timeout=agent_runs.RUN_TASK_TIMEOUT,
        )
    return await client.start_workflow(
        REFERENCE_WORKFLOW,
        WholeLoopInput(user_id=USER, goal="bench", toolkits=[toolkit], max_iterations=turns + 5),
        id=f"bench-{uuid.uuid4()}", task_queue=queue, result_type=AgentRunResult)


async def slot_at_turn(llms: list[FakeAnthropic], turn: int, after: list[int]) -> int:
    """The slot whose fake received this run's call for `turn` (requests past `after[i]`)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for i, llm in enumerate(llms):
            if any(r.turn == turn for r in llm.requests[after[i]:]):
                return i
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no model call for turn {turn}")


def first_after(moment: float, llms: list[FakeAnthropic], composio: FakeComposio) -> float | None:
    times = [r.received_at for llm in llms for r in llm.requests if r.received_at > moment]
    times += [e.time for e in composio.executions if e.time > moment]
    return min(times, default=None)


async def kill_once(client: Client, design: str, pool: Pool, composio: FakeComposio, toolkit: str,
                    turns: int, kill_at: int, offset_s: float, sig: signal.Signals, into: Kills) -> None:
    pool.fill()
    llm_before = [llm.request_count for llm in pool.llms]
    tools_before = composio.execution_count()
    handle = await start(client, design, pool.queue, toolkit, turns)
    slot = await slot_at_turn(pool.llms, kill_at, llm_before)
    await asyncio.sleep(offset_s)
    victim = pool.workers[slot]
    assert victim is not None
    victim.process.send_signal(sig)
    killed = time.monotonic()
    result = await handle.result()
    done = time.monotonic()
    assert result.status == RunStatus.COMPLETED, result
    resumed = first_after(killed, pool.llms, composio)
    assert resumed is not None
    await asyncio.to_thread(victim.process.wait, 120)
    into.resume_s.append(resumed - killed)
    into.done_s.append(done - killed)
    into.reissued_model_calls += sum(
        llm.request_count - n for llm, n in zip(pool.llms, llm_before, strict=True)) - (turns + 1)
    into.repeated_tool_calls += composio.execution_count() - tools_before - turns


async def main(turns: int, kill_at: int, kills: int, model_ms: int, designs: list[str]) -> None:
    composio = FakeComposio(api_key=COMPOSIO_KEY).start()
    toolkit = add_step_tool(composio, USER)
    script = replies.scripted_agent(turns, STEP_TOOL)

    def responder(body: dict, index: int) -> replies.Reply:  # type: ignore[type-arg]
        return replies.delay(model_ms / 1000, script(body, index))

    llms = [FakeAnthropic(api_key=ANTHROPIC_KEY).start() for _ in range(2)]
    for llm in llms:
        llm.responder = responder
    # The same kill offsets for every design and signal (only the design differs), spread evenly.
    offsets = [(i + 0.5) / kills * 1.5 * model_ms / 1000 for i in range(kills)]
    results: dict[tuple[str, str], Kills] = {}
    with TemporalDevServer() as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        for design in designs:
            pool = Pool(design, server, composio, llms)
            try:
                for sig in (signal.SIGKILL, signal.SIGTERM):
                    kills_ = results[(design, sig.name)] = Kills()
                    for offset in offsets:
                        await kill_once(client, design, pool, composio, toolkit, turns, kill_at,
                                        offset, sig, kills_)
                        print(f"  {design} {sig.name} +{offset * 1000:.0f} ms: resume "
                              f"{kills_.resume_s[-1]:.2f} s, done {kills_.done_s[-1]:.2f} s",
                              file=sys.stderr, flush=True)
            finally:
                pool.close()
    for llm in llms:
        llm.stop()
    composio.stop()

    print(f"\nWorker killed during turn {kill_at} of a {turns}-turn run (1 tool call per turn, "
          f"{model_ms} ms model), 0..{1.5 * model_ms:.0f} ms after the call reached it; "
          f"2 workers; {kills} kills per row\n")
    rows: list[tuple[str, ...]] = [("design", "signal", "kill->resume p50/max (s)",
                                    "kill->done p50/max (s)", "model calls re-issued",
                                    "tool calls repeated")]
    for (design, sig_name), k in results.items():
        rows.append((design, sig_name,
                     f"{statistics.median(k.resume_s):.2f} / {max(k.resume_s):.2f}",
                     f"{statistics.median(k.done_s):.2f} / {max(k.done_s):.2f}",
                     str(k.reissued_model_calls), str(k.repeated_tool_calls)))
    print(table(rows))
    print("\n(re-issued and repeated: totals over the row's kills, beyond each run's own calls. kron: one "
          "activity per step; reference: the whole loop in one activity, which resumes only after its "
          f"activity timeout, {os.environ.get('BENCH_LOOP_TIMEOUT', '15')} s here (the reference system "
          "used 30 min); its worker has no drain, so SIGTERM ends it like a crash.)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--kill-at", type=int, default=5)
    parser.add_argument("--kills", type=int, default=10, help="kills per design and signal")
    parser.add_argument("--model-ms", type=int, default=300)
    parser.add_argument("--design", choices=sorted(DESIGNS), action="append",
                        help="only this design (repeatable); default both")
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.kill_at, args.kills, args.model_ms,
                     args.design or list(DESIGNS)))
    sys.stdout.flush()  # os._exit skips the flush a piped stdout needs
    os._exit(0)
