"""The reference design kron is measured against: the whole agent loop inside ONE activity.

A crash anywhere in the run loses the whole activity; its retry starts the loop from the goal again,
re-billing every model call and repeating every tool call made before the crash. It runs the very
same `AgentLoop`, LLM and tool adapters as kron, so only the durability design differs.

`reference_worker.py` runs it as a worker process.
"""

from __future__ import annotations

import os
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from kron.agent_core.loop import AgentLoop, RunLimits
    from kron.agent_core.runner import run_agent
    from kron.agent_core.settings import AgentSettings
    from kron.contracts.models import AgentRunResult

REFERENCE_WORKFLOW = "OneActivityAgentWorkflow"
# The reference system used 30 minutes and no heartbeat; a shorter timeout keeps the bench short.
WHOLE_LOOP_TIMEOUT = timedelta(seconds=float(os.environ.get("BENCH_LOOP_TIMEOUT", "15")))


class WholeLoopInput(BaseModel):
    user_id: str
    goal: str
    toolkits: list[str]
    max_iterations: int = 25


@activity.defn(name="run_whole_loop")
async def run_whole_loop(input: WholeLoopInput) -> AgentRunResult:
    from kron.agent_core.anthropic_llm import AnthropicLLM
    from kron.agent_core.composio_tools import ComposioToolProvider

    settings = AgentSettings()
    assert settings.anthropic_api_key and settings.composio_api_key
    llm = AnthropicLLM(api_key=settings.anthropic_api_key.get_secret_value(),
                       base_url=settings.anthropic_base_url, max_retries=0)
    tools = ComposioToolProvider(api_key=settings.composio_api_key.get_secret_value(),
                                 base_url=settings.composio_base_url)
    loop = AgentLoop(RunLimits(model=settings.kron_model, max_iterations=input.max_iterations),
                     input.goal)
    return await run_agent(loop, llm, tools, user_id=input.user_id, toolkits=input.toolkits)


@workflow.defn(name=REFERENCE_WORKFLOW)
class OneActivityAgentWorkflow:
    @workflow.run
    async def run(self, input: WholeLoopInput) -> AgentRunResult:
        return await workflow.execute_activity(
            run_whole_loop, input, start_to_close_timeout=WHOLE_LOOP_TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1)),
        )
