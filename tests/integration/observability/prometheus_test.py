"""A real Prometheus scrapes the real gateway, worker, scheduler and Temporal server (`kron up`)
while real runs go through them; then every Grafana panel query and every alert's conditions
(without their thresholds) return data, the rules evaluate without errors, and the figures match
what the workload did.

The workload, through the gateway's REST API only (Claude and Composio are local fakes behind the
real SDKs): runs that complete, one whose model call is rate limited first, one that fails (401),
one whose tool fails, one with a completion webhook, runs slow enough to queue activity tasks (the
worker takes one at a time), bad requests; schedules that fire on their own, one overlap skip
(Forbid), one fire whose toolkit was disconnected, and a declarative (YAML) schedule synced.
"""

from __future__ import annotations

import json
import math
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from kron.contracts.models import RunStatus
from kron_testing.dashboards import RULES, alert_signals, panel_exprs, rule_exprs, substitute
from kron_testing.fake_anthropic import FakeAnthropic, Reply, delay, error, text, tool_use, turn_of
from kron_testing.fake_composio import FakeComposio
from kron_testing.kron_up import KronUp
from kron_testing.loopback import LoopbackHandler, LoopbackServer
from kron_testing.prometheus import PrometheusServer
from kron_testing.tools import require_tool

USER, OTHER_USER = "obs-user", "obs-other"
ANTHROPIC_KEY = "sk-ant-fake-observability"
COMPOSIO_KEY = "ck-fake-observability"
# What Grafana would send for a 15-minute dashboard at a 1 s scrape interval, widened so a window
# covers the whole workload.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "15m"}
SLOW_SECONDS = 2.0
JOBS = ("gateway", "worker", "scheduler", "temporal")
NEVER_DURING_A_TEST = "0 0 1 1 *"  # schedules fired by hand only: no fire of their own


# --- the fakes' scripts


def _goal(body: dict[str, Any]) -> str:
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


class Claude:
    """Replies by goal: each run's story is told by the words in its goal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}

    def __call__(self, body: dict[str, Any], call_index: int) -> Reply:
        goal, turn = _goal(body), turn_of(body)
        with self._lock:
            calls = self._seen[goal] = self._seen.get(goal, 0) + 1
        if "unauthorized" in goal:
            return error(401)
        if "rate limited" in goal and calls == 1:
            return error(429, retry_after=1)
        if turn == 0 and "missing repo" in goal:
            return tool_use([("GITHUB_CREATE_ISSUE", {"owner": "acme", "repo": "missing", "title": "x"})])
        if turn == 0:
            reply = tool_use([("GMAIL_FETCH_EMAILS", {"max_results": 2})], input_tokens=300, output_tokens=40)
            return delay(SLOW_SECONDS, reply) if "slow" in goal else reply
        return text("done", input_tokens=500, output_tokens=60)


class WebhookReceiver(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    def _handle(self, handler: LoopbackHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.bodies.append(json.loads(body))
        handler.send_response(204)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def _scheduled_run_yaml(user: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: kron.dev/v1alpha1
        kind: ScheduledRun
        metadata:
          name: weekday-digest
          namespace: team-a
          generation: 1
        spec:
          user: {user}
          timing:
            cron: ["{NEVER_DURING_A_TEST}"]
            timezone: Europe/Paris
          run: {{"goal": "weekday mail digest", "toolkits": ["gmail"]}}
          concurrencyPolicy: Forbid
        """)


# --- the stack and the workload


