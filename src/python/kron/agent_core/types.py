"""Values exchanged between the agent loop and its ports (pydantic, so they cross Temporal as-is)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from kron.contracts.models import CacheTTL, ContentRef, TranscriptMessage

CACHE_TTL_SECONDS: dict[CacheTTL, int] = {"5m": 300, "1h": 3600}


class ModelRequest(BaseModel):
    """One Messages API call."""

    model: str  # "": the worker's default model (filled in by the call_model activity)
    max_tokens: int  # 0: the worker's default (KRON_MAX_TOKENS), filled in the same way
    system: str | None = None
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    # Lifetime of the prompt-cache entries this call writes. None: the deployment's default
    # (the worker's KRON_PROMPT_CACHE_TTL; 5m for an adapter used on its own).
    cache_ttl: CacheTTL | None = None


class TranscriptRequest(BaseModel):
    """A model call whose conversation lives in the transcript store (transcripts-v1).

    Constant-size however long the conversation is: the stored messages by their chain's `head`,
    the few recorded since the last call in `tail`. `call_model` assembles the full `ModelRequest`.
    """

    transcript_id: str
    turn: int = 0  # model calls before this one in the run (the same for a call asked again)
    model: str
    max_tokens: int
    system: ContentRef | str | None = None
    tools: ContentRef | list[dict[str, Any]] = Field(default_factory=list)
    head: str | None = None
    tail: list[TranscriptMessage] = Field(default_factory=list)
    # The oldest this many tool results are sent as a short note instead (the context guard).
    drop_tool_results: int = 0
    cache_ttl: CacheTTL | None = None  # as ModelRequest.cache_ttl


class TranscriptUpdate(BaseModel):
    """What `call_model` stored for a `TranscriptRequest`."""

    head: str  # the chain's newest node: every message sent, then the reply (if it is kept)
    reply: ContentRef | None  # the reply's content as the conversation keeps it; None: not kept
    system: ContentRef | None
    tools: ContentRef | None
    context_window_tokens: int  # of the model that answered (the worker's setting)


class ModelResponse(BaseModel):
    """The parts of a Messages API response the loop needs."""

    content: list[dict[str, Any]]  # content blocks as plain JSON dicts (text / tool_use / ...)
    stop_reason: str | None
    input_tokens: int = 0  # uncached input only (as the API counts it)
    output_tokens: int = 0
    # Prompt caching: input read from the cache, and written to it (all TTLs; of which 1 h).
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    # USD for this call by the worker's price table; None: this model's price is unknown.
    cost_usd: float | None = None
    model: str = ""
    request_id: str | None = None
    duration_seconds: float = 0.0
    # transcripts-v1: the reply is stored; `content` then holds only its text and tool_use blocks.
    transcript: TranscriptUpdate | None = None


class ToolCall(BaseModel):
    """A `tool_use` block the model asked for."""

    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """The outcome of one tool call, fed back to the model as a `tool_result` block."""

    tool_use_id: str
    content: str  # the result; with content_ref, only its start (a preview)
    is_error: bool = False
    content_ref: ContentRef | None = None  # transcripts-v1: the result as stored
    duration_seconds: float = 0.0
    # The call may or may not have taken effect (an unsafe call in flight when its worker died).
    outcome_unknown: bool = False


class ModelCallError(Exception):
    """A model call that failed. `retryable` says whether trying again can help.

    Adapters raise it with secrets already stripped from `message`.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        retry_after_seconds: float | None = None,
        code: str = "model_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after_seconds = retry_after_seconds
        self.code = code


class ToolTransportError(Exception):
    """The tool backend could not be reached or failed transiently (5xx, connection): worth a retry.

    A tool that ran and reported failure is *not* this: that is a `ToolResult(is_error=True)`.
    `maybe_executed` is False only when the request certainly never reached the backend (connection
    refused, rate-limited before running): only then may an unsafe tool call be retried blindly.
    """

    def __init__(self, message: str, *, maybe_executed: bool = True) -> None:
        super().__init__(message)
        self.maybe_executed = maybe_executed
