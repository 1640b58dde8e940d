"""`AgentRegistryWorkflow`: where agent definitions live, one long-lived workflow per owner (and one
for the shared, declared agents), on the scheduler's task queue.

Why a workflow and not a database: Temporal is already the one store every deployable depends on,
and it keeps a workflow's state across restarts of every deployable (the gateway, the worker, the
scheduler) and of Temporal itself. Changes are Updates whose validators run before anything is
recorded, so a bad change (a duplicate create, an update of a declared agent, a registry grown too
large) is refused with nothing written; reads are queries. Per owner, not per agent, so a listing is
one query with no eventually consistent visibility in between; the state is bounded
(`RegistryInput.max_state_bytes`, `max_agents`) so it always fits a continue-as-new payload.

Why the scheduler hosts it: the scheduler already runs the long-lived bookkeeping workflows
(ScheduleLedgerWorkflow) and its fires must resolve agents at fire time; the gateway runs no worker.
Reads therefore need the scheduler up (like a schedule's run history).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from kron.contracts.agents import (
        AGENT_REGISTRY_WORKFLOW,
        ERROR_EXISTS,
        ERROR_FULL,
        ERROR_NOT_FOUND,
        ERROR_READ_ONLY,
        QUERY_AGENT,
        QUERY_AGENTS,
        SOURCE_API,
        UPDATE_DELETE_AGENT,
        UPDATE_PUT_AGENT,
        UPDATE_SYNC_DECLARED,
        AgentQuery,
        AgentRecord,
        AgentVersion,
        DeleteAgent,
        PutAgent,
        PutResult,
        RegistryInput,
        SyncDeclared,
        SyncResult,
    )

# Continue as new after this many changes (each costs a handful of events), well under Temporal's
# history limits, or sooner when Temporal suggests it.
CHANGES_PER_RUN = 500


@workflow.defn(name=AGENT_REGISTRY_WORKFLOW)
class AgentRegistryWorkflow:
    @workflow.init
    def __init__(self, input: RegistryInput) -> None:
        # Runs before an update that came with the start (update-with-start) is handled.
        self._input = input
        self._state = input.state.model_copy(deep=True)
        self._changes = 0

    @workflow.run
    async def run(self, input: RegistryInput) -> None:
        await workflow.wait_condition(
            lambda: self._changes >= CHANGES_PER_RUN or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(input.model_copy(update={"state": self._state}))

    # ---- changes -------------------------------------------------------------------------------
    @workflow.update(name=UPDATE_PUT_AGENT)
    def put_agent(self, put: PutAgent) -> PutResult:
        return self._put(put)

    def _put(self, put: PutAgent) -> PutResult:
        record = self._state.agents.get(put.name)
        if record is None:
            record = AgentRecord(name=put.name, source=put.source, deleted=True)
        changed = record.deleted or record.latest.spec != put.spec
        if changed:
            number = record.versions[-1].version + 1 if record.versions else 1
            record = record.model_copy(update={
                "source": put.source,
                "deleted": False,
                "versions": [*record.versions, AgentVersion(version=number, spec=put.spec, created_at=workflow.now())],
            })
            self._state.agents[put.name] = record
            self._changes += 1
        return PutResult(record=record, changed=changed)

    @put_agent.validator
    def _check_put(self, put: PutAgent) -> None:
        record = self._state.agents.get(put.name)
        live = record is not None and not record.deleted
        if live and record is not None and record.source != put.source:
            raise ApplicationError(f"agent {put.name!r} is managed by {record.source}", record.source,
                                   type=ERROR_READ_ONLY, non_retryable=True)
        if put.mode == "create" and live:
            raise ApplicationError(f"agent {put.name!r} exists", type=ERROR_EXISTS, non_retryable=True)
        if put.mode == "update" and not live:
            raise ApplicationError(f"no agent {put.name!r}", type=ERROR_NOT_FOUND, non_retryable=True)
        if not live and sum(1 for r in self._state.agents.values() if not r.deleted) >= self._input.max_agents:
            raise ApplicationError(f"at most {self._input.max_agents} agents", type=ERROR_FULL, non_retryable=True)
        self._check_size(len(put.spec.model_dump_json()))

    @workflow.update(name=UPDATE_DELETE_AGENT)
    def delete_agent(self, delete: DeleteAgent) -> None:
        self._delete(delete)

    def _delete(self, delete: DeleteAgent) -> None:
        # Its versions go (running runs hold their own copy); the last one stays for the numbering.
        record = self._state.agents[delete.name]
        self._state.agents[delete.name] = record.model_copy(update={"deleted": True, "versions": [record.latest]})
        self._changes += 1

    @delete_agent.validator
    def _check_delete(self, delete: DeleteAgent) -> None:
        record = self._state.agents.get(delete.name)
        if record is None or record.deleted:
            raise ApplicationError(f"no agent {delete.name!r}", type=ERROR_NOT_FOUND, non_retryable=True)
        if record.source != delete.source:
            raise ApplicationError(f"agent {delete.name!r} is managed by {record.source}", record.source,
                                   type=ERROR_READ_ONLY, non_retryable=True)

    @workflow.update(name=UPDATE_SYNC_DECLARED)
    def sync_declared(self, sync: SyncDeclared) -> SyncResult:
        result = SyncResult(versions={})
        for name, spec in sorted(sync.agents.items()):
            record = self._state.agents.get(name)
            if record is not None and not record.deleted and record.source != sync.source:
                result.conflicts[name] = record.source
                continue
            put = self._put(PutAgent(name=name, spec=spec, source=sync.source, mode="apply"))
            result.versions[name] = put.record.latest.version
        for name, record in sorted(self._state.agents.items()):
            if record.source == sync.source and not record.deleted and name not in sync.agents and name not in sync.keep:
                self._delete(DeleteAgent(name=name, source=sync.source))
                result.deleted.append(name)
        return result

    @sync_declared.validator
    def _check_sync(self, sync: SyncDeclared) -> None:
        if sync.source == SOURCE_API:
            raise ApplicationError("a declarative source cannot be the API", type=ERROR_READ_ONLY,
                                   non_retryable=True)
        self._check_size(sum(len(spec.model_dump_json()) for spec in sync.agents.values()))

    # ---- reads ---------------------------------------------------------------------------------
    @workflow.query(name=QUERY_AGENTS)
    def agents(self) -> list[AgentRecord]:
        """Every live agent (latest version only: a listing does not carry old versions)."""
        return [
            r.model_copy(update={"versions": [r.latest]})
            for _, r in sorted(self._state.agents.items())
            if not r.deleted
        ]

    @workflow.query(name=QUERY_AGENT)
    def agent(self, query: AgentQuery) -> AgentRecord | None:
        """One agent with all its versions; None when there is none (or it was deleted)."""
        record = self._state.agents.get(query.name)
        return None if record is None or record.deleted else record

    def _check_size(self, adding: int) -> None:
        size = len(self._state.model_dump_json()) + adding
        if size > self._input.max_state_bytes:
            raise ApplicationError(
                f"the agent registry would hold {size} bytes, over its {self._input.max_state_bytes}; "
                "delete agents or shorten their prompts",
                type=ERROR_FULL, non_retryable=True,
            )
