"""`kron agents ...` and `kron run --agent`, against an in-memory gateway."""

from __future__ import annotations

import json
from pathlib import Path

from kron.cli.main_test import Gateway, kron

AGENT = {"name": "triage", "shared": False, "source": "api", "latest_version": 2,
         "created_at": "2026-12-08T00:00:00Z", "updated_at": "2026-12-08T01:00:00Z",
         "spec": {"description": "sorts mail", "model": "claude-x", "toolkits": ["gmail"],
                  "tool_policy": {"default": "allow", "permissions": {"GMAIL_SEND_EMAIL": "ask"}, "safety": {}},
                  "limits": {"max_iterations": 10}}}


def test_create_sends_the_flags_as_the_api_body(tmp_path: Path) -> None:
    gateway = Gateway({("POST", "/agents"): AGENT})
    (tmp_path / "agent.json").write_text(json.dumps({"description": "from file", "limits": {"token_budget": 5}}))
    code, out, _ = kron(tmp_path, gateway, "agents", "create", "triage", "--file", str(tmp_path / "agent.json"),
                        "--system-prompt", "You triage.", "-t", "gmail", "--max-iterations", "10",
                        "--ask", "GMAIL_SEND_EMAIL", "--deny", "GMAIL_DELETE_MESSAGE")
    assert code == 0, out
    body = json.loads(gateway.requests[-1].content)
    assert body == {"name": "triage", "description": "from file", "system_prompt": "You triage.",
                    "toolkits": ["gmail"], "limits": {"token_budget": 5, "max_iterations": 10},
                    "tool_policy": {"permissions": {"GMAIL_SEND_EMAIL": "ask", "GMAIL_DELETE_MESSAGE": "deny"}}}
    assert "triage v2" in out and "GMAIL_SEND_EMAIL" in out


def test_update_needs_a_change_and_patches_it(tmp_path: Path) -> None:
    gateway = Gateway({("PATCH", "/agents/triage"): AGENT})
    code, _, err = kron(tmp_path, gateway, "agents", "update", "triage")
    assert code == 2 and "nothing to change" in err
    code, _, _ = kron(tmp_path, gateway, "agents", "update", "triage", "--model", "claude-y")
    assert code == 0 and json.loads(gateway.requests[-1].content) == {"model": "claude-y"}


def test_list_get_versions_delete(tmp_path: Path) -> None:
    gateway = Gateway({
        ("GET", "/agents"): {"agents": [AGENT, {**AGENT, "name": "shared-one", "shared": True}]},
        ("GET", "/agents/triage/versions/1"): {"version": 1, "created_at": "2026-12-08T00:00:00Z",
                                               "spec": {"description": "old"}},
        ("GET", "/agents/triage/versions"): {"name": "triage", "versions": [
            {"version": 1, "created_at": "t1"}, {"version": 2, "created_at": "t2"}]},
        ("DELETE", "/agents/triage"): {},
    })
    code, out, _ = kron(tmp_path, gateway, "agents", "list")
    assert code == 0 and "triage" in out and "shared-one" in out and "yes" in out
    code, out, _ = kron(tmp_path, gateway, "agents", "get", "triage", "--version", "1")
    assert code == 0 and "triage v1" in out and "old" in out
    code, out, _ = kron(tmp_path, gateway, "agents", "versions", "triage")
    assert code == 0 and out.split() == ["v1", "t1", "v2", "t2"]
    code, out, _ = kron(tmp_path, gateway, "agents", "delete", "triage")
    assert code == 0 and "deleted triage" in out
    code, _, err = kron(tmp_path, gateway, "agents", "get", "nobody")
    assert code == 1 and "not_found" in err


def test_run_with_an_agent(tmp_path: Path) -> None:
    gateway = Gateway({("POST", "/tasks/dispatch"): httpx_accepted()})
    code, out, _ = kron(tmp_path, gateway, "run", "--agent", "triage", "--agent-version", "3", "sort my inbox",
                        "--max-iterations", "5")
    assert code == 0 and out.strip() == "run-1"
    body = json.loads(gateway.requests[-1].content)
    assert body == {"goal": "sort my inbox", "toolkits": [], "agent": "triage", "version": 3, "max_iterations": 5}


def httpx_accepted() -> dict[str, object]:
    return {"task_id": "run-1", "status": "queued", "replayed": False}
