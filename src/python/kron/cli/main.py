"""`kron`: run agents and schedules through the gateway's REST API, and run the local stack.

    kron up                                   the local stack (see `kron up --help`)
    kron run "goal" [--toolkit X ...] [--wait]
    kron tasks [--status S] · kron task ID · kron follow ID · kron cancel ID
    kron approve|deny ID [--reason R] · kron resolve ID retry|skip|abort
    kron schedules list|create|update|get|delete|suspend|resume|trigger|runs ...
    kron agents list|get|create|update|delete|versions ...   ·   kron run --agent NAME "goal"
    kron login [--issuer URL --client-id ID [--audience A] | --token T] · kron token [--user U]

Gateway: --gateway, else $KRON_GATEWAY_URL, else the running `kron up`'s, else http://127.0.0.1:8080.
Token: $KRON_TOKEN, else the cached one (~/.config/kron/tokens.json: `kron login` puts it there), else
one from POST /auth/token (dev-mode gateways such as `kron up`'s) for --user / $KRON_USER / your login
name. `kron login` signs in at the gateway's OpenID provider (device flow; --issuer, --client-id,
--audience or $KRON_LOGIN_ISSUER, $KRON_LOGIN_CLIENT_ID, $KRON_LOGIN_AUDIENCE).

Errors are printed as `error: <error>: <detail>` with exit code 1 (2: bad usage). `run --wait` and
`follow` exit 0 only when the run completed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from kron.cli import render
from kron.cli.agents import add_agent_commands
from kron.cli.api import Api, CliError, check_user_id, default_user
from kron.cli.config import TOKEN_FILE, TokenCache, config_dir, gateway_url
from kron.cli.login import DeviceLogin, cached_token
from kron.contracts.models import UnknownOutcomeAction
from kron.contracts.schedules import ConcurrencyPolicy

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# GET /tasks?status=: the gateway's ExecutionState, which the CLI may not import (a deployable's own
# schema); tests/integration/cli/choices_test.py holds the two equal.
EXECUTION_STATES = ("running", "completed", "failed", "cancelled", "terminated", "timed_out")
# Plain strings, not the enum members: argparse shows them in its errors.
CONCURRENCY_POLICIES = tuple(policy.value for policy in ConcurrencyPolicy)
RESOLVE_ACTIONS = tuple(action.value for action in UnknownOutcomeAction)


@dataclass
class Context:
    args: argparse.Namespace
    environ: Mapping[str, str]
    out: TextIO
    err: TextIO
    transport: httpx.BaseTransport | None = None
    _api: Api | None = field(default=None, init=False)

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(
                base_url=gateway_url(getattr(self.args, "gateway", None), self.environ),
                cache=TokenCache(config_dir(self.environ) / TOKEN_FILE),
                user=getattr(self.args, "user", None) or None,
                token=self.environ.get("KRON_TOKEN") or None,
                environ=self.environ,
                transport=self.transport,
            )
        return self._api

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def show(self, value: Any, text: Callable[[Any], str]) -> int:
        """`value` as the API's JSON with --json, else as `text` renders it; the exit code."""
        self.print(render.as_json(value) if self.json else text(value))
        return EXIT_OK

    @property
    def marks(self) -> tuple[str, str]:
        return render.marks(getattr(self.out, "encoding", None))


# --- tokens


def cmd_token(ctx: Context) -> int:
    cached = ctx.api.cache.get(ctx.api.base_url)
    user = ctx.api.user or (cached.user if cached else None) or default_user(ctx.environ)
    token = ctx.api.issue_token(user)
    ctx.print(token.access_token)
    ctx.note(f"token for {token.user} at {ctx.api.base_url} cached in {ctx.api.cache.path}")
    return EXIT_OK


