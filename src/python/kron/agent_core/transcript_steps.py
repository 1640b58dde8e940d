"""The I/O half of a transcript-backed run (transcripts-v1): what a model call and a tool call do
with the transcript store. The worker's activities and the in-process runner both use it.

Stored per run (kron.common.transcripts, content-addressed):
- each content (the goal, a reply as the conversation keeps it, a tool result, the system prompt,
  the tool definitions) as canonical JSON;
- one node per message: `{"prev": <node sha256 | null>, "role": ..., "content": {"ref", "chars"}}`
  or, for a message of tool results, `"tool_results": [{"tool_use_id", "ref", "chars", "is_error"}]`.
  A node names the one before it, so the newest node's sha256 (`head`) names the whole conversation.

`prepare` links the messages recorded since the last call into the chain and assembles the plain
`ModelRequest` the LLM port takes; `finish` stores the reply and returns it by reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kron.agent_core.loop import canonical_json, dropped_result_note, kept_reply_content, preview_of
from kron.agent_core.types import (
    ModelRequest,
    ModelResponse,
    ToolResult,
    TranscriptRequest,
    TranscriptUpdate,
)
from kron.common.transcripts import TranscriptStore
from kron.contracts.models import DEFAULT_CONTEXT_WINDOW_TOKENS, ContentRef, TranscriptMessage


@dataclass(frozen=True)
class PreparedCall:
    request: ModelRequest
    transcript_id: str
    head: str  # the chain's head with every message of `request`
    system: ContentRef | None
    tools: ContentRef | None


class TranscriptSteps:
    def __init__(
        self,
        store: TranscriptStore,
        context_window: Callable[[str], int] = lambda model: DEFAULT_CONTEXT_WINDOW_TOKENS,
    ) -> None:
        self.store = store
        self._context_window = context_window

    async def store_content(self, run_id: str, value: Any) -> ContentRef:
        text = canonical_json(value)
        sha = await self.store.put(run_id, text.encode())
        return ContentRef(sha256=sha, chars=len(text), preview=preview_of(value))

    async def load_content(self, run_id: str, ref: ContentRef | str) -> Any:
        if isinstance(ref, str):
            return ref
        return json.loads(await self.store.get(run_id, ref.sha256))

    # ---- model calls
    async def prepare(self, call: TranscriptRequest, default_model: str) -> PreparedCall:
        run = call.transcript_id
        head = call.head
        for message in call.tail:
            head = await self._link(run, head, message)
        if head is None:
            raise ValueError(f"transcript of run {run}: a model call without messages")
        system = (
            await self.store_content(run, call.system) if isinstance(call.system, str) else call.system
        )
        tools = await self.store_content(run, call.tools) if isinstance(call.tools, list) else call.tools
        request = ModelRequest(
            model=call.model or default_model,
            max_tokens=call.max_tokens,
            system=await self.load_content(run, system) if system is not None else None,
            messages=await self._messages(run, head, call.drop_tool_results),
            tools=await self.load_content(run, tools) if tools is not None else [],
            cache_ttl=call.cache_ttl,
        )
        return PreparedCall(request, run, head, system, tools)

    async def finish(self, prepared: PreparedCall, response: ModelResponse) -> ModelResponse:
        """Store the reply as the conversation keeps it; return it with only its text and tool_use
        blocks inline (the workflow runs the tool calls and reports the answer)."""
        run, head = prepared.transcript_id, prepared.head
        kept = kept_reply_content(response.content, response.stop_reason)
        reply = None
        if kept is not None:
            reply = await self.store_content(run, kept)
            head = await self._put_node(run, {"prev": head, "role": "assistant",
                                              "content": {"ref": reply.sha256, "chars": reply.chars}})
        inline = [b for b in response.content if b.get("type") in ("text", "tool_use")]
        update = TranscriptUpdate(
            head=head,
            reply=reply,
            system=prepared.system,
            tools=prepared.tools,
            context_window_tokens=self._context_window(prepared.request.model),
        )
        return response.model_copy(update={"content": inline, "transcript": update})

    # ---- tool calls
    async def store_tool_result(self, run_id: str, result: ToolResult) -> ToolResult:
        ref = await self.store_content(run_id, result.content)
        return result.model_copy(update={"content": ref.preview, "content_ref": ref})

    # ---- the chain
    async def _put_node(self, run: str, node: dict[str, Any]) -> str:
        return await self.store.put(run, canonical_json(node).encode())

    async def _link(self, run: str, head: str | None, message: TranscriptMessage) -> str:
        node: dict[str, Any] = {"prev": head, "role": message.role}
        if message.tool_results:
            results = []
            for result in message.tool_results:
                ref = await self._stored(run, result.content)
                results.append({"tool_use_id": result.tool_use_id, "ref": ref.sha256,
                                "chars": ref.chars, "is_error": result.is_error})
            node["tool_results"] = results
        else:
            ref = await self._stored(run, message.content if message.content is not None else "")
            node["content"] = {"ref": ref.sha256, "chars": ref.chars}
        return await self._put_node(run, node)

    async def _stored(self, run: str, content: ContentRef | str) -> ContentRef:
        return content if isinstance(content, ContentRef) else await self.store_content(run, content)

    async def _messages(self, run: str, head: str, drop_tool_results: int) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        sha: str | None = head
        while sha is not None:
            node = json.loads(await self.store.get(run, sha))
            nodes.append(node)
            sha = node["prev"]
        nodes.reverse()
        messages: list[dict[str, Any]] = []
        seen_results = 0
        for node in nodes:
            if "tool_results" in node:
                blocks = []
                for result in node["tool_results"]:
                    if seen_results < drop_tool_results:
                        content: Any = dropped_result_note(result["chars"])
                    else:
                        content = await self._load(run, result["ref"])
                    seen_results += 1
                    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result["tool_use_id"],
                                             "content": content}
                    if result["is_error"]:
                        block["is_error"] = True
                    blocks.append(block)
                messages.append({"role": node["role"], "content": blocks})
            else:
                messages.append({"role": node["role"], "content": await self._load(run, node["content"]["ref"])})
        return messages

    async def _load(self, run: str, sha: str) -> Any:
        return json.loads(await self.store.get(run, sha))
