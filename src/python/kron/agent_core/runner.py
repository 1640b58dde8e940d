"""`kron-agent`: run one agent in-process, without Temporal.

    kron-agent run "summarise my unread GitHub notifications" --toolkit github

With `ANTHROPIC_API_KEY` (and `COMPOSIO_API_KEY` for toolkits) set it uses Claude and the user's
Composio tools; without them it says so and runs the clearly labelled offline demo model with local
demo tools. The worker drives the same `AgentLoop`, one Temporal activity per step.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from typing import TextIO

from kron.agent_core.demo import DEMO_MODEL, DEMO_TOOLKIT, DemoLLM, DemoTools
from kron.agent_core.loop import AgentLoop, BudgetReached, CallModel, Finish, RunLimits, RunTools
from kron.agent_core.ports import LLM, ToolProvider
from kron.agent_core.settings import AgentSettings
from kron.agent_core.transcript_steps import TranscriptSteps
from kron.agent_core.types import ModelCallError, ToolCall, ToolResult, TranscriptRequest
from kron.common.transcripts import MemoryTranscriptStore, TranscriptMissing
from kron.contracts.models import DEFAULT_MAX_ITERATIONS, AgentRunResult, RunError, RunStatus

StepCallback = Callable[[AgentLoop], None]


def execute_tool_call(tools: ToolProvider, user_id: str, call: ToolCall) -> ToolResult:
    """Run one tool call; any failure becomes an `is_error` result for that call only."""
    try:
        return tools.execute(user_id, call)
    except Exception as exc:  # noqa: BLE001 - the model gets the failure, the run goes on
        return ToolResult(tool_use_id=call.id, content=f"tool failed: {exc}", is_error=True)


async def run_agent(
    loop: AgentLoop,
    llm: LLM,
    tools: ToolProvider,
    *,
    user_id: str,
    toolkits: list[str],
    on_step: StepCallback | None = None,
    transcripts: TranscriptSteps | None = None,
) -> AgentRunResult:
    """Drive `loop` to the end in this process. A transcript run keeps its content in
    `transcripts` (default: in this process's memory), as a worker's activities do."""
    steps = transcripts or TranscriptSteps(MemoryTranscriptStore())
    if toolkits and not loop.state.tools_loaded:
        loop.set_tools(await asyncio.to_thread(tools.list_tools, user_id, toolkits))
    while True:
        step = loop.next_step()
        if isinstance(step, Finish):
            return step.result
        if isinstance(step, BudgetReached):
            return loop.end_over_budget(step)  # in-process runs have no one to raise it
        if isinstance(step, CallModel):
            try:
                if isinstance(step.request, TranscriptRequest):
                    prepared = await steps.prepare(step.request, step.request.model)
                    response = await steps.finish(prepared, await llm.complete(prepared.request))
                else:
                    response = await llm.complete(step.request)
            except ModelCallError as exc:
                return loop.fail_model_call(
                    RunError(code=exc.code, message=exc.message, status_code=exc.status_code)
                )
            except TranscriptMissing as missing:
                return loop.fail_model_call(RunError(code="transcript_missing", message=str(missing)))
            loop.record_model_response(response)
        elif isinstance(step, RunTools):
            results = list(await asyncio.gather(
                *(asyncio.to_thread(execute_tool_call, tools, user_id, c) for c in step.calls)
            ))
            transcript = loop.state.transcript
            if transcript is not None:
                results = [await steps.store_tool_result(transcript.id, r) for r in results]
            loop.record_tool_results(results)
        if on_step is not None:
            on_step(loop)


def _print_step(out: TextIO) -> StepCallback:
    printed = 0

    def printer(loop: AgentLoop) -> None:
        nonlocal printed
        for step in loop.state.steps[printed:]:
            mark = "ok " if step.ok else "ERR"
            print(
                f"  [{mark}] turn {step.turn:>2} {step.kind.value:<5} {step.name} "
                f"({step.duration_seconds * 1000:.1f} ms){'  ' + step.error if step.error else ''}",
                file=out,
            )
        printed = len(loop.state.steps)

    return printer


def _build_ports(
    settings: AgentSettings, toolkits: list[str], force_demo: bool, err: TextIO
) -> tuple[LLM, ToolProvider, str]:
    llm: LLM
    tools: ToolProvider
    if force_demo or settings.anthropic_api_key is None:
        if not force_demo:
            print(
                "ANTHROPIC_API_KEY is not set: running the OFFLINE DEMO model (no real reasoning) "
                "with local demo tools. Set ANTHROPIC_API_KEY to use Claude.",
                file=err,
            )
        return DemoLLM(), DemoTools(), DEMO_MODEL
    from kron.agent_core.anthropic_llm import AnthropicLLM  # slow import, only when used

    llm = AnthropicLLM(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        timeout=settings.kron_model_timeout_seconds,
    )
    external = [t for t in toolkits if t != DEMO_TOOLKIT]
    if external and settings.composio_api_key is None:
        raise SystemExit(f"COMPOSIO_API_KEY is not set; it is needed for toolkits {external}")
    if settings.composio_api_key is not None:
        from kron.agent_core.composio_tools import ComposioToolProvider

        tools = ComposioToolProvider(
            api_key=settings.composio_api_key.get_secret_value(),
            base_url=settings.composio_base_url,
        )
    else:
        tools = DemoTools()
    return llm, tools, settings.kron_model


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="kron-agent", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one agent to the end in this process")
    run.add_argument("goal")
    run.add_argument("--toolkit", action="append", default=[], help="repeatable, e.g. github")
    run.add_argument("--user", default="local", help="user id whose tools are used")
    run.add_argument("--model", default=None)
    run.add_argument("--max-iterations", type=int, default=DEFAULT_MAX_ITERATIONS)
    run.add_argument("--budget", type=int, default=None, help="token budget (all input and output tokens)")
    run.add_argument("--demo", action="store_true", help="force the offline demo model and tools")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    settings = AgentSettings()
    llm, tools, default_model = _build_ports(settings, args.toolkit, args.demo, err)
    toolkits = args.toolkit or ([DEMO_TOOLKIT] if isinstance(tools, DemoTools) else [])
    limits = RunLimits(
        model=args.model or default_model,
        max_tokens=settings.kron_max_tokens,
        max_iterations=args.max_iterations,
        token_budget=args.budget,
    )
    loop = AgentLoop(limits, args.goal, transcript_id=f"local-{uuid.uuid4().hex}")
    print(f"kron-agent: model {limits.model}, toolkits {toolkits or 'none'}", file=err)
    result = asyncio.run(
        run_agent(
            loop, llm, tools, user_id=args.user, toolkits=toolkits, on_step=_print_step(err)
        )
    )
    if args.json:
        print(result.model_dump_json(indent=2), file=out)
    else:
        usage = result.usage
        print(f"\nstatus: {result.status.value}   turns: {result.turns}   tokens: "
              f"{usage.input_tokens} in / {usage.output_tokens} out   tool calls: {usage.tool_calls}",
              file=out)
        if result.error:
            print(f"error: {result.error.code}: {result.error.message}", file=out)
        print(f"\n{result.output}", file=out)
    return 0 if result.status == RunStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
