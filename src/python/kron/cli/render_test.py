from __future__ import annotations

from kron.cli.render import step_line, usage_line


def test_usage_line_shows_cache_reads_and_writes_in_the_total() -> None:
    usage = {"input_tokens": 30, "output_tokens": 70, "cache_read_input_tokens": 9000,
             "cache_creation_input_tokens": 900, "model_calls": 3, "tool_calls": 2, "cost_usd": 0.0123}
    assert usage_line(usage) == (
        "10,000 tokens (in 30, out 70, cache read 9,000, cache write 900) · 3 model calls · 2 tool calls"
        " · $0.0123"
    )
    # No cache traffic (or an older server): the short form.
    assert usage_line({"input_tokens": 10, "output_tokens": 5, "model_calls": 1}) == (
        "15 tokens (in 10, out 5) · 1 model calls · 0 tool calls · $0.0000"
    )
    assert usage_line(None) == "0 tokens (in 0, out 0) · 0 model calls · 0 tool calls · $0.0000"
    # A model without a price: said so, never $0.
    assert usage_line({"model_calls": 1, "cost_usd": None}).endswith("· cost unknown (a model without a price)")


def test_a_model_step_shows_its_own_tokens() -> None:
    model = {"kind": "model", "name": "claude-sonnet-5", "turn": 2, "ok": True, "duration_seconds": 1.5,
             "input_tokens": 4, "output_tokens": 40, "cache_read_input_tokens": 2000,
             "cache_creation_input_tokens": 600}
    assert step_line(model).endswith("1.50 s  2,644 tokens (in 4, out 40, cache read 2,000, cache write 600)")
    tool = {"kind": "tool", "name": "GITHUB_STAR", "turn": 2, "ok": True, "duration_seconds": 0.2,
            "input_tokens": 0}
    assert step_line(tool).endswith("0.20 s")
