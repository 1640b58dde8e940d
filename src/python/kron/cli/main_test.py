"""The CLI's argument handling and error printing, against an in-memory gateway (httpx.MockTransport)."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kron.cli.config import CachedToken, TokenCache
from kron.cli.main import build_parser, run, schedule_body

GATEWAY = "http://gw.test"
Handler = Callable[[httpx.Request], httpx.Response]


class Gateway:
    """Records requests; answers by (method, path) from `routes`, else 404 like the real API."""

    def __init__(self, routes: dict[tuple[str, str], Any] | None = None) -> None:
        self.routes = routes or {}
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if (request.method, request.url.path) == ("POST", "/auth/token") and (
            ("POST", "/auth/token") not in self.routes
        ):
            self.tokens_issued += 1
            user = json.loads(request.content)["user_id"]
            return httpx.Response(200, json={"access_token": f"tok-{user}-{self.tokens_issued}",
                                             "token_type": "bearer", "expires_in": 3600})
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"error": "not_found", "detail": "No such task"})
        if callable(answer):
            response: httpx.Response = answer(request)
            return response
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)


def kron(
    tmp_path: Path, gateway: Gateway, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = {"KRON_CONFIG_DIR": str(tmp_path / "config"), "KRON_DATA_DIR": str(tmp_path / "data"),
               "KRON_GATEWAY_URL": GATEWAY, "KRON_USER": "alice", **(env or {})}
    code = run(list(args), environ=environ, out=out, err=err, transport=httpx.MockTransport(gateway))
    return code, out.getvalue(), err.getvalue()


def test_run_dispatches_the_goal_with_its_options_and_prints_the_task_id(tmp_path: Path) -> None:
    gateway = Gateway({("POST", "/tasks/dispatch"): httpx.Response(202, json={"task_id": "run-1", "status": "queued"})})
    code, out, err = kron(tmp_path, gateway, "run", "count words", "--toolkit", "demo", "-t", "github",
                          "--max-iterations", "5", "--budget", "1000", "--approval-required", "github",
                          "--idempotency-key", "k1")
    assert (code, out.strip()) == (0, "run-1")
    assert "kron follow run-1" in err
    dispatch = gateway.requests[-1]
    assert json.loads(dispatch.content) == {
        "goal": "count words", "toolkits": ["demo", "github"], "max_iterations": 5, "budget": 1000,
        "approval_required": ["github"],
    }
    assert dispatch.headers["Idempotency-Key"] == "k1"
    assert dispatch.headers["Authorization"] == "Bearer tok-alice-1"


def test_api_errors_print_error_and_detail_and_exit_1(tmp_path: Path) -> None:
    body = {"error": "toolkit_not_connected", "detail": "Connect github first (open connect_url)",
            "toolkit": "github", "connect_url": "https://connect.example/github"}
    gateway = Gateway({("POST", "/tasks/dispatch"): httpx.Response(409, json=body)})
    code, out, err = kron(tmp_path, gateway, "run", "x", "--toolkit", "github")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "error: toolkit_not_connected: Connect github first (open connect_url)",
        "  toolkit: github",
        "  connect_url: https://connect.example/github",
    ]


def test_unknown_task_is_a_plain_error(tmp_path: Path) -> None:
    code, out, err = kron(tmp_path, Gateway(), "task", "nope")
    assert (code, out, err) == (1, "", "error: not_found: No such task\n")


def test_non_json_errors_and_unreachable_gateways_never_show_tracebacks(tmp_path: Path) -> None:
    gateway = Gateway({("GET", "/tasks"): httpx.Response(502, text="<html>Bad Gateway</html>")})
    code, _, err = kron(tmp_path, gateway, "tasks")
    assert (code, err) == (1, "error: http_502: <html>Bad Gateway</html>\n")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    code, _, err = kron(tmp_path, Gateway({("GET", "/tasks"): refuse}), "tasks", env={"KRON_TOKEN": "t"})
    assert code == 1 and err.startswith("error: gateway_unreachable: cannot connect to http://gw.test")

    def crash(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")

    code, _, err = kron(tmp_path, Gateway({("GET", "/tasks"): crash}), "tasks", env={"KRON_TOKEN": "t"})
    assert code == 1 and err.startswith("error: internal: RuntimeError: boom") and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["run"], "the following arguments are required: goal"),
        (["tasks", "--status", "bogus"], "argument --status: invalid choice"),
        (["schedules"], "the following arguments are required: ACTION"),
        (["resolve", "run-1", "later"], "invalid choice"),
        (["--user", "bad user!", "tasks"], "not a valid user id"),
        (["schedules", "create", "daily", "--every", "3600"], "a schedule needs a goal"),
        (["schedules", "create", "daily", "--goal", "x"], "needs --cron EXPR or --every SECONDS"),
    ],
)
def test_usage_errors_exit_2_without_calling_the_gateway(tmp_path: Path, args: list[str], says: str) -> None:
    gateway = Gateway()
    code, out, err = kron(tmp_path, gateway, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and says in err, err
    assert gateway.requests == []


def test_global_options_go_before_or_after_the_command(tmp_path: Path) -> None:
    page: dict[str, Any] = {"tasks": [], "next_cursor": None}
    for args in (["--gateway", "http://other.test", "--json", "tasks"], ["tasks", "--gateway", "http://other.test", "--json"]):
        gateway = Gateway({("GET", "/tasks"): page})
        code, out, _ = kron(tmp_path, gateway, *args, "--status", "running", "--limit", "5")
        assert code == 0 and json.loads(out) == page
        assert str(gateway.requests[-1].url) == "http://other.test/tasks?status=running&limit=5"


def test_tokens_are_cached_privately_per_gateway_and_renewed_after_a_401(tmp_path: Path) -> None:
    calls: list[str] = []

    def tasks(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer tok-alice-1" and len(calls) > 1:
            return httpx.Response(401, json={"error": "token_expired", "detail": "The token has expired"})
        return httpx.Response(200, json={"tasks": []})

    gateway = Gateway({("GET", "/tasks"): tasks})
    assert kron(tmp_path, gateway, "tasks")[0] == 0
    assert kron(tmp_path, gateway, "tasks")[0] == 0  # cached token refused: a fresh one, one retry
    assert calls == ["Bearer tok-alice-1", "Bearer tok-alice-1", "Bearer tok-alice-2"]
    cache_file = tmp_path / "config" / "tokens.json"
    assert stat.S_IMODE(os.stat(cache_file).st_mode) == 0o600
    cached = TokenCache(cache_file).get(GATEWAY)
    assert cached is not None and cached.access_token == "tok-alice-2" and cached.user == "alice"


def test_a_request_retried_after_a_401_carries_the_same_body_and_headers(tmp_path: Path) -> None:
    seen: list[tuple[str, bytes, str | None]] = []

    def dispatch(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["Authorization"], request.read(), request.headers.get("Idempotency-Key")))
        if len(seen) == 1:
            return httpx.Response(401, json={"error": "token_expired", "detail": "The token has expired"})
        return httpx.Response(202, json={"task_id": "run-1", "status": "queued"})

    gateway = Gateway({("POST", "/tasks/dispatch"): dispatch})
    assert kron(tmp_path, gateway, "token")[0] == 0  # a cached token, which the gateway then refuses
    code, out, _ = kron(tmp_path, gateway, "run", "count words", "--idempotency-key", "k1")
    assert (code, out.strip()) == (0, "run-1")
    body = b'{"goal":"count words","toolkits":[]}'
    assert seen == [("Bearer tok-alice-1", body, "k1"), ("Bearer tok-alice-2", body, "k1")]


def test_token_command_prints_the_token_and_a_gateway_without_the_endpoint_says_so(tmp_path: Path) -> None:
    code, out, err = kron(tmp_path, Gateway(), "token", "--user", "bob")
    assert (code, out) == (0, "tok-bob-1\n") and "token for bob" in err
    refusing = Gateway({("POST", "/auth/token"): httpx.Response(404, json={"error": "not_found", "detail": "No such route"})})
    code, out, err = kron(tmp_path / "other", refusing, "tasks")
    assert code == 1 and err.startswith("error: no_token: http://gw.test does not issue tokens")


def test_an_explicit_token_is_used_as_is(tmp_path: Path) -> None:
    TokenCache(tmp_path / "config" / "tokens.json").put(GATEWAY, CachedToken("cached", "alice", time.time() + 999))
    gateway = Gateway({("GET", "/tasks"): {"tasks": []}})
    assert kron(tmp_path, gateway, "tasks", env={"KRON_TOKEN": "from-env"})[0] == 0
    assert gateway.requests[-1].headers["Authorization"] == "Bearer from-env"


def _sse(*events: tuple[str, dict[str, Any], str | None]) -> str:
    text = "retry: 2000\n\n: keepalive\n\n"
    for name, data, event_id in events:
        text += (f"id: {event_id}\n" if event_id else "") + f"event: {name}\ndata: {json.dumps(data)}\n\n"
    return text


def _step(index: int, kind: str, name: str, ok: bool = True, error: str | None = None) -> dict[str, Any]:
    return {"index": index, "kind": kind, "turn": 1, "name": name, "ok": ok, "error": error, "duration_seconds": 0.5}


def test_run_wait_shows_each_step_then_the_result_and_exits_0_only_when_completed(tmp_path: Path) -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "model_calls": 1, "tool_calls": 1}
    for final, expected_code in (("completed", 0), ("failed", 1), ("max_iterations", 1)):
        stream = _sse(
            ("status", {"status": "running", "turns": 0, "usage": usage}, None),
            ("step", _step(0, "model", "claude-x"), "0"),
            ("step", _step(1, "tool", "DEMO_SUM_NUMBERS", ok=False, error="bad numbers"), "1"),
            ("status", {"status": final, "turns": 1, "usage": usage}, None),
            ("end", {"task_id": "run-1", "status": final, "output": "the answer", "turns": 1, "usage": usage,
                     "error": None if final == "completed" else {"code": "internal", "message": "it broke"}}, None),
        )
        gateway = Gateway({
            ("POST", "/tasks/dispatch"): httpx.Response(202, json={"task_id": "run-1", "status": "queued"}),
            ("GET", "/tasks/run-1/events"): httpx.Response(200, text=stream,
                                                           headers={"content-type": "text/event-stream"}),
        })
        code, out, err = kron(tmp_path, gateway, "run", "add these up", "--wait")
        lines = out.splitlines()
        assert code == expected_code, (final, out, err)
        assert lines[0] == "  · running"
        assert "model claude-x" in lines[1] and "DEMO_SUM_NUMBERS" in lines[2] and "error: bad numbers" in lines[2]
        assert lines[3] == f"  · {final}"
        assert lines[4].startswith(f"{final} · 1 turns · 15 tokens")
        assert lines[-1] == "the answer"
        assert "task run-1 dispatched" in err


def test_follow_reconnects_after_the_last_step_it_saw(tmp_path: Path) -> None:
    streams = [
        _sse(("step", _step(0, "model", "m"), "0")),  # the connection drops here
        _sse(("step", _step(1, "tool", "T"), "1"), ("end", {"task_id": "run-1", "status": "completed"}, None)),
    ]
    seen: list[str | None] = []

    def events(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Last-Event-ID"))
        return httpx.Response(200, text=streams[len(seen) - 1])

    code, out, _ = kron(tmp_path, Gateway({("GET", "/tasks/run-1/events"): events}), "follow", "run-1")
    assert code == 0 and seen == [None, "0"]
    assert [line.split()[1] for line in out.splitlines()[:2]] == ["model", "tool"]


def test_schedule_create_body_from_flags_and_file(tmp_path: Path) -> None:
    definition = tmp_path / "def.json"
    definition.write_text(json.dumps({"timing": {"cron": ["0 8 * * *"], "timezone": "Europe/Paris"},
                                      "run": {"goal": "from file", "toolkits": ["github"]}}))
    gateway = Gateway({("POST", "/schedules"): httpx.Response(201, json={"name": "daily", "timing": {}, "run": {}})})
    code, _, err = kron(tmp_path, gateway, "schedules", "create", "daily", "--file", str(definition),
                        "--goal", "from flags", "--concurrency", "Replace", "--suspend")
    assert code == 0, err
    assert json.loads(gateway.requests[-1].content) == {
        "name": "daily", "timing": {"cron": ["0 8 * * *"], "timezone": "Europe/Paris"},
        "run": {"goal": "from flags", "toolkits": ["github"]}, "concurrency_policy": "Replace", "suspend": True,
    }
    code, _, _ = kron(tmp_path, gateway, "schedules", "create", "hourly", "--goal", "g", "--every", "3600",
                      "-t", "demo", "--max-run-history", "3")
    assert json.loads(gateway.requests[-1].content) == {
        "name": "hourly", "timing": {"interval_seconds": 3600}, "run": {"goal": "g", "toolkits": ["demo"]},
        "max_run_history": 3,
    }


def test_schedule_update_patches_only_what_is_given(tmp_path: Path) -> None:
    gateway = Gateway({("PATCH", "/schedules/daily"): {"name": "daily", "timing": {}, "run": {}}})
    code, _, err = kron(tmp_path, gateway, "schedules", "update", "daily", "--every", "900", "-t", "github",
                        "--concurrency", "Allow")
    assert code == 0, err
    assert json.loads(gateway.requests[-1].content) == {
        "timing": {"interval_seconds": 900}, "run": {"toolkits": ["github"]}, "concurrency_policy": "Allow",
    }
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"run": {"model": None}, "timing": {"cron": ["@hourly"]}}))
    code, _, err = kron(tmp_path, gateway, "schedules", "update", "daily", "--file", str(patch), "--goal", "new")
    assert code == 0, err
    assert json.loads(gateway.requests[-1].content) == {
        "timing": {"cron": ["@hourly"]}, "run": {"model": None, "goal": "new"},
    }
    requests = len(gateway.requests)
    code, _, err = kron(tmp_path, gateway, "schedules", "update", "daily")
    assert (code, err) == (2, "error: usage: nothing to change: give a flag (see --help) or --file\n")
    assert len(gateway.requests) == requests


def test_schedule_actions_map_to_their_routes(tmp_path: Path) -> None:
    detail = {"name": "daily", "suspend": True}
    gateway = Gateway({
        ("GET", "/schedules"): {"schedules": []},
        ("GET", "/schedules/daily"): detail,
        ("DELETE", "/schedules/daily"): httpx.Response(204),
        ("POST", "/schedules/daily/suspend"): detail,
        ("POST", "/schedules/daily/resume"): {**detail, "suspend": False},
        ("POST", "/schedules/daily/trigger"): httpx.Response(202, json={"name": "daily", "detail": "Fire started"}),
        ("GET", "/schedules/daily/runs"): {"name": "daily", "runs": [], "max_run_history": 10},
    })
    outputs = {}
    for action in ("list", "get", "delete", "suspend", "resume", "trigger", "runs"):
        code, out, err = kron(tmp_path, gateway, "schedules", action, *([] if action == "list" else ["daily"]))
        assert code == 0, (action, err)
        outputs[action] = out.strip()
    assert outputs["delete"] == "deleted daily"
    assert outputs["suspend"] == "daily: suspended" and outputs["resume"] == "daily: active"
    assert outputs["trigger"] == "daily: Fire started"
    assert [(r.method, r.url.path) for r in gateway.requests if r.url.path != "/auth/token"] == [
        ("GET", "/schedules"), ("GET", "/schedules/daily"), ("DELETE", "/schedules/daily"),
        ("POST", "/schedules/daily/suspend"), ("POST", "/schedules/daily/resume"),
        ("POST", "/schedules/daily/trigger"), ("GET", "/schedules/daily/runs"),
    ]


def test_task_actions_map_to_their_routes(tmp_path: Path) -> None:
    gateway = Gateway({
        ("DELETE", "/tasks/run-1"): httpx.Response(202, json={"task_id": "run-1", "hard_cancel_after_seconds": 30}),
        ("POST", "/tasks/run-1/approve"): httpx.Response(202, json={"task_id": "run-1", "approved": True,
                                                                    "calls": ["GITHUB_CREATE_ISSUE"]}),
        ("POST", "/tasks/run-1/deny"): httpx.Response(202, json={"task_id": "run-1", "approved": False, "calls": []}),
        ("POST", "/tasks/run-1/resolve"): httpx.Response(202, json={"task_id": "run-1", "action": "skip", "keys": ["k"]}),
    })
    assert kron(tmp_path, gateway, "cancel", "run-1")[1].startswith("cancelling run-1")
    assert kron(tmp_path, gateway, "approve", "run-1")[1] == "approved: GITHUB_CREATE_ISSUE\n"
    assert kron(tmp_path, gateway, "deny", "run-1", "--reason", "not now")[0] == 0
    assert json.loads(gateway.requests[-1].content) == {"reason": "not now"}
    assert kron(tmp_path, gateway, "resolve", "run-1", "skip")[1] == "skip: 1 call(s)\n"
    assert json.loads(gateway.requests[-1].content) == {"action": "skip"}


def test_schedule_body_cron_flags_replace_a_file_interval(tmp_path: Path) -> None:
    definition = tmp_path / "def.json"
    definition.write_text(json.dumps({"timing": {"interval_seconds": 60}, "run": {"goal": "g"}}))
    args = build_parser().parse_args(["schedules", "create", "n", "--file", str(definition), "--cron", "@daily"])
    assert schedule_body(args) == {"name": "n", "timing": {"cron": ["@daily"]}, "run": {"goal": "g"}}
    definition.write_text(json.dumps({"timing": None, "run": None}))  # null sections: flags fill them
    args = build_parser().parse_args(["schedules", "create", "n", "-f", str(definition), "-g", "g", "--every", "60"])
    assert schedule_body(args) == {"name": "n", "timing": {"interval_seconds": 60}, "run": {"goal": "g"}}


def test_a_run_waiting_for_approval_says_how_to_decide(tmp_path: Path) -> None:
    stream = _sse(("status", {"status": "waiting", "turns": 1, "usage": {}}, None),
                  ("end", {"task_id": "run-1", "status": "cancelled"}, None))
    pending = {"turn": 1, "timeout_seconds": 60, "calls": [{"id": "c1", "name": "GITHUB_CREATE_ISSUE", "input": {}}]}
    gateway = Gateway({
        ("GET", "/tasks/run-1/events"): httpx.Response(200, text=stream),
        ("GET", "/tasks/run-1"): {"task_id": "run-1", "status": "waiting", "pending_approval": pending},
    })
    code, out, _ = kron(tmp_path, gateway, "follow", "run-1")
    assert code == 1
    assert "waiting   for approval of: GITHUB_CREATE_ISSUE  (kron approve run-1 | kron deny run-1)" in out


def test_a_paused_run_says_which_budget_and_how_to_raise_it(tmp_path: Path) -> None:
    paused = {"reason": "budget_reached", "budget": "run", "spent_usd": 0.0012, "limit_usd": 0.001,
              "timeout_seconds": 604800}
    usage = {"input_tokens": 300, "output_tokens": 60, "model_calls": 3, "tool_calls": 2, "cost_usd": 0.0012}
    stream = _sse(("status", {"status": "paused", "turns": 3, "usage": usage, "paused": paused}, None),
                  ("end", {"task_id": "run-1", "status": "completed", "turns": 4,
                           "usage": {**usage, "cost_usd": None}}, None))
    gateway = Gateway({("GET", "/tasks/run-1/events"): httpx.Response(200, text=stream)})
    code, out, _ = kron(tmp_path, gateway, "follow", "run-1")
    assert code == 0
    assert "paused    run budget reached: $0.0012 spent of $0.0010  (kron budget run-1 USD;" in out
    assert out.splitlines()[-1].endswith("cost unknown (a model without a price)")  # never "$0"


def test_task_shows_cost_and_the_pause(tmp_path: Path) -> None:
    paused = {"budget": "user_month", "spent_usd": 5, "limit_usd": 5, "timeout_seconds": 60}
    gateway = Gateway({("GET", "/tasks/run-1"): {
        "task_id": "run-1", "status": "paused", "usage": {"model_calls": 2, "cost_usd": 0.25}, "paused": paused,
    }})
    code, out, _ = kron(tmp_path, gateway, "task", "run-1")
    assert code == 0
    assert "2 model calls · 0 tool calls · $0.2500" in out
    assert "paused    user_month budget reached: $5.0000 spent of $5.0000" in out


def test_budget_and_usage_commands(tmp_path: Path) -> None:
    gateway = Gateway({
        ("PATCH", "/tasks/run-1"): httpx.Response(202, json={"task_id": "run-1", "budget_usd": 2.5, "spent_usd": 1.0}),
        ("GET", "/usage"): {"month": "2026-08", "total_usd": 1.5, "model_calls": 7, "unpriced_calls": 1,
                            "by_model": {"claude-sonnet-5": 1.5}, "by_schedule": {"digest": 0.5}},
    })
    code, out, _ = kron(tmp_path, gateway, "budget", "run-1", "2.5")
    assert code == 0 and out == "budget of run-1 set to $2.5000 (spent so far: $1.0000)\n"
    assert json.loads(gateway.requests[-1].content) == {"budget_usd": 2.5}
    code, out, _ = kron(tmp_path, gateway, "usage", "--month", "2026-08")
    assert code == 0 and gateway.requests[-1].url.params["month"] == "2026-08"
    assert "spent     $1.5000 on 7 model calls" in out
    assert "unpriced  1 calls" in out
    assert "claude-sonnet-5" in out and "digest" in out
    code, _, _ = kron(tmp_path, gateway, "run", "g", "--budget-usd", "0.5")
    assert json.loads(gateway.requests[-1].content)["budget_usd"] == 0.5
