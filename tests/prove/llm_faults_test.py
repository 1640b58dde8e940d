"""LLM faults, short: 429 bursts with retry-after, 529, 500, dropped connections, slow answers,
answers slower than the model timeout and a 529 storm. Every run completes, each model turn is
answered once, retry-after is honoured, 400/401 fail at once."""

from __future__ import annotations

from prove._common import table
from prove.llm_faults import KINDS, FaultConfig, run_faults


async def test_runs_ride_out_model_faults() -> None:
    report = await run_faults(FaultConfig(runs=len(KINDS), turns=2, storm=4, timeout=120.0))
    print("\n" + table(report.rows()))
    assert report.violations() == []
    assert report.retries > 0 and report.retry_after_total > 0
    assert {"429", "529", "500", "drop", "hang", "slow", "storm"} <= set(report.by_kind)
