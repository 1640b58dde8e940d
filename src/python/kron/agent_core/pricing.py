"""What a model call costs in USD, from a price table shipped as data (`prices.json`).

Prices are per million tokens. Prompt caching is priced from the input price (Anthropic's
multipliers): a 5-minute cache write costs 1.25x input, a 1-hour write 2x, a cache read 0.1x.
A model the table does not know has an unknown cost: `None`, never 0, so a run's spend is never
understated.

Pure (no I/O beyond reading the packaged table once), so the worker computes a call's cost inside
its activity and the number is recorded in the run's history.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kron.agent_core.types import ModelResponse

CACHE_WRITE_5M_MULTIPLIER = 1.25
CACHE_WRITE_1H_MULTIPLIER = 2.0
CACHE_READ_MULTIPLIER = 0.1
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per MTok

# The API answers with dated ids (claude-haiku-4-5-20251001) for the alias a table lists.
_DATE_SUFFIX = re.compile(r"-\d{8}$")


class ModelPrice(BaseModel):
    """List price of one model, USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, le=10_000)
    output: float = Field(ge=0, le=10_000)

    @field_validator("input", "output")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("a price must be a finite number")
        return value


class PriceTable:
    """Prices by model id; `cost_usd` of a call, or None when its model has no price."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, ModelPrice] | None = None) -> PriceTable:
        """The shipped list prices, with `overrides` replacing or adding models."""
        return cls({**shipped_prices(), **(overrides or {})})

    @property
    def model_ids(self) -> list[str]:
        return sorted(self._prices)

    def model_id(self, model: str) -> str | None:
        """The table's id for `model` (exact, or without a trailing -YYYYMMDD), or None."""
        if model in self._prices:
            return model
        undated = _DATE_SUFFIX.sub("", model)
        return undated if undated in self._prices else None

    def price(self, model: str) -> ModelPrice | None:
        model_id = self.model_id(model)
        return self._prices[model_id] if model_id is not None else None

    def cost_usd(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cache_creation_1h_input_tokens: int = 0,
    ) -> float | None:
        """USD for one call. `input_tokens` is uncached input only; `cache_creation_input_tokens`
        counts writes of all TTLs, of which `cache_creation_1h_input_tokens` were 1-hour ones."""
        price = self.price(model)
        if price is None:
            return None
        writes_1h = min(cache_creation_1h_input_tokens, cache_creation_input_tokens)
        writes_5m = cache_creation_input_tokens - writes_1h
        input_units = (
            input_tokens
            + writes_5m * CACHE_WRITE_5M_MULTIPLIER
            + writes_1h * CACHE_WRITE_1H_MULTIPLIER
            + cache_read_input_tokens * CACHE_READ_MULTIPLIER
        )
        return (input_units * price.input + output_tokens * price.output) / TOKENS_PER_PRICE_UNIT

    def response_cost_usd(self, response: ModelResponse, model: str) -> float | None:
        """The cost of one response; `model` is the one asked for when the response names none."""
        return self.cost_usd(
            response.model or model,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cache_read_input_tokens=response.cache_read_input_tokens,
            cache_creation_input_tokens=response.cache_creation_input_tokens,
            cache_creation_1h_input_tokens=response.cache_creation_1h_input_tokens,
        )


@lru_cache(maxsize=1)
def shipped_prices() -> dict[str, ModelPrice]:
    """The list prices packaged with kron (`prices.json`)."""
    data = json.loads(resources.files("kron.agent_core").joinpath("prices.json").read_text())
    return {model: ModelPrice.model_validate(price) for model, price in data["models"].items()}


def add_costs(total: float | None, cost: float | None) -> float | None:
    """A running total of USD: once one part is unknown, so is the total."""
    if total is None or cost is None:
        return None
    return total + cost
