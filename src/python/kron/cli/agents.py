"""`kron agents list|get|create|update|delete|versions`: agent definitions (GET/POST/PATCH/DELETE
/agents). A definition comes from flags or --file (JSON, the API's body; flags given too override
it). `kron run --agent NAME` runs one (in kron.cli.main)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kron.cli.api import CliError

if TYPE_CHECKING:
    from kron.cli.main import Context

EXIT_OK, EXIT_USAGE = 0, 2
Handler = Callable[["Context"], int]


def agent_body(a: argparse.Namespace) -> dict[str, Any]:
    """The fields given, over --file's object."""
    body: dict[str, Any] = {}
    if a.file:
        try:
            loaded = json.loads(sys.stdin.read() if a.file == "-" else Path(a.file).read_text())
        except (OSError, ValueError) as error:
            raise CliError("invalid_file", f"{a.file}: {error}", exit_code=EXIT_USAGE) from None
        if not isinstance(loaded, dict):
            raise CliError("invalid_file", f"{a.file}: expected a JSON object", exit_code=EXIT_USAGE)
        body.update(loaded)
    for key, value in (("description", a.description), ("system_prompt", a.system_prompt), ("model", a.model),
                       ("max_tokens", a.max_tokens), ("approval_timeout_seconds", a.approval_timeout)):
        if value is not None:
            body[key] = value
    if a.toolkit:
        body["toolkits"] = a.toolkit
    limits = dict(body.get("limits") or {})
    for key, value in (("max_iterations", a.max_iterations), ("token_budget", a.budget),
                       ("budget_usd", a.budget_usd)):
        if value is not None:
            limits[key] = value
    if limits:
        body["limits"] = limits
    permissions = {}
    for flag, permission in ((a.allow, "allow"), (a.ask, "ask"), (a.deny, "deny")):
        for key in flag or []:
            permissions[key] = permission
    if permissions:
        policy = dict(body.get("tool_policy") or {})
        policy["permissions"] = {**dict(policy.get("permissions") or {}), **permissions}
        body["tool_policy"] = policy
    return body


def agents_table(page: dict[str, Any]) -> str:
    agents = page.get("agents") or []
    if not agents:
        return "no agents (create one: kron agents create NAME --system-prompt ...)"
    rows = [("NAME", "VERSION", "SHARED", "MODEL", "DESCRIPTION")]
    for agent in agents:
        spec = agent.get("spec") or {}
        rows.append((str(agent["name"]), str(agent["latest_version"]), "yes" if agent.get("shared") else "",
                     str(spec.get("model") or "-"), str(spec.get("description") or "")[:50]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def agent_detail(agent: dict[str, Any]) -> str:
    spec = agent.get("spec") or {}
    shared = f" (shared, from {agent.get('source')}: read-only)" if agent.get("shared") else ""
    lines = [f"{agent['name']} v{agent['latest_version']}{shared}"]
    for key in ("description", "model", "max_tokens", "toolkits", "tool_policy", "limits", "approval_timeout_seconds",
                "system_prompt"):
        value = spec.get(key)
        if value not in (None, "", [], {}):
            lines.append(f"  {key}: {value if isinstance(value, str | int) else json.dumps(value)}")
    return "\n".join(lines)


def cmd_agents_list(ctx: Context) -> int:
    return ctx.show(ctx.api.call("GET", "/agents"), agents_table)


def cmd_agents_get(ctx: Context) -> int:
    a = ctx.args
    if a.version is not None:
        version = ctx.api.call("GET", f"/agents/{a.name}/versions/{a.version}")
        return ctx.show(version, lambda v: f"{a.name} v{v['version']} ({v['created_at']})\n"
                                           + json.dumps(v["spec"], indent=2))
    return ctx.show(ctx.api.call("GET", f"/agents/{a.name}"), agent_detail)


def cmd_agents_create(ctx: Context) -> int:
    created = ctx.api.call("POST", "/agents", json={**agent_body(ctx.args), "name": ctx.args.name})
    return ctx.show(created, agent_detail)


def cmd_agents_update(ctx: Context) -> int:
    body = agent_body(ctx.args)
    if not body:
        raise CliError("usage", "nothing to change: give a flag (see --help) or --file", exit_code=EXIT_USAGE)
    return ctx.show(ctx.api.call("PATCH", f"/agents/{ctx.args.name}", json=body), agent_detail)


def cmd_agents_delete(ctx: Context) -> int:
    ctx.api.call("DELETE", f"/agents/{ctx.args.name}")
    return ctx.show({"name": ctx.args.name, "deleted": True},
                    lambda d: f"deleted {d['name']} (runs going on finish as they were)")


def cmd_agents_versions(ctx: Context) -> int:
    page = ctx.api.call("GET", f"/agents/{ctx.args.name}/versions")
    return ctx.show(page, lambda p: "\n".join(f"v{v['version']}  {v['created_at']}" for v in p["versions"]))


def add_agent_commands(
    commands: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser],
    no_subcommand: Handler,
) -> None:
    agents = commands.add_parser("agents", help="agent definitions (versioned)", description="agent definitions",
                                 parents=[common])
    agents.set_defaults(handler=no_subcommand)
    sub = agents.add_subparsers(dest="agents_command", metavar="ACTION", parser_class=parser_class)
    sub.required = True

    def action(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        parser.set_defaults(handler=handler)
        return parser

    action("list", cmd_agents_list, "your agents and the shared ones")
    get = action("get", cmd_agents_get, "an agent's latest version (or --version N)")
    get.add_argument("name")
    get.add_argument("--version", type=int, metavar="N")
    for name, handler, text in (("create", cmd_agents_create, "create an agent (version 1)"),
                                ("update", cmd_agents_update, "change an agent: a new version")):
        parser = action(name, handler, text)
        parser.add_argument("name")
        parser.add_argument("--file", "-f", metavar="FILE", help="the body as JSON (- for stdin)")
        parser.add_argument("--description")
        parser.add_argument("--system-prompt", metavar="TEXT")
        parser.add_argument("--model")
        parser.add_argument("--max-tokens", type=int, metavar="N")
        parser.add_argument("--toolkit", "-t", action="append", metavar="TOOLKIT")
        parser.add_argument("--max-iterations", type=int, metavar="N")
        parser.add_argument("--budget", type=int, metavar="TOKENS", help="token budget per run")
        parser.add_argument("--budget-usd", type=float, metavar="USD", help="USD budget per run")
        parser.add_argument("--approval-timeout", type=int, metavar="SECONDS")
        for flag in ("allow", "ask", "deny"):
            parser.add_argument(f"--{flag}", action="append", metavar="TOOLKIT_OR_TOOL",
                                help=f"tool policy: {flag} calls of this toolkit or tool (repeatable)")
    action("delete", cmd_agents_delete, "delete an agent (runs going on finish)").add_argument("name")
    action("versions", cmd_agents_versions, "an agent's versions").add_argument("name")
