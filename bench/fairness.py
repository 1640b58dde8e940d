"""Fair sharing: user A dispatches many runs, then user B a few, one worker. B's time from dispatch
to its first model call, p50/p99, with task-queue fairness (kron's Temporal config) vs without
(the same server config with fairness off: one partition, i.e. FIFO; and Temporal's default of
four partitions), and vs B alone on an idle system.

Each configuration gets its own Temporal dev server; the worker is in-process with `--slots`
activity slots; each model call takes `--model-seconds` at the fake Anthropic server (one call per
run). The scenario is kron_testing.fairness_scenario (its test: tests/integration/fairness_test.py).
Prints figures; asserts nothing.

    PYTHONPATH=src/python:tests python bench/fairness.py --a-runs 500 --b-runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # kron_testing

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from _harness import ANTHROPIC_KEY, COMPOSIO_KEY, fakes
from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.cli.up.temporal import FAIRNESS_CONFIG_KEY
from kron.common.logging import configure_logging
from kron.worker.activities import AgentActivities
from kron_testing.fairness_scenario import Outcome, starvation
from kron_testing.temporal_server import TemporalDevServer

CONFIGS = {
    "fairness (kron's config)": [],
    "no fairness, 1 partition": [f"{FAIRNESS_CONFIG_KEY}=false"],
    "no fairness, 4 partitions": [
        f"{FAIRNESS_CONFIG_KEY}=false",
        "matching.numTaskqueueReadPartitions=4",
        "matching.numTaskqueueWritePartitions=4",
    ],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_config(dynamic_config: list[str], args: argparse.Namespace, *, idle: bool) -> list[Outcome]:
    llm, composio = fakes()
    try:
        with TemporalDevServer(dynamic_config=dynamic_config) as server:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            activities = AgentActivities(
                AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=llm.base_url, max_retries=0),
                ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio.base_url),
                default_model="claude-sonnet-5",
            )
            outcomes = []
            for _ in range(args.rounds):
                outcomes.append(await starvation(
                    client, activities, llm, a_runs=0 if idle else args.a_runs, b_runs=args.b_runs,
                    slots=args.slots, model_seconds=args.model_seconds,
                ))
            await activities.aclose()
            return outcomes
    finally:
        llm.stop()
        composio.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-runs", type=int, default=500)
    parser.add_argument("--b-runs", type=int, default=5)
    parser.add_argument("--slots", type=int, default=4, help="the worker's activity slots")
    parser.add_argument("--model-seconds", type=float, default=0.1, help="each model call's duration")
    parser.add_argument("--rounds", type=int, default=1, help="scenarios per configuration (more B samples)")
    args = parser.parse_args()
    configure_logging("ERROR")  # a line per model call would drown the figures
    backlog = args.a_runs * args.model_seconds / args.slots
    print(f"A: {args.a_runs} runs, B: {args.b_runs} runs, {args.slots} slots, {args.model_seconds:g} s per "
          f"model call (A's backlog ≈ {backlog:.1f} s of work), {args.rounds} round(s)\n")

    idle = await run_config([], args, idle=True)
    idle_waits = [w for o in idle for w in o.b_waits]
    idle_p50 = statistics.median(idle_waits)
    print(f"{'configuration':<28} {'B p50 ms':>9} {'B p99 ms':>9} {'p50/idle':>9} {'A calls before B':>17}")
    print(f"{'B alone, idle (fairness)':<28} {idle_p50 * 1000:>9.0f} {percentile(idle_waits, 0.99) * 1000:>9.0f} "
          f"{1.0:>9.1f} {'-':>17}")
    for name, dynamic_config in CONFIGS.items():
        outcomes = await run_config(dynamic_config, args, idle=False)
        waits = [w for o in outcomes for w in o.b_waits]
        before = "/".join(str(o.a_calls_before_b) for o in outcomes)
        p50 = statistics.median(waits)
        print(f"{name:<28} {p50 * 1000:>9.0f} {percentile(waits, 0.99) * 1000:>9.0f} {p50 / idle_p50:>9.1f} "
              f"{before:>17}")


if __name__ == "__main__":
    asyncio.run(main())
