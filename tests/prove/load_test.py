"""Load, short: runs dispatched through a gateway process against 1 and 2 workers all complete with no
dispatch error; one worker holds 60 blocked runs in flight at once well within 512 MiB."""

from __future__ import annotations

from prove._common import table
from prove.load import LoadConfig, run_load


async def test_dispatch_through_the_gateway_and_hold_runs_in_flight() -> None:
    report = await run_load(
        LoadConfig(runs=25, worker_counts=(1, 2), concurrency=8, users=5, hold=60, timeout=120.0)
    )
    print("\n" + table(report.rows()))
    assert report.violations() == []
    assert report.hold is not None and report.hold.in_flight == 60
