from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from kron.contracts.schedules import (
    CronError,
    ScheduleDefinition,
    ScheduleLimits,
    ScheduleTiming,
    cron_min_gap_seconds,
    limit_errors,
    parse_cron,
)


@pytest.mark.parametrize(
    ("expression", "minutes", "hours", "days", "months", "weekdays"),
    [
        ("0 8 * * 1-5", {0}, {8}, set(range(1, 32)), set(range(1, 13)), {1, 2, 3, 4, 5}),
        ("*/15 9-17/4 1,15 JAN-MAR mon,FRI", {0, 15, 30, 45}, {9, 13, 17}, {1, 15}, {1, 2, 3}, {1, 5}),
        ("5/20 0 * * 5-7", {5, 25, 45}, {0}, set(range(1, 32)), set(range(1, 13)), {5, 6, 0}),
        ("@daily", {0}, {0}, set(range(1, 32)), set(range(1, 13)), set(range(7))),
        ("@WEEKLY", {0}, {0}, set(range(1, 32)), set(range(1, 13)), {0}),
    ],
)
def test_parse_cron(
    expression: str, minutes: set[int], hours: set[int], days: set[int], months: set[int], weekdays: set[int]
) -> None:
    assert parse_cron(expression) == [minutes, hours, days, months, weekdays]


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "empty"),
        ("0 8 * *", "expected 5 fields"),
        ("0 0 8 * * *", "expected 5 fields"),  # no seconds field
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week: 8 is out of range 0-7"),
        ("0 0 * FOO *", "month: 'FOO' is not a number or a name"),
        ("*/0 * * * *", "minute: step must be at least 1"),
        ("10-5 * * * *", "goes backwards"),
        ("0 0 ? * *", "'?' is not supported; use '*'"),
        ("0 0 L * *", "day of month: 'L' is not a number"),
        ("@every 5m", "use interval_seconds"),
        ("@fortnightly", "unknown macro"),
        ("CRON_TZ=Europe/Paris 0 8 * * *", "timezone field"),
    ],
)
def test_invalid_cron_says_what_is_wrong(expression: str, says: str) -> None:
    with pytest.raises(CronError, match=None) as raised:
        parse_cron(expression)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("expression", "gap_minutes"),
    [
        ("* * * * *", 1),
        ("*/5 * * * *", 5),
        ("0,59 * * * *", 1),  # 10:59 then 11:00
        ("0 * * * *", 60),
        ("0 8 * * 1-5", 24 * 60),
        ("0 8,20 * * *", 12 * 60),
        ("30 23,0 * * *", 60),  # 23:30 then 00:30 the next day
    ],
)
def test_cron_min_gap(expression: str, gap_minutes: int) -> None:
    assert cron_min_gap_seconds(expression) == gap_minutes * 60


def timing(**fields: Any) -> ScheduleTiming:
    return ScheduleTiming.model_validate(fields)


def test_timing_needs_exactly_one_of_cron_and_interval() -> None:
    for fields in ({}, {"cron": ["0 8 * * *"], "interval_seconds": 60}):
        with pytest.raises(ValidationError, match="exactly one"):
            timing(**fields)
    assert timing(interval_seconds=300).min_gap_seconds() == 300
    assert timing(cron=["0 8 * * *", "*/10 * * * *"]).min_gap_seconds() == 600


def test_timing_rejects_unknown_timezones_and_backwards_windows() -> None:
    with pytest.raises(ValidationError, match="unknown timezone 'Europe/Atlantis'"):
        timing(cron=["0 8 * * *"], timezone="Europe/Atlantis")
    with pytest.raises(ValidationError, match="cron\\[1\\] '0 8 \\* \\*': expected 5 fields"):
        timing(cron=["0 8 * * *", "0 8 * *"])
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="end_at must be after start_at"):
        timing(interval_seconds=60, start_at=now, end_at=now - timedelta(hours=1))
    with pytest.raises(ValidationError, match="timezone"):
        timing(interval_seconds=60, start_at=datetime(2030, 1, 1))  # naive: ambiguous


def test_toolkits_are_normalised() -> None:
    definition = ScheduleDefinition.model_validate(
        {"name": "digest", "timing": {"interval_seconds": 3600},
         "run": {"goal": "g", "toolkits": ["GitHub", "github", "slack"]}}
    )
    assert definition.run.toolkits == ["github", "slack"]


@pytest.mark.parametrize("name", ["Digest", "-digest", "digest-", "a" * 64, "with_underscore", ""])
def test_names_are_dns_labels(name: str) -> None:
    with pytest.raises(ValidationError):
        ScheduleDefinition.model_validate({"name": name, "timing": {"interval_seconds": 60}, "run": {"goal": "g"}})


def test_limit_errors() -> None:
    now = datetime.now(UTC)
    definition = ScheduleDefinition.model_validate(
        {"name": "digest", "timing": {"interval_seconds": 30, "end_at": (now - timedelta(minutes=1)).isoformat()},
         "run": {"goal": "g"}, "max_run_history": 500}
    )
    errors = limit_errors(definition, ScheduleLimits(min_interval_seconds=60, max_run_history=100), now, ("body",))
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "timing", "interval_seconds"], "interval_too_short"),
        (["body", "max_run_history"], "less_than_equal"),
        (["body", "timing", "end_at"], "past"),
    ]
    assert "fires every 30 s at the shortest; the minimum is 60 s" in errors[0]["msg"]
    ok = definition.model_copy(update={"timing": timing(interval_seconds=60), "max_run_history": 100})
    assert limit_errors(ok, ScheduleLimits(min_interval_seconds=60, max_run_history=100), now) == []


@pytest.mark.parametrize("field", ["start_at", "end_at"])
@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
def test_times_outside_what_utc_can_hold_are_refused(field: str, when: str) -> None:
    # Valid aware datetimes whose UTC instant is before year 1 or after 9999: Temporal cannot take
    # them (converting overflows), so validation refuses them.
    with pytest.raises(ValidationError, match=f"{field}\n.*out of range"):
        ScheduleTiming.model_validate({"interval_seconds": 60, field: when})
    fine = ScheduleTiming.model_validate({"interval_seconds": 60, field: "9999-12-31T23:59:59+01:00"})
    assert getattr(fine, field).year == 9999


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("max_run_history",), "10"),
        (("max_run_history",), True),
        (("suspend",), "true"),
        (("suspend",), 1),
        (("timing", "interval_seconds"), "3600"),
        (("timing", "jitter_seconds"), False),
        (("run", "max_iterations"), "5"),
        (("run", "token_budget"), True),
        (("run", "timeout_seconds"), 3600.0),
    ],
)
def test_numbers_and_booleans_are_not_coerced(path: tuple[str, ...], value: Any) -> None:
    body: dict[str, Any] = {"name": "digest", "timing": {"interval_seconds": 3600}, "run": {"goal": "g"}}
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError, match=path[-1]):
        ScheduleDefinition.model_validate(body)
    # The same body as JSON (what the API parses) is refused alike.
    with pytest.raises(ValidationError, match=path[-1]):
        ScheduleDefinition.model_validate_json(json.dumps(body))
