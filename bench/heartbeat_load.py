"""What heartbeats cost the Temporal server: its CPU while N activities are in flight, each
heartbeating as kron's steps do (`kron.worker.activities.heartbeating`), for the old and the new
heartbeat timeout/cadence, against the same N activities without heartbeats, same server, same run.

The SDK sends a step's heartbeats to the server at most once per 0.8 x its heartbeat timeout,
whatever the cadence; the figure to watch is server CPU per heartbeat RPC and in all.

    ./pants run bench/heartbeat_load.py -- --in-flight 500 --window 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from _harness import table
from kron.worker.activities import heartbeating
from kron_testing.temporal_server import TemporalDevServer

ACTIVITIES_PER_WORKFLOW = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cadence:
    name: str
    heartbeat_timeout_s: float | None  # None: no heartbeats at all
    interval_s: float


@dataclass
class HoldInput:
    hold_s: float
    interval_s: float | None


@dataclass
class FanOut:
    activities: int
    hold_s: float
    heartbeat_timeout_s: float | None
    interval_s: float


class Counter:
    started = 0


@activity.defn(name="bench-hold")
async def hold(input: HoldInput) -> None:
    Counter.started += 1
    if input.interval_s is None:
        await asyncio.sleep(input.hold_s)
        return
    async with heartbeating(input.interval_s):
        await asyncio.sleep(input.hold_s)


@workflow.defn(name="bench-fan-out")
class FanOutWorkflow:
    @workflow.run
    async def run(self, input: FanOut) -> None:
        timeout = timedelta(seconds=input.heartbeat_timeout_s) if input.heartbeat_timeout_s else None
        interval = input.interval_s if input.heartbeat_timeout_s else None
        await asyncio.gather(*(
            workflow.execute_activity(hold, HoldInput(input.hold_s, interval),
                                      start_to_close_timeout=timedelta(seconds=input.hold_s + 60),
                                      heartbeat_timeout=timeout)
            for _ in range(input.activities)
        ))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def measure(client: Client, server_pid: int, cadence: Cadence, in_flight: int,
                  window_s: float) -> tuple[float, float]:
    """(server CPU cores, worker CPU cores) while `in_flight` activities hold."""
    queue = f"bench-hb-{uuid.uuid4().hex[:6]}"
    Counter.started = 0
    hold_s = window_s + 15
    # Unsandboxed: the fan-out workflow is trivial, and this module imports the worker's activities.
    async with Worker(client, task_queue=queue, workflows=[FanOutWorkflow], activities=[hold],
                      max_concurrent_activities=in_flight + 10,
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handles = [
            await client.start_workflow(
                FanOutWorkflow.run,
                FanOut(ACTIVITIES_PER_WORKFLOW, hold_s, cadence.heartbeat_timeout_s, cadence.interval_s),
                id=f"bench-hb-{uuid.uuid4()}", task_queue=queue)
            for _ in range(in_flight // ACTIVITIES_PER_WORKFLOW)
        ]
        while Counter.started < in_flight:
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # past the first heartbeat of every activity
        server_0, worker_0, wall_0 = cpu_seconds(server_pid), time.process_time(), time.monotonic()
        await asyncio.sleep(window_s)
        server_1, worker_1, wall_1 = cpu_seconds(server_pid), time.process_time(), time.monotonic()
        await asyncio.gather(*(h.result() for h in handles))
    wall = wall_1 - wall_0
    return (server_1 - server_0) / wall, (worker_1 - worker_0) / wall


async def main(in_flight: int, window_s: float, old: Cadence, new: Cadence) -> None:
    cadences = [Cadence("no heartbeats", None, 0), old, new]
    rows: list[tuple[str, ...]] = [("heartbeats", "RPC/s sent (at most)", "server CPU (cores)",
                                    "worker CPU (cores)")]
    with TemporalDevServer() as server:
        assert server.process is not None
        client = await Client.connect(server.address)
        figures = {}
        for cadence in cadences:
            figures[cadence.name] = await measure(client, server.process.pid, cadence, in_flight, window_s)
    for cadence in cadences:
        server_cpu, worker_cpu = figures[cadence.name]
        rate = 0.0 if cadence.heartbeat_timeout_s is None else in_flight / max(
            cadence.interval_s, 0.8 * cadence.heartbeat_timeout_s)
        rows.append((cadence.name, f"{rate:.0f}", f"{server_cpu:.2f}", f"{worker_cpu:.2f}"))
    print(f"\n{in_flight} activities in flight for {window_s:.0f} s, {ACTIVITIES_PER_WORKFLOW} per "
          f"workflow, one dev server (sqlite), {os.cpu_count()} cores\n")
    print(table(rows))
    base = figures[cadences[0].name][0]
    extra_old, extra_new = figures[old.name][0] - base, figures[new.name][0] - base
    print(f"\nserver CPU for heartbeats: old {extra_old:.3f} cores, new {extra_new:.3f} cores "
          f"({extra_new / extra_old:.2f}x the old)" if extra_old > 0 else "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--old", type=float, nargs=2, default=[5.0, 1.0], metavar=("TIMEOUT", "EVERY"))
    parser.add_argument("--new", type=float, nargs=2, default=[2.0, 0.5], metavar=("TIMEOUT", "EVERY"))
    args = parser.parse_args()
    asyncio.run(main(args.in_flight, args.window,
                     Cadence(f"old: timeout {args.old[0]:g} s, every {args.old[1]:g} s", *args.old),
                     Cadence(f"new: timeout {args.new[0]:g} s, every {args.new[1]:g} s", *args.new)))
    sys.stdout.flush()  # os._exit skips the flush a piped stdout needs
    os._exit(0)  # skip interpreter teardown after an in-process worker (sdk-python#300)