class Api:
    def __init__(self, base_url: str, user: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0, trust_env=False)
        token = self.http.post("/auth/token", json={"user_id": user})
        assert token.status_code == 200, token.text
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def dispatch(self, goal: str, toolkit: str, **extra: Any) -> str:
        return str(self.call("POST", "/tasks/dispatch", 202, json={"goal": goal, "toolkits": [toolkit], **extra})["task_id"])

    def wait_finished(self, task_ids: list[str], timeout: float = 120.0) -> dict[str, str]:
        deadline, statuses = time.monotonic() + timeout, dict[str, str]()
        while len(statuses) < len(task_ids):
            for task_id in task_ids:
                if task_id not in statuses:
                    status = self.call("GET", f"/tasks/{task_id}", 200)["status"]
                    if RunStatus(status).is_terminal:
                        statuses[task_id] = status
            assert time.monotonic() < deadline, f"runs not finished in {timeout} s: {statuses}"
            time.sleep(0.2)
        return statuses

    def schedule(self, name: str, goal: str, interval_seconds: int | None = None, policy: str = "Forbid") -> None:
        timing = {"interval_seconds": interval_seconds} if interval_seconds else {"cron": [NEVER_DURING_A_TEST]}
        body = {"name": name, "timing": timing,
                "run": {"goal": goal, "toolkits": ["gmail"]}, "concurrency_policy": policy}
        self.call("POST", "/schedules", 201, json=body)

    def runs_of(self, name: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/schedules/{name}/runs", 200)["runs"])


def _until(what: str, condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)
    return found


@dataclass
class Observed:
    prometheus: PrometheusServer
    statuses: dict[str, str]
    webhooks: list[dict[str, Any]]


def _workload(up: KronUp, prometheus: PrometheusServer, claude: FakeAnthropic, composio: FakeComposio,
              webhooks: WebhookReceiver) -> dict[str, str]:
    api, other = Api(up.gateway_url, USER), Api(up.gateway_url, OTHER_USER)

    # Bad requests: 4xx, with a JSON body saying what is wrong.
    assert api.call("POST", "/tasks/dispatch", 422, json={"goal": ""})["error"]
    assert api.call("GET", "/tasks/run-does-not-exist", 404)["error"] == "not_found"

    # Runs. The worker takes one activity at a time, so the slow ones queue the rest (backlog).
    tasks = [api.dispatch(f"slow mail triage {i}", "gmail") for i in range(3)]
    tasks += [
        api.dispatch("read my mail", "gmail", callback_url=f"{webhooks.base_url}/done"),
        api.dispatch("read my mail, rate limited", "gmail"),
        api.dispatch("file a bug in the missing repo", "github"),
        api.dispatch("read my mail, unauthorized", "gmail"),
    ]
    statuses = api.wait_finished(tasks)

    # Schedules: one fires on its own every 2 s (fire lag) until deleted; a slow Forbid one is
    # triggered twice (the second fire is skipped); the other user's toolkit is disconnected
    # before its fire (preflight fails).
    api.schedule("obs-every-2s", "scheduled mail check", interval_seconds=2, policy="Allow")
    _until("two fires of obs-every-2s", lambda: len([r for r in api.runs_of("obs-every-2s") if r.get("outcome")]) >= 2)
    api.call("DELETE", "/schedules/obs-every-2s", 204)

    api.schedule("obs-forbid", "slow scheduled triage")
    api.call("POST", "/schedules/obs-forbid/trigger", 202)
    _until("the slow scheduled run asks Claude", lambda: any(
        "slow scheduled" in _goal(r.body or {"messages": [{"content": ""}]}) for r in claude.requests))
    api.call("POST", "/schedules/obs-forbid/trigger", 202)
    _until("a skipped fire recorded", lambda: any(r["dispatch"] == "skipped_overlap" for r in api.runs_of("obs-forbid")))

    other.schedule("obs-disconnected", "read mail later")
    composio.disconnect(OTHER_USER, "gmail")
    other.call("POST", "/schedules/obs-disconnected/trigger", 202)
    _until("a fire without a run", lambda: any(r["dispatch"] == "preflight_failed" for r in other.runs_of("obs-disconnected")))

    # Prometheus has scraped the end of it all: every run counted, every schedule event seen.
    finished_runs = len(statuses) + 2 + 1  # every-2s fires may start more than two; at least these
    prometheus.wait_for("sum(kron_runs_total)", lambda v: v >= finished_runs)
    prometheus.wait_for("sum(kron_schedule_skips_total)")
    prometheus.wait_for("sum(kron_schedule_preflight_failures_total)")
    prometheus.wait_for('sum(kron_schedule_sync_actions_total{action="created"})')
    prometheus.wait_for('sum(kron_webhooks_total{outcome="ok"})')
    return statuses


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    binary = require_tool("prometheus", "KRON_PROMETHEUS", "apt-get install prometheus (Debian)")
    tmp = tmp_path_factory.mktemp("observability")
    schedules = tmp / "scheduled-runs.yaml"
    schedules.write_text(_scheduled_run_yaml(USER))
    with (
        FakeAnthropic(api_key=ANTHROPIC_KEY, responder=Claude()) as claude,
        FakeComposio(api_key=COMPOSIO_KEY) as composio,
        WebhookReceiver() as webhooks,
    ):
        for user, toolkit in ((USER, "gmail"), (USER, "github"), (OTHER_USER, "gmail")):
            composio.connect(user, toolkit)
        env = {
            **claude.env, **composio.env,
            "KRON_MAX_CONCURRENT_ACTIVITIES": "1",
            "KRON_DISPATCH_BURST": "100",
            "KRON_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
            "KRON_SCHEDULE_OBSERVE_INTERVAL_SECONDS": "1",
            "KRON_SCHEDULER_SOURCE": "yaml",
            "KRON_SCHEDULER_YAML_PATH": str(schedules),
            "KRON_SCHEDULER_STATUS_PATH": str(tmp / "scheduled-runs.status.json"),
            "KRON_SCHEDULER_RESYNC_SECONDS": "2",
        }
        with KronUp(tmp, env, "--temporal-dynamic-config", 'matching.backlogMetricsEmitInterval="1s"') as up:
            assert "live (Claude + Composio)" in up.output, up.output
            targets = {f"kron-{job}" if job != "temporal" else job: up.metrics_target(job) for job in JOBS}
            with PrometheusServer(binary, tmp / "prometheus", targets, rule_files=[RULES]) as prometheus:
                prometheus.wait_for("count(up == 1)", lambda v: v == len(JOBS))
                statuses = _workload(up, prometheus, claude, composio, webhooks)
                yield Observed(prometheus, statuses, list(webhooks.bodies))
            assert up.stop() == 0, up.output[-3000:]
        assert not claude.responder_errors and not composio.errors


# --- what the dashboards and alerts see


def _has_data(prometheus: PrometheusServer, expr: str) -> list[float]:
    values = prometheus.values(expr)
    assert values, f"no data: {expr}"
    assert any(math.isfinite(v) for v in values), f"only NaN/Inf: {expr} -> {values}"
    return values


PANELS = panel_exprs()


@pytest.mark.parametrize("where,expr", PANELS, ids=[where for where, _ in PANELS])
def test_every_panel_query_returns_data(observed: Observed, where: str, expr: str) -> None:
    _has_data(observed.prometheus, substitute(expr, GRAFANA_VARIABLES))


ALERT_SIGNALS = [(name, signal) for name, expr in rule_exprs() for signal in alert_signals(expr)]


@pytest.mark.parametrize("alert,signal", ALERT_SIGNALS, ids=[f"{a}: {s}" for a, s in ALERT_SIGNALS])
def test_every_alert_condition_returns_data(observed: Observed, alert: str, signal: str) -> None:
    _has_data(observed.prometheus, signal)


def test_prometheus_scraped_every_deployable_and_temporal(observed: Observed) -> None:
    health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in observed.prometheus.active_targets()}
    assert health == {job: ("up", "") for job in ("kron-gateway", "kron-worker", "kron-scheduler", "temporal")}


