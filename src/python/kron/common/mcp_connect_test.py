from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kron.common.mcp_connect import McpUnavailable, resolve_headers, url_allowed, user_server_errors
from kron.contracts.mcp import HeaderValueFrom, McpServer, SecretKeyRef
from kron.contracts.models import AgentRunInput


def _server(url: str = "https://tools.example.com/mcp", **headers: HeaderValueFrom) -> McpServer:
    return McpServer(name="tools", url=url, headers=headers)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://tools.example.com/mcp", True),
    ("https://tools.example.com/mcp/v2", True),
    ("https://tools.example.com/mcpx", False),  # a path prefix ends at a segment
    ("https://tools.example.com.evil.net/mcp", False),
    ("https://TOOLS.example.com:443/mcp", True),
    ("https://tools.example.com:8443/mcp", False),
    ("http://tools.example.com/mcp", False),
    ("https://user:pw@tools.example.com/mcp", False),
    ("http://169.254.169.254/latest/meta-data/", False),
    ("http://127.0.0.1:8080/mcp", False),
    ("file:///etc/passwd", False),
    ("not a url", False),
])
def test_the_allow_list_compares_parsed_urls(url: str, allowed: bool) -> None:
    assert url_allowed(url, ["https://tools.example.com/mcp"]) is allowed


def test_an_empty_allow_list_allows_nothing() -> None:
    assert not url_allowed("https://tools.example.com/mcp", [])


def test_user_servers_are_checked_for_url_and_env_references() -> None:
    servers = [
        _server(),
        McpServer(name="meta", url="http://169.254.169.254/", headers={}),
        _server(Authorization=HeaderValueFrom(env="ANTHROPIC_API_KEY")),
    ]
    errors = user_server_errors(servers, ["https://tools.example.com/"])
    assert [i for i, _ in errors] == [1, 2]
    assert "allow-list" in errors[0][1] and "must start with MCP_" in errors[1][1]


def test_headers_resolve_from_env_and_mounted_secrets_without_leaking_values(tmp_path: Path) -> None:
    (tmp_path / "tools-auth").mkdir()
    (tmp_path / "tools-auth" / "token").write_text("s3cret-from-file\n")
    server = McpServer(name="tools", url="https://tools.example.com/mcp", headers={
        "Authorization": HeaderValueFrom(secret_key_ref=SecretKeyRef(name="tools-auth", key="token")),
        "X-Team": HeaderValueFrom(env="MCP_TEAM"),
    })
    assert resolve_headers(server, tmp_path, {"MCP_TEAM": "infra"}) == {
        "Authorization": "s3cret-from-file", "X-Team": "infra"
    }
    with pytest.raises(McpUnavailable, match="env MCP_TEAM is not set") as unset:
        resolve_headers(server, tmp_path, {})
    assert unset.value.not_sent
    missing = _server(Authorization=HeaderValueFrom(secret_key_ref=SecretKeyRef(name="other", key="token")))
    with pytest.raises(McpUnavailable, match="secret other/token is not mounted"):
        resolve_headers(missing, tmp_path, {})
    escape = _server(Authorization=HeaderValueFrom(secret_key_ref=SecretKeyRef(name="tools-auth", key="..")))
    with pytest.raises(McpUnavailable, match="not mounted"):
        resolve_headers(escape, tmp_path, {})
    with pytest.raises(McpUnavailable, match="must start with MCP_"):
        resolve_headers(_server(Authorization=HeaderValueFrom(env="HOME")), tmp_path, {"HOME": "/root"})


def test_a_literal_header_value_or_a_repeated_server_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        McpServer.model_validate({"name": "tools", "url": "https://x/", "headers": {"Authorization": "Bearer x"}})
    with pytest.raises(ValidationError, match="unique"):
        AgentRunInput(user_id="u", goal="g", mcp_servers=[_server(), _server()])
