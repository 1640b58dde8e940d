"""String names that cross deployables: workflows, task queues, signals, queries, search attributes."""

from typing import Final

AGENT_WORKFLOW: Final = "AgentWorkflow"
AGENT_TASK_QUEUE: Final = "kron-agent"

# Signals understood by AgentWorkflow.
SIGNAL_CANCEL: Final = "cancel"  # payload: CancelRequest (or none: graceful only)
SIGNAL_APPROVE: Final = "approve"  # payload: ApprovalDecision
SIGNAL_RESOLVE_UNKNOWN: Final = "resolve_unknown"  # payload: UnknownOutcomeDecision
SIGNAL_SET_BUDGET: Final = "set_budget"  # payload: BudgetUpdate

# Queries answered by AgentWorkflow.
QUERY_STATUS: Final = "status"
QUERY_PROGRESS: Final = "progress"
QUERY_USAGE: Final = "usage"
QUERY_RESULT: Final = "result"

# The spend ledger: one workflow per user per calendar month (kron.contracts.spend).
SPEND_LEDGER_WORKFLOW: Final = "SpendLedger"
SIGNAL_RECORD_SPEND: Final = "record_spend"  # payload: SpendEntry
QUERY_SPEND: Final = "spend"  # answer: MonthlySpend

# Custom search attribute (Keyword) holding the owning user's id; lets the gateway list one user's
# runs through Temporal visibility instead of listing everything and filtering.
SEARCH_ATTRIBUTE_USER: Final = "KronUserId"
