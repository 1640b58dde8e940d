"""Starting an `AgentWorkflow`: what every starter (a dispatch at the gateway, a fire in the
scheduler) must do the same way so runs look alike wherever they came from — the task id's shape,
the owner's search attribute (listing and ownership checks filter on it), the memo a listing shows,
the run's workflow task timeout, and the run input built from a request's optional fields.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from temporalio.common import Priority, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from kron.contracts import names
from kron.contracts.models import DEFAULT_MAX_ITERATIONS, AgentRunInput, ApprovalPolicy

OWNER_SEARCH_ATTRIBUTE = SearchAttributeKey.for_keyword(names.SEARCH_ATTRIBUTE_USER)
GOAL_PREVIEW_CHARS = 200
# Memo keys (listings read them back without asking the run).
MEMO_GOAL = "goal"
MEMO_TOOLKITS = "toolkits"
MEMO_MODEL = "model"
MEMO_AGENT = "agent"  # {name, version, shared}: the agent definition run (absent: none)
# A workflow task held by a worker that died is given to another worker after this (Temporal's
# default: 10 s). It must cover the longest workflow task a live worker runs: a full replay of a run's
# history after a cache miss, at most TURNS_PER_HISTORY turns since its last continue-as-new
# (measured by bench/durable_overhead.py; trade-off in deploy/RECOVERY.md). Fixed in the run's
# history at start, so it is a constant every starter shares, not a worker setting.
RUN_TASK_TIMEOUT = timedelta(seconds=3)


def task_id(unique_hex: str) -> str:
    """A task (workflow) id: `run-<hex>`; the hex is a uuid4's, or a digest for idempotent ids."""
    return f"run-{unique_hex}"


def owner_search_attributes(user_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(OWNER_SEARCH_ATTRIBUTE, user_id)])


# Temporal's limit on a fairness key (bytes).
_MAX_FAIRNESS_KEY_BYTES = 64


def run_priority(user_id: str, fairness_weight: float | None = None) -> Priority:
    """A run's task-queue priority: its owner is its fairness key, so with fairness on (Temporal
    `matching.enableFairness`) one user's backlog cannot starve another's; activities inherit it.
    Longer user ids (up to 128 characters) become a digest."""
    key = user_id
    if len(key.encode()) > _MAX_FAIRNESS_KEY_BYTES:
        key = "sha256:" + hashlib.sha256(user_id.encode()).hexdigest()[:48]
    return Priority(fairness_key=key, fairness_weight=fairness_weight)


def quote_literal(value: str) -> str:
    """A visibility-query string literal (user ids are restricted to a quote-free alphabet already;
    escaping anyway keeps this safe for any caller)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def owner_clause(user_id: str) -> str:
    """The visibility-query condition "owned by `user_id`"."""
    return f"{names.SEARCH_ATTRIBUTE_USER} = {quote_literal(user_id)}"


def run_memo(run_input: AgentRunInput, **extra: Any) -> dict[str, Any]:
    """What a task listing shows of a run (a goal preview, toolkits, model), plus the starter's own
    keys (`extra`: the gateway's idempotency fingerprint, a fire's `schedule`)."""
    return {
        MEMO_GOAL: run_input.goal[:GOAL_PREVIEW_CHARS],
        MEMO_TOOLKITS: list(run_input.toolkits),
        MEMO_MODEL: run_input.model,
        **({MEMO_AGENT: run_input.agent.model_dump()} if run_input.agent else {}),
        **extra,
    }


def agent_run_input(
    *,
    user_id: str,
    goal: str,
    toolkits: list[str],
    model: str | None,
    max_iterations: int | None,
    token_budget: int | None,
    callback_url: str | None,
    approval: ApprovalPolicy | None,
    request_id: str | None,
    **fields: Any,
) -> AgentRunInput:
    """The workflow input for a request whose optional limits may be unset (None: the default).
    `fields`: further `AgentRunInput` fields the caller sets (validated by the model)."""
    return AgentRunInput(
        user_id=user_id,
        goal=goal,
        toolkits=toolkits,
        model=model,
        max_iterations=DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations,
        token_budget=token_budget,
        callback_url=callback_url,
        approval=approval,
        request_id=request_id,
        **fields,
    )
