"""Abuse, short: hostile bodies, JWT attacks, other users' ids, dispatch flooding, cron abuse (when the
gateway serves /schedules) and a short schemathesis fuzz against a gateway process with a worker
behind it; then no secret in any log, history or /metrics output."""

from __future__ import annotations

from prove._common import table
from prove.abuse import AbuseConfig, run_abuse


async def test_hostile_requests_are_refused_and_no_secret_leaks() -> None:
    report = await run_abuse(AbuseConfig(fuzz=60))
    print("\n" + table(report.rows()))
    for observation in report.observations:
        print(f"observation: {observation}")
    assert report.violations() == []
    assert report.control_found and not report.leaks
