"""The declarative sync with the local YAML source against a real Temporal server: create, update
and delete, idempotent and safe with two controllers at once; invalid and unreadable input changes
nothing it should not."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

from kron.common.schedules import ScheduleNotFound, schedule_id
from kron.contracts.schedules import ConcurrencyPolicy, FireOutcome
from kron.scheduler.sources import YamlFileSource
from kron.scheduler.sync import ScheduleSync

from .conftest import Scheduler, definition, unique


def scheduled_run(name: str, user: str, cron: str = "0 8 * * 1-5", policy: str = "Forbid", **run: object) -> str:
    run_fields = {"goal": "Summarise my unread GitHub notifications", **run}
    return textwrap.dedent(f"""\
        apiVersion: kron.dev/v1alpha1
        kind: ScheduledRun
        metadata:
          name: {name}
          namespace: team-a
          generation: 1
        spec:
          user: {user}
          timing:
            cron: ["{cron}"]
            timezone: Europe/Paris
          run: {json.dumps(run_fields)}
          concurrencyPolicy: {policy}
          maxRunHistory: 5
        """)


def write(path: Path, *documents: str) -> None:
    path.write_text("---\n".join(documents))


def sync_for(scheduler: Scheduler, path: Path, source_id: str) -> ScheduleSync:
    source = YamlFileSource(path, source_id=source_id, status_path=path.with_suffix(".status.json"))
    return ScheduleSync(scheduler.store, source, scheduler.settings.limits, scheduler.metrics)


async def test_yaml_source_syncs_create_update_delete_idempotently(scheduler: Scheduler, tmp_path: Path) -> None:
    path, user, source_id = tmp_path / "runs.yaml", scheduler.user, unique("yaml")
    digest, standup = unique("digest"), unique("standup")
    write(path, scheduled_run(digest, user), scheduled_run(standup, user, cron="30 9 * * *", policy="Allow"))
    sync = sync_for(scheduler, path, source_id)

    first = await sync.reconcile()
    assert first.ok and sorted(first.created) == sorted([f"team-a/{digest}", f"team-a/{standup}"])
    view = await scheduler.store.get_owned(user, digest)
    assert view.source == source_id and view.definition.timing.cron == ["0 8 * * 1-5"]
    assert view.definition.timing.timezone == "Europe/Paris" and view.next_run_times
    assert view.next_run_times[0].astimezone().minute == 0

    # Safe to run twice, and with two controllers at once (a rolling deploy).
    again, other = await asyncio.gather(sync.reconcile(), sync_for(scheduler, path, source_id).reconcile())
    assert again.ok and other.ok and not again.changed and not other.changed
    assert len(again.unchanged) == 2

    # Statuses: Ready, the Temporal schedule and the next run.
    statuses = json.loads(path.with_suffix(".status.json").read_text())
    status = statuses[f"team-a/{digest}"]
    assert status["conditions"][0]["status"] == "True" and status["conditions"][0]["reason"] == "Synced"
    assert status["scheduleId"] == view.schedule_id and status["nextRunTime"].endswith("Z")
    assert status["observedGeneration"] == 1 and status["runHistory"] == []

    # Update one, delete the other.
    write(path, scheduled_run(digest, user, cron="0 9 * * 1-5", policy="Replace"))
    changed = await sync.reconcile()
    assert changed.updated == [f"team-a/{digest}"] and changed.deleted == [schedule_id(user, standup)]
    view = await scheduler.store.get_owned(user, digest)
    assert view.definition.timing.cron == ["0 9 * * 1-5"]
    assert view.definition.concurrency_policy is ConcurrencyPolicy.REPLACE
    try:
        await scheduler.store.get_owned(user, standup)
        raise AssertionError("deleted schedule still there")
    except ScheduleNotFound:
        pass
    settled = await sync.reconcile()
    assert not settled.changed and settled.unchanged == [f"team-a/{digest}"]

    # Everything removed from the file: everything this source made goes (and only that).
    api_view = await scheduler.create(definition())
    write(path, "")
    emptied = await sync.reconcile()
    assert emptied.deleted == [view.schedule_id]
    assert (await scheduler.store.get(api_view.schedule_id)).source == "api"


async def test_invalid_or_unreadable_definitions_change_nothing(scheduler: Scheduler, tmp_path: Path) -> None:
    path, user, source_id = tmp_path / "runs.yaml", scheduler.user, unique("yaml")
    name = unique("digest")
    write(path, scheduled_run(name, user))
    sync = sync_for(scheduler, path, source_id)
    assert (await sync.reconcile()).created == [f"team-a/{name}"]

    # An invalid edit keeps the last good schedule and says why it is not Ready.
    write(path, scheduled_run(name, user, cron="61 8 * * *"), scheduled_run("Bad_Name", user))
    report = await sync.reconcile()
    assert report.ok and sorted(report.invalid) == sorted([f"team-a/{name}", "team-a/Bad_Name"])
    assert not report.deleted
    assert (await scheduler.store.get_owned(user, name)).definition.timing.cron == ["0 8 * * 1-5"]
    status = json.loads(path.with_suffix(".status.json").read_text())[f"team-a/{name}"]
    ready = status["conditions"][0]
    assert ready["status"] == "False" and ready["reason"] == "Invalid"
    assert "minute: 61 is out of range 0-59" in ready["message"]

    # Not YAML, or no file at all: the pass fails and deletes nothing.
    path.write_text("spec: [unclosed")
    assert not (await sync.reconcile()).ok
    path.unlink()
    assert not (await sync.reconcile()).ok
    assert await scheduler.store.get_owned(user, name)


async def test_a_name_taken_through_the_api_is_a_conflict(scheduler: Scheduler, tmp_path: Path) -> None:
    path, user = tmp_path / "runs.yaml", scheduler.user
    name = unique("digest")
    api_view = await scheduler.create(definition(name))
    write(path, scheduled_run(name, user))
    report = await sync_for(scheduler, path, unique("yaml")).reconcile()
    assert report.conflicts == [f"team-a/{name}"] and not report.created
    assert (await scheduler.store.get(api_view.schedule_id)).source == "api"


async def test_synced_schedules_fire_and_report_their_history(scheduler: Scheduler, tmp_path: Path) -> None:
    path, user = tmp_path / "runs.yaml", scheduler.user
    name = unique("digest")
    write(path, scheduled_run(name, user, policy="Allow"))
    sync = sync_for(scheduler, path, unique("yaml"))
    await sync.reconcile()
    view = await scheduler.store.get_owned(user, name)
    await scheduler.store.trigger(view)
    await scheduler.wait_for_history(view, lambda rs: len(rs) == 1 and rs[0].outcome is FireOutcome.SUCCEEDED)

    await sync.reconcile()
    status = json.loads(path.with_suffix(".status.json").read_text())[f"team-a/{name}"]
    assert status["runHistory"][0]["outcome"] == "succeeded" and status["runHistory"][0]["dispatch"] == "started"
    assert status["runHistory"][0]["usage"]["inputTokens"] == 11
    assert status["lastRunTime"] and status["active"] == []
