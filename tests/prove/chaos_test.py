"""Chaos, short: 10 concurrent runs with read-only and unsafe tool calls, workers SIGKILLed at random
and a Temporal restart mid-way. Every run completes; no completed step is done again; no unsafe call
runs twice; every call whose outcome is unknown waits for (and gets) a human decision."""

from __future__ import annotations

from prove._common import table
from prove.chaos import ChaosConfig, run_chaos


async def test_chaos_nothing_lost_nothing_done_twice() -> None:
    report = await run_chaos(
        ChaosConfig(runs=10, turns=3, workers=3, kills=3, kill_every=(2.0, 4.0), restart_after_kills=1,
                    timeout=150.0)
    )
    print("\n" + table(report.rows()))
    assert report.kills >= 2 and report.restarts == 1, "the chaos did not happen"
    assert report.violations() == []
    assert report.completed == 10
    assert report.tool_completed_repeated == 0
    assert report.unsafe_executed_twice == 0
    assert report.model_completed_repeated == 0
    assert report.unknown_in_results == report.unknown_resolved
