"""The scheduler's Prometheus metrics. Labels are fixed vocabularies: no user, schedule or task ids."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from kron.contracts.schedules import DispatchStatus, FireOutcome, FireTrigger

# A fire is late by Temporal's dispatch plus the jitter the schedule asked for (up to an hour).
LAG_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
SYNC_ACTIONS = ("created", "updated", "unchanged", "deleted", "invalid", "conflict", "error")


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.fires = Counter(
            "kron_schedule_fires",
            "Schedule fires handled by a fire workflow, by trigger and dispatch status (started or "
            "preflight_failed; overlap skips are kron_schedule_skips_total).",
            ["trigger", "dispatch"],
            registry=self.registry,
        )
        self.skips = Counter(
            "kron_schedule_skips", "Fires Temporal skipped because the previous run was still going (Forbid).",
            registry=self.registry,
        )
        self.preflight_failures = Counter(
            "kron_schedule_preflight_failures",
            "Fires that started no run because a toolkit was not connected or could not be checked.",
            ["reason"],
            registry=self.registry,
        )
        self.outcomes = Counter(
            "kron_schedule_run_outcomes", "How scheduled runs ended.", ["outcome"], registry=self.registry
        )
        self.lag = Histogram(
            "kron_schedule_lag_seconds",
            "Time from a fire's nominal time to its fire workflow starting (includes jitter).",
            buckets=LAG_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.sync_passes = Counter(
            "kron_schedule_sync_passes", "Declarative sync passes, by result (ok or error).", ["result"],
            registry=self.registry,
        )
        self.sync_actions = Counter(
            "kron_schedule_sync_actions", "What declarative sync passes did, per schedule.", ["action"],
            registry=self.registry,
        )
        self.managed = Gauge(
            "kron_schedules_managed", "Schedules the declarative source defines (valid ones).",
            registry=self.registry,
        )
        # Exported from the start so rates and alerts see zeros, not gaps.
        for trigger in FireTrigger:
            for dispatch in (DispatchStatus.STARTED, DispatchStatus.PREFLIGHT_FAILED):
                self.fires.labels(trigger.value, dispatch.value)
        for reason in ("not_connected", "unavailable"):
            self.preflight_failures.labels(reason)
        for outcome in FireOutcome:
            self.outcomes.labels(outcome.value)
        for result in ("ok", "error"):
            self.sync_passes.labels(result)
        for action in SYNC_ACTIONS:
            self.sync_actions.labels(action)
