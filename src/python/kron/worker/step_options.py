"""Activity options, one bundle per kind of step an `AgentWorkflow` takes.

As in the Temporal agent integrations, a step's timeouts and retry policy travel together, so a call
site names the kind of step (`MODEL_STEP`, `SAFE_TOOL_STEP`, ...) instead of restating its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

# A step whose worker died is noticed this long after its last heartbeat (then retried elsewhere
# after its retry policy's first interval). Too short, and a live step whose event loop stalls that
# long (CPU throttling, a long GC) is timed out and run twice. The worker's setting
# (KRON_HEARTBEAT_TIMEOUT_SECONDS, applied by HeartbeatTimeoutInterceptor) overrides it; the
# trade-off and the server load per in-flight step are in deploy/RECOVERY.md.
HEARTBEAT_TIMEOUT = timedelta(seconds=2)
# How often a running step heartbeats (KRON_HEARTBEAT_INTERVAL_SECONDS). The SDK sends at most one
# heartbeat per 0.8 x the timeout to the server, so this sets stall tolerance, not server load.
HEARTBEAT_INTERVAL = timedelta(seconds=0.5)
# The first retry of a step that failed or whose worker died: short, so a crash costs little on top
# of the heartbeat timeout. Backoff doubles from here.
FIRST_RETRY_INTERVAL = timedelta(seconds=0.25)


@dataclass(frozen=True)
class StepOptions:
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy
    heartbeat_timeout: timedelta | None = HEARTBEAT_TIMEOUT

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `workflow.execute_activity_method`."""
        return {
            "start_to_close_timeout": self.start_to_close_timeout,
            "retry_policy": self.retry_policy,
            "heartbeat_timeout": self.heartbeat_timeout,
        }


# Rate limits, overload, 5xx and connection errors are retried with backoff (a `retry-after` from the
# API overrides the backoff for that attempt); bad requests, auth errors and a blocked key are raised
# as non-retryable by the activity and fail the run at once with a clear error.
# 12 attempts from 0.25 s wait ~6 min in all before giving up, as 10 from 1 s did.
MODEL_STEP = StepOptions(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(
        initial_interval=FIRST_RETRY_INTERVAL,
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=2),
        maximum_attempts=12,
    ),
)

# Tool transport failures (Composio 5xx, connection): a few tries, then the model is told.
# 5 attempts from 0.25 s wait 3.75 s in all, at least the 3 s that 3 attempts from 1 s waited.
_TOOL_TRANSPORT_RETRY = RetryPolicy(
    initial_interval=FIRST_RETRY_INTERVAL,
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)

# Read-only and idempotent tool calls: retried, after a crash too.
SAFE_TOOL_STEP = StepOptions(
    start_to_close_timeout=timedelta(minutes=5), retry_policy=_TOOL_TRANSPORT_RETRY
)

# An unsafe tool call (it may act twice) gets ONE attempt: a crash or a failure after the request may
# have reached the tool leaves its outcome unknown, and a human decides. The workflow itself retries
# it only when the request provably never got there (TOOL_NOT_EXECUTED).
UNSAFE_TOOL_STEP = StepOptions(
    start_to_close_timeout=timedelta(minutes=5), retry_policy=RetryPolicy(maximum_attempts=1)
)

LIST_TOOLS_STEP = StepOptions(
    start_to_close_timeout=timedelta(minutes=1), retry_policy=_TOOL_TRANSPORT_RETRY
)

_NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)

# The completion webhook: short-leashed, it never holds the run's result hostage.
NOTIFY_STEP = StepOptions(
    start_to_close_timeout=timedelta(seconds=15), retry_policy=_NOTIFY_RETRY, heartbeat_timeout=None
)

# Asking Temporal to cancel the run (the hard cancel after a graceful one's grace period).
CANCEL_RUN_STEP = StepOptions(
    start_to_close_timeout=timedelta(seconds=30), retry_policy=_NOTIFY_RETRY, heartbeat_timeout=None
)
