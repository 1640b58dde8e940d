from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from kron.contracts.models import AgentRunInput, BudgetUpdate, RunStatus
from kron.contracts.spend import MonthlySpend, SpendEntry, month_of, spend_ledger_id


def test_the_month_is_utcs() -> None:
    assert month_of(datetime(2026, 8, 31, 23, 30, tzinfo=UTC)) == "2026-08"
    # 01:30 on Sept 1 at UTC+2 is still August in UTC.
    assert month_of(datetime(2026, 9, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))) == "2026-08"


def test_ledger_ids_do_not_collide_across_users() -> None:
    assert spend_ledger_id("a-b", "2026-01") != spend_ledger_id("a", "b-2026-01")


def test_the_ledger_adds_priced_calls_and_counts_unpriced_ones_apart() -> None:
    spend = MonthlySpend(user_id="alice", month="2026-08")
    spend.add(SpendEntry(model="claude-sonnet-5", cost_usd=0.5, schedule_name="digest"))
    spend.add(SpendEntry(model="claude-sonnet-5", cost_usd=0.25))
    spend.add(SpendEntry(model="claude-opus-5", cost_usd=1.0, schedule_name="digest"))
    spend.add(SpendEntry(model="mystery", cost_usd=None, schedule_name="digest"))
    assert spend.model_calls == 4 and spend.unpriced_calls == 1
    assert spend.total_usd == 1.75
    assert spend.by_model == {"claude-sonnet-5": 0.75, "claude-opus-5": 1.0}
    assert spend.by_schedule == {"digest": 1.5}


@pytest.mark.parametrize("bad", [0, -0.01, float("nan"), float("inf"), 1e7])
def test_usd_budgets_must_be_positive_finite_and_sane(bad: float) -> None:
    with pytest.raises(ValidationError):
        BudgetUpdate(budget_usd=bad)
    with pytest.raises(ValidationError):
        AgentRunInput(user_id="u", goal="g", budget_usd=bad)


def test_paused_is_not_a_terminal_status() -> None:
    assert not RunStatus.PAUSED.is_terminal and RunStatus.BUDGET_EXCEEDED.is_terminal
