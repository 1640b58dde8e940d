"""Prompt-cache accounting as the Anthropic Messages API does it, for `FakeAnthropic`.

The rules (from the API's prompt-caching docs; /work/shared/notes/prompt-caching.md):
- A request renders as tools, then system, then messages, one block each; the key of block p is a
  cumulative hash of blocks 0..p with the model and the workspace (here: the API key).
- At most 4 blocks carry `cache_control`; every 1h breakpoint comes before every 5m one; none on
  thinking blocks or empty text. A top-level `cache_control` marks the last cacheable block.
- Breakpoints whose prefix is under the model's minimum are ignored (no error).
- Each breakpoint at p looks for a live entry at p, p-1, ..., p-19; the highest hit over all
  breakpoints is A, read from the cache. Only breakpoint positions are written: each beyond A
  writes its entry, living ttl from the request's start; a hit refreshes its entry the same way.
- B = the last 1h breakpoint after A (else A), C = the last breakpoint: read A, 1h write B-A,
  5m write C-B, uncached input total-C.
- An entry is visible to other requests once the response that wrote it begins.

Tokens are approximated from characters (`CHARS_PER_TOKEN`); the key is order-sensitive JSON, so a
reordered tool list or a changed timestamp changes the prefix, as it would for the real API.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
CHARS_PER_TOKEN = 4

# The smallest cacheable prefix in tokens, by model id prefix (longest prefix wins). The values have
# changed over time (the docs once said Sonnet 4.6 = 2048): per-model configuration, not a rule.
MIN_CACHEABLE_TOKENS: dict[str, int] = {
    "claude-opus-5": 512,
    "claude-fable-5": 512,
    "claude-mythos-5": 512,
    "claude-opus-4-8": 1024,
    "claude-sonnet-5": 1024,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-4": 1024,
    "claude-opus-4-7": 2048,
    "claude-3-5-haiku": 2048,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-haiku-4-5": 4096,
}
DEFAULT_MIN_CACHEABLE_TOKENS = 1024  # for model ids the table does not know (e.g. "claude-test")

_NOT_CACHEABLE = frozenset({"thinking", "redacted_thinking"})


class CacheControlError(ValueError):
    """A request the API rejects with 400 invalid_request_error (the message is the API's)."""


@dataclass(frozen=True)
class CacheUsage:
    """The cache part of a response's `usage`."""

    input_tokens: int  # uncached
    cache_read_input_tokens: int = 0
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.ephemeral_5m_input_tokens + self.ephemeral_1h_input_tokens

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    def as_usage(self, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
        }


@dataclass(frozen=True)
class _Block:
    where: str  # the API's path to it, for error messages
    key: str  # cumulative: this block and everything before it
    end: int  # tokens up to and including this block
    ttl: str | None  # the block's breakpoint, if it has one


@dataclass
class _Entry:
    expires: float
    ttl_seconds: float


@dataclass
class CachePlan:
    """One request's accounting, decided when it starts; its writes land when its response begins."""

    usage: CacheUsage
    writes: list[tuple[str, float]] = field(default_factory=list)  # (key, ttl seconds)
    started: float = 0.0


def breakpoints(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, ttl) of every breakpoint in render order, after the API's checks.

    Raises `CacheControlError` for what the API answers with 400."""
    return [(b.where, b.ttl) for b in _render(body, "") if b.ttl is not None]


def min_cacheable_tokens(model: str, table: Mapping[str, int] = MIN_CACHEABLE_TOKENS,
                         default: int = DEFAULT_MIN_CACHEABLE_TOKENS) -> int:
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else default


class PromptCache:
    """The cache entries of one fake API (all workspaces). Thread-safe."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_tokens: Mapping[str, int] | None = None,
        default_min_tokens: int = DEFAULT_MIN_CACHEABLE_TOKENS,
    ) -> None:
        self.clock = clock
        self.min_tokens = dict(MIN_CACHEABLE_TOKENS if min_tokens is None else min_tokens)
        self.default_min_tokens = default_min_tokens
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def plan(self, body: Mapping[str, Any], workspace: str, started: float | None = None) -> CachePlan:
        """Account one request that started at `started` (default: now) on this cache's clock.

        Raises `CacheControlError` for a request the API rejects."""
        blocks = _render(body, workspace)
        started = self.clock() if started is None else started
        total = blocks[-1].end if blocks else 0
        minimum = min_cacheable_tokens(str(body.get("model", "")), self.min_tokens, self.default_min_tokens)
        marked = [(p, b) for p, b in enumerate(blocks) if b.ttl is not None and b.end >= minimum]
        if not marked:
            return CachePlan(CacheUsage(input_tokens=total), started=started)
        with self._lock:
            hit = -1
            for p, _ in marked:
                for j in range(p, max(p - LOOKBACK_BLOCKS, -1), -1):
                    entry = self._entries.get(blocks[j].key)
                    if entry is not None and entry.expires > started:
                        entry.expires = max(entry.expires, started + entry.ttl_seconds)
                        hit = max(hit, j)
                        break
        read = blocks[hit].end if hit >= 0 else 0
        beyond = [(p, b) for p, b in marked if p > hit]
        last_1h = max((b.end for _, b in beyond if b.ttl == "1h"), default=read)
        last = max((b.end for _, b in marked), default=read)
        usage = CacheUsage(
            input_tokens=total - last,
            cache_read_input_tokens=read,
            ephemeral_1h_input_tokens=last_1h - read,
            ephemeral_5m_input_tokens=last - last_1h,
        )
        writes = [(b.key, TTL_SECONDS[b.ttl or "5m"]) for _, b in beyond]
        return CachePlan(usage, writes, started)

    def commit(self, plan: CachePlan) -> None:
        """The response begins: the request's entries become visible (a longer life is kept)."""
        with self._lock:
            now = self.clock()
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            for key, ttl in plan.writes:
                expires = plan.started + ttl
                entry = self._entries.get(key)
                if entry is None or entry.expires < expires:
                    self._entries[key] = _Entry(expires, max(ttl, entry.ttl_seconds if entry else 0.0))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def entry_count(self) -> int:
        with self._lock:
            return len(self._entries)


