"""Agent definitions in Temporal: the calls the gateway (REST, dispatch) and the scheduler (sync,
fires) both make to the registry workflows (kron.scheduler.agent_registry). Here, not in either
deployable, because both need the same registry ids and the same lookup (own agents, then shared).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TypeVar

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from kron.contracts.agents import (
    AGENT_REGISTRY_ID_PREFIX,
    AGENT_REGISTRY_WORKFLOW,
    ERROR_EXISTS,
    ERROR_FULL,
    ERROR_NOT_FOUND,
    ERROR_READ_ONLY,
    QUERY_AGENT,
    QUERY_AGENTS,
    SHARED_REGISTRY_ID,
    UPDATE_DELETE_AGENT,
    UPDATE_PUT_AGENT,
    UPDATE_SYNC_DECLARED,
    AgentQuery,
    AgentRecord,
    AgentSpec,
    AgentVersion,
    DeleteAgent,
    PutAgent,
    PutResult,
    RegistryInput,
    SyncDeclared,
    SyncResult,
)
from kron.contracts.models import AgentRef
from kron.contracts.schedules import SCHEDULER_TASK_QUEUE

T = TypeVar("T")
SHARED_OWNER = ""  # the owner of the shared registry (declared agents)


class AgentNotFound(Exception):
    pass


class AgentExists(Exception):
    pass


class AgentReadOnly(Exception):
    """Managed by another source (a declared agent, changed only where it is declared)."""

    def __init__(self, source: str) -> None:
        super().__init__(f"managed by {source}")
        self.source = source


class AgentRegistryFull(Exception):
    pass


class AgentsUnavailable(Exception):
    """No scheduler worker answered for the registry: definitions cannot be read or changed now."""


def registry_id(owner: str) -> str:
    if owner == SHARED_OWNER:
        return SHARED_REGISTRY_ID
    digest = hashlib.sha256(f"{len(owner)}:{owner}".encode()).hexdigest()[:24]
    return f"{AGENT_REGISTRY_ID_PREFIX}user-{digest}"


class AgentStore:
    """Create, read, version and delete agent definitions."""

    def __init__(
        self,
        client: Client,
        *,
        scheduler_task_queue: str = SCHEDULER_TASK_QUEUE,
        rpc_timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        self.client = client
        self.task_queue = scheduler_task_queue
        self.rpc_timeout = rpc_timeout

    # --- writes

    async def put(self, owner: str, put: PutAgent) -> PutResult:
        result: PutResult = await self._update(owner, UPDATE_PUT_AGENT, put, PutResult)
        return result

    async def delete(self, owner: str, name: str) -> None:
        await self._update(owner, UPDATE_DELETE_AGENT, DeleteAgent(name=name), type(None))

    async def sync_declared(
        self, source: str, agents: dict[str, AgentSpec], *, keep: list[str] | None = None
    ) -> SyncResult:
        """Make the shared registry hold `source`'s agents: a new version where a spec changed, and
        its agents not named (in `agents` or `keep`) deleted."""
        sync = SyncDeclared(source=source, agents=agents, keep=keep or [])
        result: SyncResult = await self._update(SHARED_OWNER, UPDATE_SYNC_DECLARED, sync, SyncResult)
        return result

    # --- reads

    async def list_owned(self, owner: str) -> list[AgentRecord]:
        records: list[AgentRecord] | None = await self._query(owner, QUERY_AGENTS, None, list[AgentRecord])
        return records or []

    async def get(self, owner: str, name: str) -> AgentRecord:
        record: AgentRecord | None = await self._query(owner, QUERY_AGENT, AgentQuery(name=name), AgentRecord)
        if record is None:
            raise AgentNotFound(name)
        return record

    async def resolve(self, owner: str, ref: AgentRef) -> tuple[AgentRef, AgentVersion]:
        """The version a run of `ref` gets: the owner's own agent of that name, else the shared one
        (`ref.shared`: the shared one only); the latest version unless `ref` pins one. Raises
        AgentNotFound for an unknown agent or version."""
        record, shared = None, ref.shared
        if not ref.shared:
            try:
                record = await self.get(owner, ref.name)
            except AgentNotFound:
                shared = True
        if record is None:
            record = await self.get(SHARED_OWNER, ref.name)
        version = record.latest if ref.version is None else record.version(ref.version)
        if version is None:
            raise AgentNotFound(f"{ref.name} version {ref.version}")
        return AgentRef(name=ref.name, version=version.version, shared=shared), version

    # --- internals

    def _start(self, owner: str) -> WithStartWorkflowOperation[object, None]:
        return WithStartWorkflowOperation(
            AGENT_REGISTRY_WORKFLOW,
            RegistryInput(owner=owner),
            id=registry_id(owner),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    async def _update(self, owner: str, name: str, arg: object, result_type: type[T]) -> T:
        try:
            result: T = await self.client.execute_update_with_start_workflow(
                name, arg, start_workflow_operation=self._start(owner), result_type=result_type,
                rpc_timeout=self.rpc_timeout,
            )
            return result
        except WorkflowUpdateFailedError as error:
            raise _refused(error) from None
        except RPCTimeoutOrCancelledError:
            # No scheduler worker took the update in time (it stays pending and may still apply).
            raise AgentsUnavailable("timeout") from None
        except RPCError as error:
            if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE):
                raise AgentsUnavailable(error.status.name) from None
            raise

    async def _query(self, owner: str, name: str, arg: object, result_type: type[T]) -> T | None:
        handle = self.client.get_workflow_handle(registry_id(owner))
        try:
            args = [] if arg is None else [arg]
            result: T = await handle.query(name, args=args, result_type=result_type, rpc_timeout=self.rpc_timeout)
            return result
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return None  # no registry yet: no agents
            raise AgentsUnavailable(error.status.name if error.status else "unknown") from None
        except (WorkflowQueryFailedError, RPCTimeoutOrCancelledError) as error:
            raise AgentsUnavailable(type(error).__name__) from None


def _refused(error: WorkflowUpdateFailedError) -> Exception:
    cause = error.cause
    if isinstance(cause, ApplicationError):
        if cause.type == ERROR_NOT_FOUND:
            return AgentNotFound(cause.message)
        if cause.type == ERROR_EXISTS:
            return AgentExists(cause.message)
        if cause.type == ERROR_READ_ONLY:
            return AgentReadOnly(str(cause.details[0]) if cause.details else "a declarative source")
        if cause.type == ERROR_FULL:
            return AgentRegistryFull(cause.message)
    return error
