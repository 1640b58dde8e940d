"""What kron's cron validation accepts, Temporal accepts and reads the same way."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from temporalio.client import Client, ScheduleCalendarSpec, ScheduleRange

from kron.common.schedules import ScheduleSettings, ScheduleStore
from kron.contracts.schedules import ScheduleDefinition, parse_cron

EXPRESSIONS = [
    "0 8 * * 1-5",
    "*/15 9-17 * * MON-FRI",
    "5/20 0 1,15 JAN-MAR *",
    "0 12 * * 5-7",
    "30 23 28-31 * *",
    "0 0 * * 0",
    "@hourly",
    "@yearly",
]


def values(ranges: Sequence[ScheduleRange], high: int) -> set[int]:
    found: set[int] = set()
    for r in ranges:
        found.update(range(r.start, (r.end or r.start) + 1, r.step or 1))
    return {v for v in found if v <= high}


@pytest.mark.parametrize("expression", EXPRESSIONS)
async def test_temporal_reads_accepted_cron_the_same_way(client: Client, expression: str) -> None:
    store = ScheduleStore(client, ScheduleSettings(scheduler_task_queue=f"parity-{uuid.uuid4().hex[:8]}"))
    definition = ScheduleDefinition.model_validate(
        {"name": f"parity-{uuid.uuid4().hex[:8]}", "timing": {"cron": [expression], "timezone": "America/New_York"},
         "run": {"goal": "g"}, "suspend": True}
    )
    view = await store.create("parity-user", definition)
    try:
        description = await client.get_schedule_handle(view.schedule_id).describe()
        [calendar] = description.schedule.spec.calendars
        assert isinstance(calendar, ScheduleCalendarSpec)
        minutes, hours, days, months, weekdays = parse_cron(expression)
        assert values(calendar.minute, 59) == minutes
        assert values(calendar.hour, 23) == hours
        assert values(calendar.day_of_month, 31) == days
        assert values(calendar.month, 12) == months
        assert values(calendar.day_of_week, 6) == weekdays
        assert description.schedule.spec.time_zone_name == "America/New_York"
        assert view.definition.timing.cron == [expression]  # kron keeps the expression as written
        assert description.schedule.policy.catchup_window == timedelta(minutes=10)
    finally:
        await store.delete(view.schedule_id)
