from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from kron.agent_core import mcp_tools
from kron.agent_core.tool_safety import ToolSafetyPolicy
from kron.contracts.models import ApprovalPolicy, ToolSafety

ANTHROPIC_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SERVER_NAMES = st.from_regex(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$", fullmatch=True)
TOOL_NAMES = st.text(min_size=1, max_size=128)


def test_a_plain_tool_name_is_prefixed_by_its_server() -> None:
    assert mcp_tools.namespaced_name("notes", "delete_item") == "mcp__notes__delete_item"


def test_a_name_that_does_not_fit_is_cut_with_a_digest_deterministically() -> None:
    long = "x" * 80
    name = mcp_tools.namespaced_name("notes", long)
    assert len(name) == 64 and ANTHROPIC_TOOL_NAME.match(name)
    assert name == mcp_tools.namespaced_name("notes", long)
    assert name != mcp_tools.namespaced_name("notes", long + "y")  # same cut, another digest
    dotted = mcp_tools.namespaced_name("notes", "files.read")
    assert dotted.startswith("mcp__notes__files_read_") and ANTHROPIC_TOOL_NAME.match(dotted)
    # The digest keeps apart names that clean up to the same text.
    assert dotted != mcp_tools.namespaced_name("notes", "files/read")
    assert dotted != mcp_tools.namespaced_name("notes", "files_read")


@given(SERVER_NAMES, TOOL_NAMES)
def test_every_name_is_a_valid_anthropic_tool_name_under_its_server(server: str, tool: str) -> None:
    name = mcp_tools.namespaced_name(server, tool)
    assert ANTHROPIC_TOOL_NAME.match(name)
    assert name.startswith(mcp_tools.server_prefix(server))
    assert mcp_tools.is_mcp_tool(name)


@given(SERVER_NAMES, SERVER_NAMES, st.from_regex(r"^[A-Za-z0-9_-]{1,20}$", fullmatch=True))
def test_two_servers_never_share_a_name(a: str, b: str, tool: str) -> None:
    if a != b:
        assert mcp_tools.namespaced_name(a, tool) != mcp_tools.namespaced_name(b, tool)


@given(st.from_regex(r"^[A-Z0-9_]{1,64}$", fullmatch=True), SERVER_NAMES, TOOL_NAMES)
def test_no_mcp_name_equals_a_composio_slug(slug: str, server: str, tool: str) -> None:
    assert mcp_tools.namespaced_name(server, tool) != slug


def test_safety_from_annotations() -> None:
    def of(**hints: bool | None) -> ToolSafety:
        return mcp_tools.safety_from_annotations(**{"read_only": None, "idempotent": None,
                                                    "destructive": None, **hints})

    assert of(read_only=True) is ToolSafety.READ_ONLY
    assert of(read_only=False, idempotent=True, destructive=True) is ToolSafety.IDEMPOTENT
    assert of(read_only=False, destructive=True) is ToolSafety.UNSAFE
    assert of(read_only=False, destructive=False) is ToolSafety.UNSAFE  # additive, not idempotent
    assert of() is ToolSafety.UNSAFE  # unannotated


def test_kron_tool_safety_and_approval_address_a_server_or_one_tool() -> None:
    policy = ToolSafetyPolicy({"mcp__notes": ToolSafety.IDEMPOTENT, "mcp__notes__purge": ToolSafety.UNSAFE})
    assert policy.override("mcp__notes__delete_item") is ToolSafety.IDEMPOTENT
    assert policy.override("mcp__notes__purge") is ToolSafety.UNSAFE
    assert policy.override("mcp__notesx__lookup") is None
    approval = ApprovalPolicy(require_for=["mcp__notes"])
    assert approval.requires("mcp__notes__delete_item") and not approval.requires("mcp__other__delete_item")


def test_a_tool_definition_always_has_an_object_schema_and_a_description() -> None:
    definition = mcp_tools.tool_definition("mcp__s__t", None, {}, server="s")
    assert definition["input_schema"] == {"type": "object", "properties": {}}
    assert definition["description"]
