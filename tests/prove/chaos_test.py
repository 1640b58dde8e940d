"""Chaos, short: 10 concurrent runs with read-only and unsafe tool calls, workers SIGKILLed at random
and a Temporal restart mid-way. Every run completes; no completed step is done again; no unsafe call
runs twice; every call whose outcome is unknown waits for (and gets) a human decision."""

from __future__ import annotations

from prove._common import table
from prove.chaos import ChaosConfig, run_chaos


async def test_chaos_nothing_lost_nothing_done_twice() -> None:
    # The restart comes first and kills follow every 1.5-3 s, while 0.5-1.5 s model replies keep
    # every run busy for several seconds: the disruptions land on runs in flight.
    report = await run_chaos(
        ChaosConfig(runs=10, turns=4, workers=3, kills=3, kill_every=(1.5, 3.0), restart_after_kills=0,
                    model_delay=(0.5, 1.5), tool_latency=0.8, timeout=150.0)
    )
    print("\n" + table(report.rows()))
    assert report.kills >= 1 and report.restarts == 1, f"the chaos did not happen: {report.rows()}"
    assert report.violations() == []
    assert report.completed == 10
    assert report.tool_completed_repeated == 0
    assert report.unsafe_executed_twice == 0
    assert report.model_completed_repeated == 0
    assert report.unknown_in_results == report.unknown_resolved