def test_rules_load_and_evaluate_without_errors(observed: Observed) -> None:
    rules = observed.prometheus.rules()
    assert sorted(r["name"] for r in rules) == sorted(name for name, _ in rule_exprs())
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        assert rule.get("lastEvaluation", "").startswith("20"), rule  # evaluated at least once
    # Nothing here should look like an outage: the workload's failures stay under every threshold.
    assert [r["name"] for r in rules if r.get("state") == "firing"] == []


def test_figures_match_the_workload(observed: Observed) -> None:
    p = observed.prometheus
    assert sorted(observed.statuses.values()) == ["completed"] * 6 + ["failed"]
    assert p.value('sum(kron_runs_total{status="failed"})') == 1
    # Six dispatched runs and at least three scheduled ones (two every-2s fires, the slow one).
    assert p.value('sum(kron_runs_total{status="completed"})') >= 9
    assert p.value('sum(kron_model_calls_total{outcome!="ok"})') >= 2  # the 429 and the 401
    assert p.value('sum(kron_tool_calls_total{outcome="error"})') == 1  # the missing repo
    assert p.value('sum(kron_webhooks_total{outcome="ok"})') == len(observed.webhooks) == 1
    assert p.value('sum(kron_model_tokens_total{direction="input"})') >= 5 * (300 + 500)
    # Priced by the worker at claude-sonnet-5's list price ($2 in, $10 out per MTok), by model.
    assert p.value('sum(kron_model_cost_usd_total{model="claude-sonnet-5"})') >= 5 * (
        (300 + 500) * 2 + (40 + 60) * 10
    ) / 1e6
    assert p.value('sum(kron_gateway_requests_total{status_class="4xx"})') >= 2
    assert p.value('sum(kron_dispatches_total{outcome="started"})') == 7
    assert p.value('sum(kron_schedule_skips_total)') == 1
    assert p.value('sum(kron_schedule_preflight_failures_total{reason="not_connected"})') == 1
    assert p.value('sum(kron_schedule_fires_total{trigger="schedule", dispatch="started"})') >= 2
    assert p.value("sum(kron_schedules_managed)") == 1  # the YAML source's one schedule
    # The slow runs queued activity tasks, and the backlog panel saw it.
    backlog = 'max_over_time(sum(approximate_backlog_count{taskqueue="kron_agent"})[15m:1s])'
    assert p.value(backlog) > 0
