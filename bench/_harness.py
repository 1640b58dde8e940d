"""Shared set-up for kron's benchmarks: fake servers, a Temporal dev server, a step tool.

Benchmarks print figures and ratios measured in the same run; they assert nothing about speed.
"""

from __future__ import annotations

import statistics
from typing import Any

# Benchmarks reuse the test suite's fake servers (`tests/` is a source root, like `bench/`).
from kron_testing.fake_anthropic import FakeAnthropic
from kron_testing.fake_composio import FakeComposio

ANTHROPIC_KEY = "sk-ant-bench-key"
COMPOSIO_KEY = "ck-bench-key"
STEP_TOOL = "NOTES_APPEND"


def add_step_tool(composio: FakeComposio, user_id: str) -> str:
    def handler(user: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"appended": True, "turn": args.get("turn")}

    composio.add_tool(
        STEP_TOOL, "notes", "Append a note.",
        {"type": "object", "properties": {"turn": {"type": "integer"},
                                          "call": {"type": "integer"}}},
        handler,
    )
    composio.connect(user_id, "notes")
    return "notes"


def fakes() -> tuple[FakeAnthropic, FakeComposio]:
    return FakeAnthropic(api_key=ANTHROPIC_KEY).start(), FakeComposio(api_key=COMPOSIO_KEY).start()


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
