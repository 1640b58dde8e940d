"""Declarative sync: make Temporal's schedules match a source's ScheduledRuns.

Level-triggered and idempotent: each pass reads the whole source, creates or updates what differs,
deletes what the source no longer has (only schedules carrying this source's id) and writes
statuses. Two controllers running at once converge on the same state (creates race to
ScheduleAlreadyRunning, which is treated as "exists"; deletes of missing schedules are no-ops).
A source that cannot be read changes nothing; a resource that turned invalid keeps its last good
schedule and reports why it is not Ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from kron.common.logging import get_logger
from kron.common.schedules import (
    ScheduleManagedElsewhere,
    ScheduleRejected,
    SchedulerUnavailable,
    ScheduleStore,
    ScheduleView,
    schedule_id,
    utcnow,
)
from kron.contracts.schedules import RunHistory, ScheduleLimits, limit_errors
from kron.scheduler.declared_agents import AgentSync
from kron.scheduler.metrics import SchedulerMetrics
from kron.scheduler.resources import DeclaredSchedule, render_status
from kron.scheduler.sources import DefinitionSource, SourceError

log = get_logger(__name__)


@dataclass
class SyncReport:
    ok: bool = True
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class ScheduleSync:
    def __init__(
        self,
        store: ScheduleStore,
        source: DefinitionSource,
        limits: ScheduleLimits,
        metrics: SchedulerMetrics,
        *,
        clock: Callable[[], datetime] = utcnow,
        agents: AgentSync | None = None,
    ) -> None:
        self.agents = agents  # the source's declared Agents, synced first (schedules may name them)
        self.store = store
        self.source = source
        self.limits = limits
        self.metrics = metrics
        self.clock = clock

    async def reconcile(self) -> SyncReport:
        report = SyncReport()
        if self.agents is not None:
            await self.agents.reconcile()
        try:
            declared = await self.source.load()
        except SourceError as error:
            log.warning("declarative source unreadable; nothing changed", source=self.source.source_id,
                        error=str(error))
            self.metrics.sync_passes.labels("error").inc()
            return SyncReport(ok=False, errors=[str(error)])

        keep: set[str] = set()  # schedule ids this source still claims (valid or not)
        for item in declared:
            sid = schedule_id(item.owner, item.name) if item.owner and item.name else None
            if sid is not None and sid in keep:
                await self._report(item, ready=False, reason="Conflict",
                                   message=f"another {self.source.source_id} resource has this user and name")
                self._count(report.conflicts, item, "conflict")
                continue
            if sid is not None:
                keep.add(sid)
            await self._apply(item, report)

        try:
            managed = await self.store.list_by_source(self.source.source_id)
            for summary in managed:
                if summary.schedule_id not in keep:
                    await self.store.delete(summary.schedule_id)
                    report.deleted.append(summary.schedule_id)
                    self.metrics.sync_actions.labels("deleted").inc()
        except Exception as error:  # noqa: BLE001 - reported; the next pass retries
            log.warning("deleting removed schedules failed", exc_type=type(error).__name__)
            report.errors.append(f"delete: {type(error).__name__}")

        report.ok = not report.errors
        self.metrics.sync_passes.labels("ok" if report.ok else "error").inc()
        self.metrics.managed.set(len(report.created) + len(report.updated) + len(report.unchanged))
        if report.changed or report.errors:
            log.info("schedules synced", source=self.source.source_id, created=len(report.created),
                     updated=len(report.updated), deleted=len(report.deleted), invalid=len(report.invalid),
                     conflicts=len(report.conflicts), errors=len(report.errors))
        return report

    async def run(self, stop: asyncio.Event, resync_seconds: float) -> None:
        """Reconcile now, then on every change the source reports and at least every
        `resync_seconds` (statuses, drift), until `stop` is set."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception as error:  # noqa: BLE001 - the loop must outlive one bad pass
                    log.error("sync pass failed", exc_type=type(error).__name__, exc_info=error)
                    self.metrics.sync_passes.labels("error").inc()
                changed = asyncio.create_task(self.source.wait_for_change(resync_seconds))
                await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not changed.done():
                    changed.cancel()
                elif not changed.cancelled() and changed.exception() is not None:
                    log.warning("waiting for source changes failed", exc_type=type(changed.exception()).__name__)
                    await asyncio.wait({stopping}, timeout=min(5.0, resync_seconds))
        finally:
            stopping.cancel()

    async def _apply(self, item: DeclaredSchedule, report: SyncReport) -> None:
        if item.definition is None or item.owner is None:
            self._count(report.invalid, item, "invalid")
            await self._report(item, ready=False, reason="Invalid", message=item.error or "invalid")
            return
        errors = limit_errors(item.definition, self.limits, self.clock(), loc=("spec",))
        if errors:
            message = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
            self._count(report.invalid, item, "invalid")
            await self._report(item, ready=False, reason="Invalid", message=message)
            return
        try:
            action, view = await self.store.apply(item.owner, item.definition, self.source.source_id)
        except ScheduleManagedElsewhere as elsewhere:
            self._count(report.conflicts, item, "conflict")
            await self._report(item, ready=False, reason="Conflict",
                               message=f"the user already has a schedule of this name (managed by {elsewhere.source})")
            return
        except ScheduleRejected as rejected:
            self._count(report.invalid, item, "invalid")
            await self._report(item, ready=False, reason="Invalid", message=f"Temporal refused it: {rejected}")
            return
        except Exception as error:  # noqa: BLE001 - one schedule's failure must not stop the others
            log.warning("applying a schedule failed", resource=item.ref.key, exc_type=type(error).__name__)
            report.errors.append(f"{item.ref.key}: {type(error).__name__}")
            self.metrics.sync_actions.labels("error").inc()
            await self._report(item, ready=False, reason="SyncError", message=f"{type(error).__name__}; retrying")
            return
        getattr(report, action).append(item.ref.key)
        self.metrics.sync_actions.labels(action).inc()
        await self._report(item, ready=True, reason="Synced", message="Temporal schedule is up to date", view=view)

    async def _report(
        self, item: DeclaredSchedule, *, ready: bool, reason: str, message: str, view: ScheduleView | None = None
    ) -> None:
        history: RunHistory | None = None
        if view is not None:
            try:
                history = await self.store.history(view.schedule_id)
            except SchedulerUnavailable:
                history = None
        status = render_status(item, ready=ready, reason=reason, message=message, now=self.clock(),
                               view=view, history=history)
        if status == item.status:
            return
        try:
            await self.source.report_status(item, status)
            item.status = status
        except Exception as error:  # noqa: BLE001 - statuses are best effort; the next pass retries
            log.warning("status update failed", resource=item.ref.key, exc_type=type(error).__name__)

    def _count(self, bucket: list[str], item: DeclaredSchedule, action: str) -> None:
        bucket.append(item.ref.key)
        self.metrics.sync_actions.labels(action).inc()
