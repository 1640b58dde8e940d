"""An offline demo model and local demo tools, for machines without Anthropic or Composio keys.

The demo model does not reason. It is a fixed script that exercises the same machinery a real run
uses (model turns, parallel tool calls, tool errors, a final answer) so kron can be watched end to
end without any network. Everything it produces is labelled as a demo.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kron.agent_core.types import ModelRequest, ModelResponse, ToolCall, ToolResult

DEMO_MODEL = "kron-demo-offline"
DEMO_TOOLKIT = "demo"


def _word_count(args: dict[str, Any]) -> str:
    text = str(args.get("text", ""))
    return json.dumps({"words": len(text.split()), "characters": len(text)})


def _reverse(args: dict[str, Any]) -> str:
    return json.dumps({"reversed": str(args.get("text", ""))[::-1]})


def _sum_numbers(args: dict[str, Any]) -> str:
    numbers = args.get("numbers")
    if not isinstance(numbers, list) or not all(isinstance(n, int | float) for n in numbers):
        raise ValueError("'numbers' must be a list of numbers")
    return json.dumps({"sum": sum(numbers)})


_TOOLS: dict[str, tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]] = {
    "DEMO_WORD_COUNT": (
        "Count the words and characters of a text.",
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        _word_count,
    ),
    "DEMO_REVERSE_TEXT": (
        "Reverse a text.",
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        _reverse,
    ),
    "DEMO_SUM_NUMBERS": (
        "Add up a list of numbers.",
        {
            "type": "object",
            "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
            "required": ["numbers"],
        },
        _sum_numbers,
    ),
}


class DemoTools:
    """Local tools under the `demo` toolkit; every user is connected to it."""

    def list_tools(self, user_id: str, toolkits: list[str]) -> list[dict[str, Any]]:
        if DEMO_TOOLKIT not in toolkits:
            return []
        return [
            {"name": slug, "description": f"[demo] {description}", "input_schema": schema}
            for slug, (description, schema, _) in _TOOLS.items()
        ]

    def execute(self, user_id: str, call: ToolCall) -> ToolResult:
        started = time.monotonic()
        tool = _TOOLS.get(call.name)
        try:
            if tool is None:
                raise ValueError(f"unknown demo tool {call.name!r}")
            content, is_error = tool[2](call.input), False
        except ValueError as exc:
            content, is_error = str(exc), True
        return ToolResult(
            tool_use_id=call.id,
            content=content,
            is_error=is_error,
            duration_seconds=time.monotonic() - started,
        )

    def is_connected(self, user_id: str, toolkit: str) -> bool:
        return toolkit == DEMO_TOOLKIT

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str:
        return ""


class DemoLLM:
    """A scripted stand-in for Claude: two tool turns (one of them parallel), then a summary."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.monotonic()
        turn = sum(1 for m in request.messages if m.get("role") == "assistant")
        goal = _first_user_text(request.messages)
        tool_names = {t.get("name") for t in request.tools}
        content: list[dict[str, Any]]
        if turn == 0 and "DEMO_WORD_COUNT" in tool_names:
            content = [
                {"type": "text", "text": "[demo model] Measuring the goal and reversing it."},
                _tool_use(turn, 0, "DEMO_WORD_COUNT", {"text": goal}),
                _tool_use(turn, 1, "DEMO_REVERSE_TEXT", {"text": goal}),
            ]
            stop = "tool_use"
        elif turn == 1 and "DEMO_SUM_NUMBERS" in tool_names:
            numbers = [len(word) for word in goal.split()]
            content = [
                {"type": "text", "text": "[demo model] Adding up the word lengths."},
                _tool_use(turn, 0, "DEMO_SUM_NUMBERS", {"numbers": numbers}),
            ]
            stop = "tool_use"
        else:
            results = _tool_results(request.messages)
            summary = "; ".join(results) if results else "no tools were used"
            content = [
                {
                    "type": "text",
                    "text": f"[demo model, offline — no real reasoning] Goal: {goal!r}. "
                    f"Tool results: {summary}.",
                }
            ]
            stop = "end_turn"
        input_tokens = sum(len(json.dumps(m)) for m in request.messages) // 4
        output_tokens = len(json.dumps(content)) // 4
        return ModelResponse(
            content=content,
            stop_reason=stop,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=DEMO_MODEL,
            duration_seconds=time.monotonic() - started,
        )


def _tool_use(turn: int, index: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_demo_{turn}_{index}", "name": name, "input": args}


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def _tool_results(messages: list[dict[str, Any]]) -> list[str]:
    results = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            results += [str(b.get("content")) for b in content if b.get("type") == "tool_result"]
    return results
