from __future__ import annotations

import pytest
from pydantic import ValidationError

from kron.contracts.agents import AgentOverrides, AgentSpec, apply_agent
from kron.contracts.models import AgentRef, AgentRunInput, ToolPermission, ToolPolicy, ToolSafety

REF = AgentRef(name="triage", version=3)


def spec(**fields: object) -> AgentSpec:
    return AgentSpec.model_validate(fields)


def test_the_longest_policy_key_wins() -> None:
    policy = ToolPolicy.model_validate({
        "default": "deny",
        "permissions": {"github": "ask", "GITHUB_GET_ISSUE": "allow", "gmail": "deny"},
        "safety": {"github": "read_only", "GITHUB_CREATE_ISSUE": "unsafe"},
    })
    assert policy.permission("GITHUB_CREATE_ISSUE") is ToolPermission.ASK
    assert policy.permission("github_get_issue") is ToolPermission.ALLOW
    assert policy.permission("GITHUBX_THING") is ToolPermission.DENY  # a prefix is a whole toolkit
    assert policy.permission("SLACK_SEND") is ToolPermission.DENY  # the default
    assert policy.safety_of("GITHUB_LIST_REPOS") is ToolSafety.READ_ONLY
    assert policy.safety_of("GITHUB_CREATE_ISSUE") is ToolSafety.UNSAFE
    assert policy.safety_of("SLACK_SEND") is None


def test_an_agent_becomes_run_input_fields() -> None:
    agent = spec(system_prompt="You triage.", model="claude-x", max_tokens=2000, toolkits=["GitHub", "slack"],
                 limits={"max_iterations": 10, "budget_usd": 2.0})
    run, errors = apply_agent(REF, agent, AgentOverrides())
    assert errors == []
    built = AgentRunInput(user_id="u", goal="g", **run)
    assert built.agent == REF and built.system_prompt == "You triage." and built.model == "claude-x"
    assert built.toolkits == ["github", "slack"] and built.max_iterations == 10 and built.budget_usd == 2.0
    assert built.approval is None and built.tool_policy == ToolPolicy()


def test_overrides_only_tighten_and_narrow() -> None:
    agent = spec(toolkits=["github", "slack"], limits={"max_iterations": 10, "token_budget": 1000})
    run, errors = apply_agent(REF, agent, AgentOverrides(toolkits=["slack"], max_iterations=5, model="m2"))
    assert errors == [] and run["toolkits"] == ["slack"] and run["max_iterations"] == 5 and run["model"] == "m2"
    assert run["token_budget"] == 1000

    _, errors = apply_agent(REF, agent, AgentOverrides(toolkits=["gmail"], max_iterations=11, token_budget=1001,
                                                       budget_usd=1.0),
                            loc=("body",), fields={"token_budget": "budget"})
    assert [e["loc"] for e in errors] == [["body", "toolkits"], ["body", "max_iterations"], ["body", "budget"]]
    # The agent sets no USD budget: a run may set one (that is tighter than none).


def test_ask_rules_come_with_the_agents_approval_timeout() -> None:
    agent = spec(tool_policy={"permissions": {"gmail": "ask"}}, approval_timeout_seconds=120)
    run, _ = apply_agent(REF, agent, AgentOverrides())
    assert run["approval"].timeout_seconds == 120 and run["approval"].require_for == []
    run, _ = apply_agent(REF, agent, AgentOverrides(approval_required=["github"], approval_timeout_seconds=30))
    assert run["approval"].require_for == ["github"] and run["approval"].timeout_seconds == 30


@pytest.mark.parametrize("fields", [
    {"limits": {"max_iterations": "10"}},  # strict numbers
    {"tool_policy": {"permissions": {"github": "maybe"}}},
    {"tool_policy": {"safety": {"github": "harmless"}}},
    {"tool_policy": {"permissions": {"bad key!": "allow"}}},
    {"mcp_servers": [{"name": "tools", "url": "http://a"}, {"name": "tools", "url": "http://b"}]},
    {"mcp_servers": [{"name": "tools", "url": "http://a", "headers": {"Authorization": "Bearer sk-123"}}]},
    {"unknown": 1},
])
def test_bad_specs_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AgentSpec.model_validate(fields)
