from __future__ import annotations

import pytest

from kron.agent_core.tool_safety import ToolSafetyPolicy
from kron.contracts.models import ToolSafety


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("GMAIL_FETCH_EMAILS", ToolSafety.READ_ONLY),
        ("GITHUB_LIST_REPOSITORY_ISSUES", ToolSafety.READ_ONLY),
        ("GOOGLE_CALENDAR_GET_EVENT", ToolSafety.READ_ONLY),
        ("SLACK_SET_CHANNEL_TOPIC", ToolSafety.IDEMPOTENT),
        ("GMAIL_SEND_EMAIL", ToolSafety.UNSAFE),
        ("GITHUB_CREATE_ISSUE", ToolSafety.UNSAFE),
        ("NOTES_APPEND", ToolSafety.UNSAFE),
        ("DEMO_SUM_NUMBERS", ToolSafety.READ_ONLY),
        ("WEIRD", ToolSafety.UNSAFE),
    ],
)
def test_defaults_follow_the_verb_and_unknown_is_unsafe(slug: str, expected: ToolSafety) -> None:
    assert ToolSafetyPolicy().classify(slug) == expected


def test_overrides_by_tool_beat_overrides_by_toolkit_and_defaults() -> None:
    policy = ToolSafetyPolicy({
        "github": ToolSafety.READ_ONLY,
        "GITHUB_CREATE_ISSUE": ToolSafety.UNSAFE,
        "GMAIL_FETCH_EMAILS": ToolSafety.UNSAFE,
    })
    assert policy.classify("GITHUB_MERGE_PULL_REQUEST") == ToolSafety.READ_ONLY
    assert policy.classify("GITHUB_CREATE_ISSUE") == ToolSafety.UNSAFE
    assert policy.classify("GMAIL_FETCH_EMAILS") == ToolSafety.UNSAFE
