from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from kron.agent_core.pricing import ModelPrice, PriceTable, add_costs, shipped_prices
from kron.agent_core.types import ModelResponse


def test_shipped_table_has_todays_list_prices() -> None:
    prices = shipped_prices()
    assert prices["claude-sonnet-5"] == ModelPrice(input=2.0, output=10.0)
    assert prices["claude-opus-4-8"] == ModelPrice(input=5.0, output=25.0)
    assert prices["claude-haiku-4-5"] == ModelPrice(input=1.0, output=5.0)
    assert prices["claude-fable-5"] == ModelPrice(input=10.0, output=50.0)


def test_plain_input_and_output() -> None:
    table = PriceTable.with_overrides()
    # 1M input at $2 + 1M output at $10.
    assert table.cost_usd("claude-sonnet-5", input_tokens=1_000_000, output_tokens=1_000_000) == 12.0


def test_cache_multipliers_stack_on_the_input_price() -> None:
    table = PriceTable({"m": ModelPrice(input=4.0, output=20.0)})
    cost = table.cost_usd(
        "m",
        input_tokens=1_000_000,  # 4.00
        output_tokens=0,
        cache_read_input_tokens=1_000_000,  # 0.1 x 4 = 0.40
        cache_creation_input_tokens=3_000_000,  # 2M at 5 min (1.25 x 4 = 5.00 each), 1M at 1 h (2 x 4)
        cache_creation_1h_input_tokens=1_000_000,
    )
    assert cost == pytest.approx(4.0 + 0.4 + 2 * 5.0 + 8.0)


def test_dated_ids_use_their_alias_price() -> None:
    table = PriceTable.with_overrides()
    assert table.model_id("claude-haiku-4-5-20251001") == "claude-haiku-4-5"
    assert table.cost_usd("claude-haiku-4-5-20251001", input_tokens=1_000_000, output_tokens=0) == 1.0


def test_unknown_model_costs_none_not_zero() -> None:
    table = PriceTable.with_overrides()
    assert table.model_id("claude-fake") is None
    assert table.cost_usd("claude-fake", input_tokens=10, output_tokens=10) is None
    response = ModelResponse(content=[], stop_reason="end_turn", input_tokens=5, model="gpt-9")
    assert table.response_cost_usd(response, "claude-sonnet-5") is None


def test_response_cost_falls_back_to_the_requested_model() -> None:
    table = PriceTable.with_overrides()
    response = ModelResponse(content=[], stop_reason="end_turn", input_tokens=500_000, output_tokens=100_000)
    assert table.response_cost_usd(response, "claude-sonnet-5") == pytest.approx(1.0 + 1.0)


def test_overrides_replace_and_add() -> None:
    table = PriceTable.with_overrides(
        {"claude-sonnet-5": ModelPrice(input=3.0, output=15.0), "my-proxy-model": ModelPrice(input=1, output=1)}
    )
    assert table.cost_usd("claude-sonnet-5", input_tokens=1_000_000, output_tokens=0) == 3.0
    assert table.cost_usd("my-proxy-model", input_tokens=0, output_tokens=2_000_000) == 2.0
    assert "claude-opus-5" in table.model_ids


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 1e9])
def test_a_price_must_be_a_sane_number(bad: float) -> None:
    with pytest.raises(ValidationError):
        ModelPrice(input=bad, output=1.0)


def test_an_unknown_part_makes_the_total_unknown() -> None:
    assert add_costs(1.5, 0.25) == 1.75
    assert add_costs(None, 0.25) is None
    assert add_costs(1.5, None) is None
