"""Prompt caching: the input a 20-turn agent run is billed for, with kron's cache breakpoints vs.
without them, measured on the same run.

The run drives the real `AgentLoop` and `AnthropicLLM` (through the SDK) against the fake Anthropic
server with cache accounting on (kron_testing.prompt_cache: the API's rules; tokens approximated as
characters / 4), with Composio tools through the real SDK. Each turn calls one tool whose result is
about 2 KB; tools and system prompt are about 3 KB.

Billed input-token equivalents (multipliers over base input, from Anthropic's pricing):
    without caching: every input token at 1x
    with caching:    uncached input 1x + cache writes 1.25x (5m) or 2x (1h) + cache reads 0.1x

    ./pants run bench/prompt_cache.py -- --turns 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import _harness
from _harness import ANTHROPIC_KEY, COMPOSIO_KEY, table
from kron.agent_core.anthropic_llm import AnthropicLLM
from kron.agent_core.composio_tools import ComposioToolProvider
from kron.agent_core.loop import DEFAULT_SYSTEM_PROMPT, AgentLoop, RunLimits
from kron.agent_core.runner import run_agent
from kron.agent_core.types import ModelRequest, ModelResponse
from kron.common.logging import configure_logging
from kron.contracts.models import CacheTTL, RunStatus
from kron_testing import fake_anthropic as replies
from kron_testing.fake_composio import FakeComposio
from kron_testing.prompt_cache import PromptCache

USER = "bench-user"
TOOL = "NOTES_SEARCH"
MODEL = "claude-sonnet-5"  # minimum cacheable prefix 1,024 tokens
WRITE_MULTIPLIER: dict[CacheTTL, float] = {"5m": 1.25, "1h": 2.0}
READ_MULTIPLIER = 0.1


class _CachedLLM:
    """The adapter, every request at one cache TTL, every response kept."""

    def __init__(self, llm: AnthropicLLM, ttl: CacheTTL) -> None:
        self.llm, self.ttl = llm, ttl
        self.responses: list[ModelResponse] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self.llm.complete(request.model_copy(update={"cache_ttl": self.ttl}))
        self.responses.append(response)
        return response


def _add_search_tool(composio: FakeComposio, description_bytes: int, result_bytes: int) -> str:
    def handler(user: str, args: dict[str, Any]) -> dict[str, Any]:
        line = f"note {args.get('turn')}: meeting notes, action items and follow-ups. "
        return {"matches": (line * (result_bytes // len(line) + 1))[:result_bytes]}

    description = "Search the user's notes. " * (description_bytes // 25)
    schema = {"type": "object", "properties": {"turn": {"type": "integer"}, "call": {"type": "integer"}}}
    composio.add_tool(TOOL, "notes", description, schema, handler)
    composio.connect(USER, "notes")
    return "notes"


async def main(turns: int, ttl: CacheTTL, tools_system_bytes: int, result_bytes: int) -> None:
    llm_fake, composio_fake = _harness.fakes()
    llm_fake.prompt_cache = PromptCache()
    llm_fake.responder = replies.scripted_agent(turns - 1, TOOL, final_text="Found everything.")
    system = DEFAULT_SYSTEM_PROMPT + " Notes on style: be specific, cite note numbers." * (
        (tools_system_bytes // 2 - len(DEFAULT_SYSTEM_PROMPT)) // 48
    )
    # The tool's name, schema and JSON around its description take about 400 bytes.
    toolkit = _add_search_tool(composio_fake, tools_system_bytes - len(system) - 400, result_bytes)
    adapter = AnthropicLLM(api_key=ANTHROPIC_KEY, base_url=llm_fake.base_url, max_retries=0)
    llm = _CachedLLM(adapter, ttl)
    tools = ComposioToolProvider(api_key=COMPOSIO_KEY, base_url=composio_fake.base_url)
    loop = AgentLoop(RunLimits(model=MODEL, max_iterations=turns, system_prompt=system), "find my notes")
    result = await run_agent(loop, llm, tools, user_id=USER, toolkits=[toolkit])
    assert result.status == RunStatus.COMPLETED and result.turns == turns, result

    first = llm_fake.requests[0].body or {}
    prefix_bytes = len(json.dumps(first.get("tools"))) + len(json.dumps(first.get("system")))
    results = [b for m in loop.state.messages if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    result_avg = sum(len(b["content"]) for b in results) / max(len(results), 1)

    responses = llm.responses
    read = sum(r.cache_read_input_tokens for r in responses)
    write_1h = sum(r.cache_creation_1h_input_tokens for r in responses)
    write_5m = sum(r.cache_creation_input_tokens for r in responses) - write_1h
    uncached = sum(r.input_tokens for r in responses)
    total = uncached + read + write_5m + write_1h
    billed = uncached + WRITE_MULTIPLIER["5m"] * write_5m + WRITE_MULTIPLIER["1h"] * write_1h + READ_MULTIPLIER * read
    turns_reading = sum(1 for r in responses if r.cache_read_input_tokens)

    print(f"\nPrompt caching: {turns} model calls, tools+system {prefix_bytes:,} bytes, tool results "
          f"{result_avg:,.0f} bytes per turn, cache TTL {ttl}, model {MODEL} (minimum 1,024 tokens)\n")
    print(table([
        ("", "tokens", "billed (input-token equivalents)"),
        ("input, no caching (baseline)", f"{total:,}", f"{total:,}"),
        ("uncached input", f"{uncached:,}", f"{uncached:,}"),
        (f"cache writes 5m ({WRITE_MULTIPLIER['5m']}x)", f"{write_5m:,}", f"{WRITE_MULTIPLIER['5m'] * write_5m:,.0f}"),
        (f"cache writes 1h ({WRITE_MULTIPLIER['1h']}x)", f"{write_1h:,}", f"{WRITE_MULTIPLIER['1h'] * write_1h:,.0f}"),
        (f"cache reads ({READ_MULTIPLIER}x)", f"{read:,}", f"{READ_MULTIPLIER * read:,.0f}"),
        ("input with caching (kron)", f"{total:,}", f"{billed:,.0f}"),
    ]))
    print(f"\ncalls that read from the cache: {turns_reading} of {turns}   "
          f"ratio with/without caching: {billed / total:.3f}x")
    await adapter.aclose()
    llm_fake.stop()
    composio_fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="model calls in the run")
    parser.add_argument("--ttl", choices=["5m", "1h"], default="5m")
    parser.add_argument("--tools-system-bytes", type=int, default=3000)
    parser.add_argument("--result-bytes", type=int, default=2000)
    args = parser.parse_args()
    configure_logging("WARNING")
    asyncio.run(main(args.turns, args.ttl, args.tools_system_bytes, args.result_bytes))
    sys.stdout.flush()