def cmd_login(ctx: Context) -> int:
    """Sign in for this gateway: a token given as is, the OIDC device flow, or (no issuer) a
    dev-mode token. Cached for the gateway either way."""
    a = ctx.args
    if a.token:
        given = sys.stdin.readline().strip() if a.token == "-" else a.token
        token = cached_token(given)
    else:
        issuer = a.issuer or ctx.environ.get("KRON_LOGIN_ISSUER")
        if not issuer:
            token = ctx.api.issue_token(ctx.api.user or default_user(ctx.environ))
            ctx.note(f"signed in as {token.user} with a dev-mode token (no --issuer)")
            return EXIT_OK
        client_id = a.client_id or ctx.environ.get("KRON_LOGIN_CLIENT_ID")
        if not client_id:
            raise CliError("usage", "--client-id (or $KRON_LOGIN_CLIENT_ID): the CLI's client at the provider",
                           exit_code=EXIT_USAGE)
        with httpx.Client(timeout=30.0, transport=ctx.transport) as http:
            login = DeviceLogin(issuer, client_id, http=http, scope=a.scope,
                                audience=a.audience or ctx.environ.get("KRON_LOGIN_AUDIENCE"))
            authorization, token_endpoint = login.start()
            where = authorization.verification_uri_complete or authorization.verification_uri
            ctx.note(f"To sign in, open {where}\nand confirm the code {authorization.user_code}")
            body = login.wait_for_token(authorization, token_endpoint)
        token = cached_token(str(body["access_token"]), expires_in=float(body.get("expires_in") or 0))
    ctx.api.cache.put(ctx.api.base_url, token)
    ctx.note(f"signed in as {token.user} at {ctx.api.base_url} (token cached in {ctx.api.cache.path})")
    return EXIT_OK


# --- tasks


