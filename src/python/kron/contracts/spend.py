"""The spend ledger's models: what a user spent on model calls in one calendar month (UTC).

One `SpendLedger` workflow per user per month, id `spend_ledger_id(user, month)`: the worker signals
it with every priced model call (signal-with-start), the gateway queries it for `GET /usage`, and the
worker reads it before a call to enforce the user's monthly budget. No database: the ledger's state
lives in its history, like the scheduler's run-history ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

MONTH_FORMAT = "%Y-%m"


def month_of(moment: datetime) -> str:
    """`YYYY-MM` of a datetime in UTC (a naive one is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(MONTH_FORMAT)


def spend_ledger_id(user_id: str, month: str) -> str:
    # Length-prefixed: "a-b" + "2026-01" never collides with "a" + "b-2026-01".
    return f"spend-{len(user_id)}-{user_id}-{month}"


class SpendEntry(BaseModel):
    """Payload of `record_spend`: one model call."""

    model: str  # the price table's id, or the model as called when it has no price
    cost_usd: float | None  # None: the model has no price
    schedule_name: str | None = None
    task_id: str | None = None


class MonthlySpend(BaseModel):
    """Answer of the `spend` query (and the ledger's continue-as-new state)."""

    user_id: str
    month: str
    total_usd: float = 0.0  # priced calls only; `unpriced_calls` says how many are not in it
    model_calls: int = 0
    unpriced_calls: int = 0
    by_model: dict[str, float] = Field(default_factory=dict)
    by_schedule: dict[str, float] = Field(default_factory=dict)

    def add(self, entry: SpendEntry) -> None:
        self.model_calls += 1
        if entry.cost_usd is None:
            self.unpriced_calls += 1
            return
        self.total_usd += entry.cost_usd
        self.by_model[entry.model] = self.by_model.get(entry.model, 0.0) + entry.cost_usd
        if entry.schedule_name is not None:
            self.by_schedule[entry.schedule_name] = self.by_schedule.get(entry.schedule_name, 0.0) + entry.cost_usd
