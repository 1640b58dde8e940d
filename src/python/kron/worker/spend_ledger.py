"""`SpendLedger`: what one user spent on model calls in one calendar month (UTC).

Why a workflow and not a database: kron keeps all its state in Temporal. Each priced model call
signals-with-start `spend-<user>-<YYYY-MM>` from the call_model activity; the gateway's `GET /usage`
and the activity's monthly budget check read it with the `spend` query. Signals are applied one at a
time by the workflow, so concurrent runs of one user add up without races. The ledger lives on past
its month (so last month can still be read), then closes; a closed workflow still answers queries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kron.contracts import names
    from kron.contracts.spend import MONTH_FORMAT, MonthlySpend, SpendEntry

# How long after its month a ledger stays open for late calls (a month key is taken when a call
# starts; a call that starts at 23:59 may be signalled after midnight).
KEEP_OPEN_AFTER_MONTH = timedelta(days=2)
# Continue-as-new after this many recorded calls, so the history stays small.
ENTRIES_PER_HISTORY = 2000


@workflow.defn(name=names.SPEND_LEDGER_WORKFLOW)
class SpendLedgerWorkflow:
    @workflow.init
    def __init__(self, state: MonthlySpend) -> None:
        self._state = state.model_copy(deep=True)
        self._entries = 0

    @workflow.run
    async def run(self, state: MonthlySpend) -> MonthlySpend:
        closes_at = _month_end(state.month) + KEEP_OPEN_AFTER_MONTH
        remaining = closes_at - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(
                    lambda: self._entries >= ENTRIES_PER_HISTORY
                    or workflow.info().is_continue_as_new_suggested(),
                    timeout=remaining,
                )
            except TimeoutError:
                return self._state
            workflow.continue_as_new(self._state)
        return self._state

    @workflow.signal(name=names.SIGNAL_RECORD_SPEND)
    def record_spend(self, entry: SpendEntry) -> None:
        self._state.add(entry)
        self._entries += 1

    @workflow.query(name=names.QUERY_SPEND)
    def spend(self) -> MonthlySpend:
        return self._state


def _month_end(month: str) -> datetime:
    start = datetime.strptime(month, MONTH_FORMAT).replace(tzinfo=UTC)
    return (start + timedelta(days=32)).replace(day=1)