def cmd_run(ctx: Context) -> int:
    a = ctx.args
    body: dict[str, Any] = {"goal": a.goal, "toolkits": a.toolkit or []}
    optional = {
        "model": a.model, "max_iterations": a.max_iterations, "budget": a.budget, "callback_url": a.callback_url,
        "budget_usd": a.budget_usd,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if a.agent:  # the agent's definition; the flags given override it where allowed
        body.update({"agent": a.agent, **({"version": a.agent_version} if a.agent_version else {})})
    if a.approval_required:
        body["approval_required"] = a.approval_required
        if a.approval_timeout is not None:
            body["approval_timeout_seconds"] = a.approval_timeout
    headers = {"Idempotency-Key": a.idempotency_key} if a.idempotency_key else None
    accepted = ctx.api.call("POST", "/tasks/dispatch", json=body, headers=headers)
    task_id = str(accepted["task_id"])
    if not a.wait:
        if ctx.json:
            ctx.print(render.as_json(accepted))
        else:
            ctx.print(task_id)
            ctx.note(f"follow it: kron follow {task_id}   (or kron task {task_id})")
        return EXIT_OK
    toolkits = ", ".join(body["toolkits"]) or "none"
    ctx.note(f"task {task_id} dispatched (toolkits: {toolkits}){' [replayed]' if accepted.get('replayed') else ''}")
    return follow(ctx, task_id)


def cmd_follow(ctx: Context) -> int:
    return follow(ctx, ctx.args.task_id)


def follow(ctx: Context, task_id: str) -> int:
    """Each step as it completes, status changes, then the result. 0 only for `completed`."""
    progress = ctx.note if ctx.json else ctx.print
    ok_mark, fail_mark = ctx.marks
    last_status = None
    try:
        for event in ctx.api.events(task_id):
            data = _json_or_empty(event.data)
            if event.event == "step":
                progress(render.step_line(data, ok_mark, fail_mark))
            elif event.event == "status":
                status = data.get("status")
                if status != last_status:
                    progress(f"  · {status}")
                    last_status = status
                    if status == "waiting":
                        detail = ctx.api.call("GET", f"/tasks/{task_id}")
                        for line in render.waiting_lines(detail):
                            progress(line)
                    if status == "paused" and isinstance(data.get("paused"), dict):
                        progress("  " + render.paused_line(task_id, data["paused"]))
            elif event.event == "end":
                return _show_result(ctx, data)
    except KeyboardInterrupt:
        ctx.note(f"\nstopped following; the task goes on: kron task {task_id} / kron cancel {task_id}")
        return EXIT_INTERRUPTED
    raise CliError("stream_lost", "the event stream ended before the task did")


def _show_result(ctx: Context, detail: dict[str, Any]) -> int:
    status = str(detail.get("status"))
    if ctx.json:
        ctx.print(render.as_json(detail))
    else:
        ctx.print(f"{status} · {detail.get('turns', 0)} turns · {render.usage_line(detail.get('usage'))}")
        if detail.get("error"):
            ctx.print(f"error: {render.error_text(detail['error'])}")
        if detail.get("output"):
            if detail.get("truncated"):
                ctx.print("(truncated: the model hit its token limit)")
            ctx.print(str(detail["output"]))
    return EXIT_OK if status == "completed" else EXIT_ERROR


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def cmd_tasks(ctx: Context) -> int:
    a = ctx.args
    page = ctx.api.call("GET", "/tasks", params={"status": a.status, "limit": a.limit, "cursor": a.cursor})
    return ctx.show(page, render.tasks_table)


def cmd_task(ctx: Context) -> int:
    task = ctx.api.call("GET", f"/tasks/{ctx.args.task_id}")
    return ctx.show(task, lambda t: render.task_detail(t, *ctx.marks))


def cmd_cancel(ctx: Context) -> int:
    accepted = ctx.api.call("DELETE", f"/tasks/{ctx.args.task_id}")
    return ctx.show(accepted, lambda a: f"cancelling {a['task_id']}: it stops after its current step "
                                        f"(for good after {a.get('hard_cancel_after_seconds', 0):g} s)")


def cmd_budget(ctx: Context) -> int:
    patched = ctx.api.call("PATCH", f"/tasks/{ctx.args.task_id}", json={"budget_usd": ctx.args.usd})
    if ctx.json:
        ctx.print(render.as_json(patched))
    else:
        ctx.print(f"budget of {patched['task_id']} set to {render.usd(patched['budget_usd'])} "
                  f"(spent so far: {render.cost_text(patched.get('spent_usd'))})")
    return EXIT_OK


def cmd_usage(ctx: Context) -> int:
    report = ctx.api.call("GET", "/usage", params={"month": ctx.args.month})
    ctx.print(render.as_json(report) if ctx.json else render.usage_report(report))
    return EXIT_OK


def _decide(ctx: Context, verb: str) -> int:
    body = {"reason": ctx.args.reason} if ctx.args.reason else None
    accepted = ctx.api.call("POST", f"/tasks/{ctx.args.task_id}/{verb}", json=body)
    return ctx.show(accepted, lambda a: f"{'approved' if a.get('approved') else 'denied'}: "
                                        f"{', '.join(a.get('calls') or [])}")


def cmd_approve(ctx: Context) -> int:
    return _decide(ctx, "approve")


def cmd_deny(ctx: Context) -> int:
    return _decide(ctx, "deny")


def cmd_resolve(ctx: Context) -> int:
    body: dict[str, Any] = {"action": ctx.args.action}
    if ctx.args.reason:
        body["reason"] = ctx.args.reason
    accepted = ctx.api.call("POST", f"/tasks/{ctx.args.task_id}/resolve", json=body)
    return ctx.show(accepted, lambda a: f"{a['action']}: {len(a.get('keys') or [])} call(s)")


# --- schedules


def schedule_body(a: argparse.Namespace) -> dict[str, Any]:
    """The POST /schedules body from flags, or from --file (JSON; flags given too override it)."""
    body = _with_flags(_file_object(a.file), a)
    body["name"] = a.name
    run = body["run"] = body.get("run") or {}
    timing = body["timing"] = body.get("timing") or {}
    if not run.get("goal"):
        raise CliError("usage", "a schedule needs a goal: --goal \"...\" (or in --file)", exit_code=EXIT_USAGE)
    if not timing.get("cron") and timing.get("interval_seconds") is None:
        raise CliError("usage", "a schedule needs --cron EXPR or --every SECONDS (or timing in --file)",
                       exit_code=EXIT_USAGE)
    if a.suspend:
        body["suspend"] = True
    return body


def schedule_patch(a: argparse.Namespace) -> dict[str, Any]:
    """The PATCH /schedules/NAME body (a JSON merge patch) from flags, or from --file (flags given too
    override it). Only what is given changes; --cron and --every replace each other."""
    patch = _with_flags(_file_object(a.file), a)
    if not patch:
        raise CliError("usage", "nothing to change: give a flag (see --help) or --file", exit_code=EXIT_USAGE)
    return patch


def _file_object(file: str | None) -> dict[str, Any]:
    if not file:
        return {}
    try:
        loaded = json.loads(sys.stdin.read() if file == "-" else Path(file).read_text())
    except (OSError, ValueError) as error:
        raise CliError("invalid_file", f"{file}: {error}", exit_code=EXIT_USAGE) from None
    if not isinstance(loaded, dict):
        raise CliError("invalid_file", f"{file}: expected a JSON object", exit_code=EXIT_USAGE)
    return loaded


def _with_flags(body: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """`body` with the schedule flags given applied over it (`timing` and `run` key by key)."""
    body = dict(body)
    timing: dict[str, Any] = dict(body.get("timing") or {})
    if a.cron:
        timing["cron"] = a.cron
        timing.pop("interval_seconds", None)
    if a.every is not None:
        timing["interval_seconds"] = a.every
        timing.pop("cron", None)
    for key, value in (("timezone", a.timezone), ("jitter_seconds", a.jitter)):
        if value is not None:
            timing[key] = value
    run: dict[str, Any] = dict(body.get("run") or {})
    for key, value in (("goal", a.goal), ("model", a.model), ("max_iterations", a.max_iterations),
                       ("token_budget", a.budget), ("timeout_seconds", a.timeout), ("callback_url", a.callback_url)):
        if value is not None:
            run[key] = value
    if a.toolkit:
        run["toolkits"] = a.toolkit
    if a.approval_required:
        run["approval"] = {"require_for": a.approval_required}
    for key, section in (("timing", timing), ("run", run)):
        if section:
            body[key] = section
    if a.concurrency is not None:
        body["concurrency_policy"] = a.concurrency
    if a.max_run_history is not None:
        body["max_run_history"] = a.max_run_history
    return body


def cmd_schedules_list(ctx: Context) -> int:
    page = ctx.api.call("GET", "/schedules", params={"limit": ctx.args.limit, "cursor": ctx.args.cursor})
    return ctx.show(page, render.schedules_table)


def cmd_schedules_create(ctx: Context) -> int:
    created = ctx.api.call("POST", "/schedules", json=schedule_body(ctx.args))
    return ctx.show(created, render.schedule_detail)


def cmd_schedules_update(ctx: Context) -> int:
    updated = ctx.api.call("PATCH", f"/schedules/{ctx.args.name}", json=schedule_patch(ctx.args))
    return ctx.show(updated, render.schedule_detail)


def cmd_schedules_get(ctx: Context) -> int:
    schedule = ctx.api.call("GET", f"/schedules/{ctx.args.name}")
    return ctx.show(schedule, render.schedule_detail)


def cmd_schedules_delete(ctx: Context) -> int:
    ctx.api.call("DELETE", f"/schedules/{ctx.args.name}")
    ctx.print(f"deleted {ctx.args.name}")
    return EXIT_OK


def _schedule_action(ctx: Context, action: str) -> int:
    schedule = ctx.api.call("POST", f"/schedules/{ctx.args.name}/{action}")
    return ctx.show(schedule, lambda s: f"{ctx.args.name}: {'suspended' if s.get('suspend') else 'active'}")


def cmd_schedules_suspend(ctx: Context) -> int:
    return _schedule_action(ctx, "suspend")


def cmd_schedules_resume(ctx: Context) -> int:
    return _schedule_action(ctx, "resume")


def cmd_schedules_trigger(ctx: Context) -> int:
    accepted = ctx.api.call("POST", f"/schedules/{ctx.args.name}/trigger")
    return ctx.show(accepted, lambda a: f"{ctx.args.name}: {a.get('detail')}"
                                        + (f" (fire {a['fire_id']})" if a.get("fire_id") else ""))


def cmd_schedules_runs(ctx: Context) -> int:
    page = ctx.api.call("GET", f"/schedules/{ctx.args.name}/runs")
    return ctx.show(page, render.runs_table)


def cmd_up(ctx: Context) -> int:
    from kron.cli.up.command import run_up

    return run_up(ctx.args, ctx.environ, ctx.out, ctx.err)


# --- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise CliError("usage", f"{message} (see {self.prog} --help)", exit_code=EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    # Options every command takes, before or after its name (SUPPRESS: a subcommand's missing
    # option must not overwrite one given before it).
    common = _Parser(add_help=False)
    common.add_argument("--gateway", metavar="URL", default=argparse.SUPPRESS,
                        help="gateway URL (default: $KRON_GATEWAY_URL, the running `kron up`, http://127.0.0.1:8080)")
    common.add_argument("--user", metavar="USER", default=argparse.SUPPRESS,
                        help="act as this user (dev-mode token; default: $KRON_USER or your login name)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON instead of text")

    parser = _Parser(prog="kron", description="Durable background AI agents.", parents=[common],
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, handler: Callable[[Context], int], help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common], **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    login = command("login", cmd_login, "sign in at the gateway's OpenID provider (device flow) or cache a token")
    login.add_argument("--issuer", metavar="URL", help="the provider (default: $KRON_LOGIN_ISSUER; none: dev token)")
    login.add_argument("--client-id", metavar="ID", help="the CLI's public client (default: $KRON_LOGIN_CLIENT_ID)")
    login.add_argument("--audience", metavar="AUD", help="the gateway's API identifier (default: $KRON_LOGIN_AUDIENCE)")
    login.add_argument("--scope", default="openid", help="scopes to ask for (default: openid)")
    login.add_argument("--token", metavar="TOKEN", help="cache this token instead (`-`: read it from stdin)")
    command("token", cmd_token, "get a token from a dev-mode gateway (POST /auth/token), cache and print it")

    run = command("run", cmd_run, "start an agent run (POST /tasks/dispatch)")
    run.add_argument("goal", help="what the agent should do")
    run.add_argument("--toolkit", "-t", action="append", metavar="TOOLKIT",
                     help="a toolkit the agent may use (repeatable; `demo` in the offline demo)")
    run.add_argument("--wait", "-w", action="store_true", help="follow the run live and print its result")
    run.add_argument("--model", help="a Claude model name (default: the worker's)")
    run.add_argument("--max-iterations", type=int, metavar="N")
    run.add_argument("--budget", type=int, metavar="TOKENS", help="token budget")
    run.add_argument("--budget-usd", type=float, metavar="USD",
                     help="USD the run may spend; reached, it pauses until `kron budget` raises it")
    run.add_argument("--approval-required", action="append", metavar="TOOLKIT_OR_TOOL",
                     help="tool calls that wait for `kron approve/deny` (repeatable)")
    run.add_argument("--approval-timeout", type=int, metavar="SECONDS")
    run.add_argument("--callback-url", metavar="URL", help="receives a signed webhook when the run ends")
    run.add_argument("--idempotency-key", metavar="KEY", help="retries with the same key start one run")
    run.add_argument("--agent", metavar="NAME", help="run this agent definition (see `kron agents`)")
    run.add_argument("--agent-version", type=int, metavar="N", help="that version of it (default: its latest)")

    follow_cmd = command("follow", cmd_follow, "follow a run live until it ends (like run --wait)")
    follow_cmd.add_argument("task_id", metavar="ID")

    tasks = command("tasks", cmd_tasks, "list your tasks, open ones first")
    tasks.add_argument("--status", choices=EXECUTION_STATES, help="only tasks in this state")
    tasks.add_argument("--limit", type=int, metavar="N")
    tasks.add_argument("--cursor", help="next page (printed after a full page)")

    for name, handler, text in (("task", cmd_task, "a task's status, steps, usage and result"),
                                ("cancel", cmd_cancel, "cancel a task (after its current step)")):
        command(name, handler, text).add_argument("task_id", metavar="ID")
    for name, handler, text in (("approve", cmd_approve, "let the tool calls a task waits on run"),
                                ("deny", cmd_deny, "refuse the tool calls a task waits on")):
        sub = command(name, handler, text)
        sub.add_argument("task_id", metavar="ID")
        sub.add_argument("--reason", help="told to the model")
    budget = command("budget", cmd_budget, "set a running task's USD budget (a higher one resumes it)")
    budget.add_argument("task_id", metavar="ID")
    budget.add_argument("usd", type=float, metavar="USD")
    usage = command("usage", cmd_usage, "your spend on model calls this month: total, by model, by schedule")
    usage.add_argument("--month", metavar="YYYY-MM", help="another month (UTC)")

    resolve = command("resolve", cmd_resolve, "decide about tool calls whose outcome is unknown after a crash")
    resolve.add_argument("task_id", metavar="ID")
    resolve.add_argument("action", choices=RESOLVE_ACTIONS)
    resolve.add_argument("--reason")

    add_agent_commands(commands, common, _Parser, _no_subcommand)

    schedules = command("schedules", _no_subcommand, "scheduled runs (cron or interval)")
    sched = schedules.add_subparsers(dest="schedules_command", metavar="ACTION", parser_class=_Parser)
    sched.required = True

    def sched_command(name: str, handler: Callable[[Context], int], help_text: str) -> argparse.ArgumentParser:
        sub = sched.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    listing = sched_command("list", cmd_schedules_list, "list your schedules")
    listing.add_argument("--limit", type=int, metavar="N")
    listing.add_argument("--cursor")
    create = sched_command("create", cmd_schedules_create, "create a schedule")
    create.add_argument("name", help="a DNS label: lowercase letters, digits, -")
    create.add_argument("--suspend", action="store_true", help="create it suspended")
    _schedule_flags(create, "the definition as JSON (- for stdin)")
    update = sched_command("update", cmd_schedules_update, "change a schedule: only what is given changes")
    update.add_argument("name")
    _schedule_flags(update, "a JSON merge patch (- for stdin): null resets a field")
    for name, handler, text in (
        ("get", cmd_schedules_get, "a schedule, with its next run times"),
        ("delete", cmd_schedules_delete, "delete a schedule (runs going on finish)"),
        ("suspend", cmd_schedules_suspend, "stop firing"),
        ("resume", cmd_schedules_resume, "fire again"),
        ("trigger", cmd_schedules_trigger, "fire now"),
        ("runs", cmd_schedules_runs, "run history"),
    ):
        sched_command(name, handler, text).add_argument("name")

    from kron.cli.up.command import UP_DESCRIPTION, add_up_arguments

    up = command("up", cmd_up, "run the local stack: Temporal, worker, gateway, scheduler",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    up.description = UP_DESCRIPTION
    add_up_arguments(up)
    return parser


def _schedule_flags(sub: argparse.ArgumentParser, file_help: str) -> None:
    sub.add_argument("--goal", "-g")
    sub.add_argument("--cron", action="append", metavar="EXPR", help="five-field cron or @daily... (repeatable)")
    sub.add_argument("--every", type=int, metavar="SECONDS", help="fire at this interval instead of cron")
    sub.add_argument("--timezone", metavar="TZ", help="IANA timezone the cron is read in (default UTC)")
    sub.add_argument("--jitter", type=int, metavar="SECONDS")
    sub.add_argument("--toolkit", "-t", action="append", metavar="TOOLKIT")
    sub.add_argument("--concurrency", choices=CONCURRENCY_POLICIES,
                     help="while the previous run goes on: Allow, Forbid (skip; default), Replace")
    sub.add_argument("--max-run-history", type=int, metavar="N")
    sub.add_argument("--model")
    sub.add_argument("--max-iterations", type=int, metavar="N")
    sub.add_argument("--budget", type=int, metavar="TOKENS")
    sub.add_argument("--timeout", type=int, metavar="SECONDS", help="a run going longer is timed_out")
    sub.add_argument("--callback-url", metavar="URL")
    sub.add_argument("--approval-required", action="append", metavar="TOOLKIT_OR_TOOL")
    sub.add_argument("--file", "-f", metavar="FILE", help=file_help)


def _no_subcommand(ctx: Context) -> int:  # pragma: no cover - argparse requires one
    raise CliError("usage", "name an action", exit_code=EXIT_USAGE)


def run(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one command; returns the exit code. Never raises (but SystemExit from --help)."""
    out = out or sys.stdout
    err = err or sys.stderr
    environ = os.environ if environ is None else environ
    ctx: Context | None = None
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "user", None):
            check_user_id(args.user)
        ctx = Context(args=args, environ=environ, out=out, err=err, transport=transport)
        code: int = args.handler(ctx)
        return code
    except CliError as error:
        print(f"error: {error.error}: {error.detail}", file=err, flush=True)
        for key in ("toolkit", "connect_url", "retry_after_seconds"):
            if error.extra.get(key):
                print(f"  {key}: {error.extra[key]}", file=err, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as error:  # a CLI prints errors; tracebacks only with KRON_DEBUG
        if environ.get("KRON_DEBUG"):
            raise
        print(f"error: internal: {type(error).__name__}: {error} (KRON_DEBUG=1 shows the traceback)",
              file=err, flush=True)
        return EXIT_ERROR
    finally:
        if ctx is not None and ctx._api is not None:
            ctx._api.close()


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
