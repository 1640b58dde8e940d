"""Fair sharing on real Temporal: one user's backlog does not starve another user's runs.

The session's dev server runs with kron's Temporal config (task-queue fairness on, one partition:
`kron.cli.up.temporal.TEMPORAL_DYNAMIC_CONFIG`), and runs carry their owner as fairness key. User A
fills the queue, then B dispatches a few: B's runs must reach the model long before A's backlog
is through. The bound is loose and counts calls, not seconds: without fairness (FIFO) B's first
call waits for every A call queued ahead of it; bench/fairness.py measures the times.
"""

from __future__ import annotations

from temporalio.client import Client

from kron.common.agent_runs import run_priority
from kron_testing.fairness_scenario import starvation
from kron_testing.fake_anthropic import FakeAnthropic
from kron_testing.fake_composio import FakeComposio

from .conftest import make_activities

A_RUNS, B_RUNS, SLOTS = 40, 3, 2


async def test_a_backlog_does_not_starve_another_user(
    client: Client, fake_llm: FakeAnthropic, fake_composio: FakeComposio
) -> None:
    activities = make_activities(fake_llm, fake_composio)
    try:
        outcome = await starvation(client, activities, fake_llm, a_runs=A_RUNS, b_runs=B_RUNS, slots=SLOTS,
                                   model_seconds=0.1)
    finally:
        await activities.aclose()
    # FIFO would serve ~all 40 of A's calls first; fair dispatch alternates A and B.
    assert outcome.a_calls_before_b <= A_RUNS // 2, outcome


def test_the_fairness_key_is_the_owner_within_temporals_limit() -> None:
    assert run_priority("alice@example.com", 2.0).fairness_key == "alice@example.com"
    assert run_priority("alice", 2.0).fairness_weight == 2.0
    long_id = "x" * 100
    key = run_priority(long_id).fairness_key
    assert key is not None and len(key.encode()) <= 64 and key != run_priority("y" * 100).fairness_key