def approx_tokens(block: Any) -> int:
    return max(1, len(_canonical(block)) // CHARS_PER_TOKEN)


def _canonical(value: Any) -> str:
    # Key order kept on purpose: the real API hashes what it renders, which follows the JSON sent.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _render(body: Mapping[str, Any], workspace: str) -> list[_Block]:
    """Every block of the prompt in render order, with its key, token offset and breakpoint."""
    items: list[tuple[str, Any, str]] = []  # (where, block, what else the key covers)
    for i, tool in enumerate(_list(body.get("tools"))):
        items.append((f"tools.{i}", tool, "tool"))
    system = body.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) else _list(system)
    # A change at one level invalidates that level and every one after it: the settings that
    # belong to a level enter the key where the level starts.
    system_level = _canonical({"speed": body.get("speed")})
    for i, block in enumerate(system_blocks):
        items.append((f"system.{i}", block, "system" + (system_level if i == 0 else "")))
    messages_level = _canonical(_message_level_settings(body)) + ("" if system_blocks else system_level)
    first = True
    for i, message in enumerate(_list(body.get("messages"))):
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        message_blocks = [{"type": "text", "text": content}] if isinstance(content, str) else _list(content)
        for j, block in enumerate(message_blocks):
            extra = f"{message.get('role')}:{j == 0}" + (messages_level if first else "")
            items.append((f"messages.{i}.content.{j}", block, extra))
            first = False

    ttls = [_ttl_of(where, block) for where, block, _ in items]
    auto = body.get("cache_control")
    if auto is not None:
        ttl = _ttl(auto, "cache_control")
        explicit = sum(1 for t in ttls if t is not None)
        for p in range(len(items) - 1, -1, -1):
            if not _cacheable(items[p][1]):
                continue
            if ttls[p] is None:
                if explicit >= MAX_BREAKPOINTS:
                    raise CacheControlError(
                        "automatic caching needs a free cache_control slot, but "
                        f"{MAX_BREAKPOINTS} blocks already have cache_control"
                    )
                ttls[p] = ttl
            elif ttls[p] != ttl:
                raise CacheControlError(
                    f"{items[p][0]}.cache_control: the last block's ttl '{ttls[p]}' differs from "
                    f"the top-level cache_control ttl '{ttl}'"
                )
            break
    found = sum(1 for t in ttls if t is not None)
    if found > MAX_BREAKPOINTS:
        raise CacheControlError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )
    seen_5m = False
    for (where, _, _), marked in zip(items, ttls, strict=True):
        if marked == "5m":
            seen_5m = True
        elif marked == "1h" and seen_5m:
            raise CacheControlError(
                f"{where}.cache_control: a ttl='1h' cache_control block must not come after a "
                "ttl='5m' cache_control block (longer TTLs must come first)"
            )

    rendered: list[_Block] = []
    key = hashlib.sha256(_canonical([workspace, body.get("model")]).encode()).hexdigest()
    end = 0
    for (where, block, extra), marked in zip(items, ttls, strict=True):
        plain = _without_cache_control(block)
        key = hashlib.sha256(f"{key}|{extra}|{_canonical(plain)}".encode()).hexdigest()
        end += approx_tokens(plain)
        rendered.append(_Block(where, key, end, marked))
    return rendered


def _message_level_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """Settings whose change invalidates the cached messages (an explicit default is no change)."""
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, Mapping) and dict(tool_choice) == {"type": "auto"}:
        tool_choice = None
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, Mapping) else None
    return {"tool_choice": tool_choice, "thinking": body.get("thinking"), "effort": effort}


def _ttl_of(where: str, block: Any) -> str | None:
    if not isinstance(block, Mapping) or block.get("cache_control") is None:
        return None
    if block.get("type") in _NOT_CACHEABLE:
        raise CacheControlError(f"{where}.{block.get('type')}.cache_control: Extra inputs are not permitted")
    if block.get("type") == "text" and not str(block.get("text", "")).strip():
        raise CacheControlError(f"{where}: cache_control cannot be set for empty text blocks")
    return _ttl(block["cache_control"], f"{where}.cache_control")


def _ttl(control: Any, where: str) -> str:
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        raise CacheControlError(f"{where}.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise CacheControlError(f"{where}.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _cacheable(block: Any) -> bool:
    if not isinstance(block, Mapping) or block.get("type") in _NOT_CACHEABLE:
        return False
    return not (block.get("type") == "text" and not str(block.get("text", "")).strip())


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, Mapping) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []
