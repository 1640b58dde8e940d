"""The limits on what a run may ask for that depend on settings (the schema checks the rest): one
set of checks for a dispatch and for a schedule's run template, so both refuse the same runs."""

from __future__ import annotations

from typing import Any

from kron.common.callback_urls import url_problem
from kron.common.mcp_connect import user_server_errors
from kron.contracts.mcp import McpServer
from kron.gateway.settings import GatewaySettings


def run_limit_errors(
    settings: GatewaySettings,
    *,
    goal: str,
    toolkits: list[str],
    model: str | None,
    max_iterations: int | None,
    token_budget: int | None,
    callback_url: str | None,
    loc: tuple[str, ...],
    budget_field: str = "token_budget",
) -> list[dict[str, Any]]:
    """Errors in the shape of FastAPI's 422 `detail` entries, under `loc` (the run's place in the
    body); `budget_field` is what the body calls the token budget."""
    errors: list[dict[str, Any]] = []

    def reject(field: str, message: str, kind: str) -> None:
        errors.append({"loc": [*loc, field], "msg": message, "type": kind})

    if not goal.strip():
        reject("goal", "Goal must not be blank", "string_blank")
    if len(goal) > settings.max_goal_chars:
        reject("goal", f"Goal must be at most {settings.max_goal_chars} characters", "string_too_long")
    if len(toolkits) > settings.max_toolkits:
        reject("toolkits", f"At most {settings.max_toolkits} toolkits", "too_long")
    if model is not None and (len(model) > settings.model_max_length or not settings.model_regex.fullmatch(model)):
        reject("model", "Model is not an allowed model name", "model_not_allowed")
    if max_iterations is not None and max_iterations > settings.max_iterations_limit:
        reject("max_iterations", f"Must be at most {settings.max_iterations_limit}", "less_than_equal")
    if token_budget is not None and token_budget > settings.max_token_budget:
        reject(budget_field, f"Must be at most {settings.max_token_budget} tokens", "less_than_equal")
    if callback_url is not None:
        problem = url_problem(callback_url, allow_private=settings.webhook_allow_private_networks)
        if problem is not None:
            reject("callback_url", f"callback_url {problem}", "callback_url_not_allowed")
    return errors


def mcp_server_errors(
    settings: GatewaySettings, servers: list[McpServer], *, loc: tuple[str, ...]
) -> list[dict[str, Any]]:
    """A user (a dispatch, a schedule, an agent made over the API) may point the worker only at MCP
    servers on the operator's allow-list (SSRF): 422 `detail` entries under `loc`."""
    return [
        {"loc": [*loc, "mcp_servers", str(index)], "msg": problem, "type": "mcp_server_not_allowed"}
        for index, problem in user_server_errors(servers, settings.mcp_url_allowlist)
    ]
