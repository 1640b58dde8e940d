"""Abuse: hostile requests against a real gateway process (production settings: real JWT secret,
Composio key, default rate limits, no token endpoint) with a real worker behind it, then a search
for the run's secrets everywhere they must never appear.

  - bodies: oversized (declared and chunked), malformed JSON, wrong types, deep nesting, invalid
    UTF-8, forbidden fields (`user_id`), bad URLs, headers and ids: a 4xx each, never a 5xx;
  - JWT attacks: alg none, wrong/empty key, HS512, RS256 confusion, expired, not-yet-valid, wrong
    audience/issuer, missing claims, hostile `sub`, tampered payload, oversized, wrong scheme: 401;
  - other users' ids: read, follow, cancel, approve, deny, list, cursor and Idempotency-Key reuse
    across users: never another user's task;
  - dispatch flooding: 429 with Retry-After past the burst;
  - cron abuse on `/schedules` when the gateway serves it (skipped, and said so, otherwise);
  - schemathesis fuzz of every route against the process (never a 5xx);
  - the process afterwards: alive, no 5xx in its /metrics, exits 0 on SIGTERM (worker too);
  - secrets (Anthropic and Composio keys, JWT and webhook secrets, every bearer token issued): in
    the gateway's and worker's output, the Temporal server log, every workflow history (JSON), the
    gateway's and worker's /metrics and the webhook deliveries. Must find none.

    ./pants run bench/prove/abuse.py -- --fuzz 400
    PYTHONPATH=src/python:tests:bench python -m prove.abuse --fuzz 400
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `prove` (bench/) and kron_testing importable
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[:0] = [os.path.join(_root, d) for d in ("bench", "tests", "src/python")]

import httpx
import jwt
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.client import Client

from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import issue_token
from kron_testing import fake_anthropic as replies
from kron_testing.fake_anthropic import FakeAnthropic, Reply
from kron_testing.fake_composio import FakeComposio
from kron_testing.temporal_server import TemporalDevServer
from prove._common import (
    ANTHROPIC_KEY,
    COMPOSIO_KEY,
    JWT_SECRET,
    READ_ONLY_TOOL,
    TOOL_SCHEMA,
    TOOLKIT,
    UNSAFE_TOOL,
    WEBHOOK_SECRET,
    AgentScript,
    Fleet,
    add_notes_tools,
    bounded,
    conclude,
    connect,
    gateway_env,
    goal_for,
    memory_of,
    ready_value,
    suite_parser,
    suite_servers,
    worker_env,
)

ISSUER, AUDIENCE = "kron-gateway", "kron-api"  # the gateway's defaults
TERMINAL = {"completed", "failed", "cancelled", "max_iterations", "budget_exceeded"}


@dataclass
class Probe:
    group: str
    name: str
    expected: str
    got: str
    ok: bool


@dataclass
class AbuseConfig:
    fuzz: int = 400  # schemathesis cases against the process (0: skip)
    flood: int = 15  # dispatches by one user at once (burst is 10)
    timeout: float = 600.0


@dataclass
class AbuseReport:
    config: AbuseConfig
    probes: list[Probe] = field(default_factory=list)
    schedules_present: bool = False
    fuzz_cases: int = 0
    fuzz_failures: list[str] = field(default_factory=list)
    metrics_5xx: float = 0.0
    gateway_rss_mib: tuple[float, float] = (0.0, 0.0)  # before, after
    gateway_exit: int | None = None
    worker_exit: int | None = None
    scanned: dict[str, int] = field(default_factory=dict)  # source -> characters scanned
    leaks: list[str] = field(default_factory=list)  # "<secret> in <source>"
    observations: list[str] = field(default_factory=list)
    control_found: bool = False  # the search finds a planted secret

    def violations(self) -> list[str]:
        found = [f"{p.group}: {p.name}: expected {p.expected}, got {p.got}" for p in self.probes if not p.ok]
        found += [f"fuzz: {failure}" for failure in self.fuzz_failures[:10]]
        if self.metrics_5xx:
            found.append(f"gateway /metrics counts {self.metrics_5xx:.0f} 5xx responses")
        if self.gateway_exit != 0:
            found.append(f"gateway exit code on SIGTERM: {self.gateway_exit}")
        if self.worker_exit != 0:
            found.append(f"worker exit code on SIGTERM: {self.worker_exit}")
        found += [f"secret found: {leak}" for leak in self.leaks]
        if not self.control_found:
            found.append("the secret search missed a planted secret (positive control)")
        return found

    def rows(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = [("check", "result", "must be")]
        groups: dict[str, list[Probe]] = {}
        for probe in self.probes:
            groups.setdefault(probe.group, []).append(probe)
        for group, probes in groups.items():
            passed = sum(p.ok for p in probes)
            rows.append((f"{group} ({len(probes)} probes)", f"{passed} / {len(probes)} as expected", "all"))
        if not self.schedules_present:
            rows.append(("cron abuse on /schedules", "skipped: the gateway serves no /schedules", "-"))
        if self.config.fuzz:
            rows.append((f"schemathesis fuzz against the process ({self.fuzz_cases} cases)",
                         f"{len(self.fuzz_failures)} server errors", "0"))
        rows.append(("5xx responses in the gateway's /metrics", f"{self.metrics_5xx:.0f}", "0"))
        before, after = self.gateway_rss_mib
        rows.append(("gateway RSS before -> after (MiB)", f"{before:.0f} -> {after:.0f}", ""))
        rows.append(("gateway / worker exit code on SIGTERM", f"{self.gateway_exit} / {self.worker_exit}", "0 / 0"))
        rows.append(("secret search finds a planted secret (control)", "yes" if self.control_found else "no",
                     "yes"))
        for source, chars in self.scanned.items():
            found = [leak for leak in self.leaks if leak.endswith(f" in {source}")]
            rows.append((f"secrets in {source} ({chars:,} chars)", f"{len(found)} found", "0"))
        return rows


# --------------------------------------------------------------------------------------------
# Helpers


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None,
          digest: Callable[[], Any] = hashlib.sha256) -> str:
    """A JWT with any header; HMAC-signed with `key` (None: no signature)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = "" if key is None else _b64(hmac.new(key, signing_input.encode(), digest).digest())
    return f"{signing_input}.{signature}"


def claims_for(user: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE,
                              "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _verifies(headers: dict[str, str], body: bytes) -> bool:
    """Whether a Standard Webhooks receiver (the reference library) accepts the delivery."""
    try:
        Webhook(WEBHOOK_SECRET).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


class WebhookSink:
    """Receives completion webhooks on 127.0.0.1 (a callback_url a user could point anywhere)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.deliveries.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Api:
    def __init__(self, http: httpx.AsyncClient, report: AbuseReport) -> None:
        self.http = http
        self.report = report

    async def probe(
        self, group: str, name: str, expected: set[int] | Callable[[int], bool], method: str, path: str,
        *, check: Callable[[httpx.Response], str | None] | None = None, **kwargs: Any,
    ) -> httpx.Response | None:
        """Send one request; it passes if its status is expected (and `check` finds nothing)."""
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            # A connection the server closed on a hostile request is an acceptable refusal only
            # where the probe says so (status 0).
            ok = (0 in expected) if isinstance(expected, set) else expected(0)
            self.report.probes.append(Probe(group, name, _describe(expected), type(error).__name__, ok))
            return None
        status = response.status_code
        ok = status in expected if isinstance(expected, set) else expected(status)
        problem = check(response) if check and ok else None
        got = str(status) + (f" ({problem})" if problem else "")
        self.report.probes.append(Probe(group, name, _describe(expected), got, ok and problem is None))
        return response


async def raw_status(host: str, port: int, request: bytes, timeout: float = 10.0) -> int:
    """Send raw bytes; the response's status code, or 0 if the server closed without one."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    except (TimeoutError, ConnectionError):
        return 0
    finally:
        writer.close()


def _describe(expected: set[int] | Callable[[int], bool]) -> str:
    if isinstance(expected, set):
        return "/".join(str(s) if s else "closed" for s in sorted(expected))
    return "4xx"


def four_xx(status: int) -> bool:
    return 400 <= status < 500 or status == 0


def not_5xx(status: int) -> bool:
    return status < 500


def _echoes(secret: str) -> Callable[[httpx.Response], str | None]:
    def check(response: httpx.Response) -> str | None:
        return "echoes the token" if secret in response.text else None

    return check


# --------------------------------------------------------------------------------------------
# The suite


async def run_abuse(config: AbuseConfig) -> AbuseReport:
    sink = WebhookSink()
    try:
        with suite_servers() as s:
            return await _run(config, s.server, s.llm, s.composio, s.fleet, sink)
    finally:
        sink.close()


async def _run(
    config: AbuseConfig, server: TemporalDevServer, llm: FakeAnthropic, composio: FakeComposio,
    fleet: Fleet, sink: WebhookSink,
) -> AbuseReport:
    report = AbuseReport(config)
    users = ["alice", "bob", "mallory", "prober", "flood", "sched-alice", "sched-bob", "fuzz-user"]
    add_notes_tools(composio, users)
    failed_once: set[str] = set()

    def flaky_list(user: str, args: dict[str, Any]) -> dict[str, Any]:
        # alice-2's read-only call meets one Composio 5xx (retried: read-only); an unsafe call
        # would wait for a human instead, which is the chaos suite's business.
        if args.get("run") == "alice-2" and "alice-2" not in failed_once:
            failed_once.add("alice-2")
            raise RuntimeError("injected Composio failure")
        return {"ok": True, "run": args.get("run")}

    composio.add_tool(READ_ONLY_TOOL, TOOLKIT, "List the notes.", TOOL_SCHEMA, flaky_list)

    def model(tag: str, turn: int, attempt: int, index: int, reply: Reply) -> Reply:
        if tag == "fatal":
            return replies.error(401)  # the worker's error path: must not print the key it used
        return reply

    llm.responder = AgentScript(1, [READ_ONLY_TOOL, UNSAFE_TOOL], model)
    queue = f"abuse-{uuid.uuid4().hex[:8]}"
    # This suite's webhook receiver listens on loopback, so this stack allows private networks; a
    # second gateway with the production default (refuse them) takes the SSRF probes.
    private_ok = {"KRON_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}
    worker_env_ = worker_env(server.address, queue, llm, composio, KRON_LOG_LEVEL="INFO", **private_ok)
    gateway_env_ = gateway_env(server.address, queue, composio, KRON_LOG_LEVEL="INFO", **private_ok)
    worker, gateway, strict_gateway = await asyncio.gather(
        asyncio.to_thread(fleet.worker, worker_env_), asyncio.to_thread(fleet.gateway, gateway_env_),
        asyncio.to_thread(fleet.gateway, gateway_env(server.address, queue, composio)),
    )
    base_url = f"http://127.0.0.1:{ready_value(gateway, 'kron-gateway ready', 'port')}"
    strict_url = f"http://127.0.0.1:{ready_value(strict_gateway, 'kron-gateway ready', 'port')}"
    metrics_url = f"http://127.0.0.1:{ready_value(worker, 'kron-worker ready', 'metrics_port')}/metrics"
    minting = GatewaySettings(dev_mode=True, jwt_secret=SecretStr(JWT_SECRET))
    tokens = {u: issue_token(u, minting).access_token for u in users}
    auth = {u: {"Authorization": f"Bearer {t}"} for u, t in tokens.items()}
    client = await connect(server.address)
    memory = memory_of(gateway.process.pid)
    before_rss = memory.rss_mib if memory else 0.0

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        api = Api(http, report)
        # Real runs first, so logs and histories hold something worth leaking: tool calls, a
        # signed webhook, a model auth failure, a Composio 503.
        alice_tasks = await _alice_runs(api, http, auth["alice"], sink)
        await _bodies(api, auth["prober"], sink)
        async with httpx.AsyncClient(base_url=strict_url, timeout=30) as strict_http:
            await _ssrf(Api(strict_http, report), auth["prober"])
        await _jwt_attacks(api, tokens["mallory"])
        await _cross_user(api, http, auth, alice_tasks)
        await _flood(api, http, auth["flood"], config.flood)
        report.schedules_present = await _schedules(api, http, auth)
        if config.fuzz:
            await asyncio.to_thread(_fuzz, report, base_url, tokens["fuzz-user"], config.fuzz)
        await _wait_terminal(http, auth["alice"], alice_tasks, deadline=time.monotonic() + 60)

        await api.probe("process", "gateway alive after the abuse (/livez)", {200}, "GET", "/livez")
        gateway_metrics = (await http.get("/metrics")).text
        report.metrics_5xx = _sum_metric(gateway_metrics, "kron_gateway_requests_total", 'status_class="5xx"')
    async with httpx.AsyncClient(timeout=10) as plain:
        worker_metrics = (await plain.get(metrics_url)).text
    memory = memory_of(gateway.process.pid)
    report.gateway_rss_mib = (before_rss, memory.rss_mib if memory else 0.0)

    histories = await _histories(client)
    await asyncio.to_thread(strict_gateway.terminate, 30)
    report.gateway_exit = await asyncio.to_thread(gateway.terminate, 30)
    report.worker_exit = await asyncio.to_thread(worker.terminate, 30)

    sources = {
        "gateway output": "\n".join(gateway.output),
        "worker output": "\n".join(worker.output),
        "temporal server log": Path(server.log_path).read_text(errors="replace"),
        f"workflow histories ({len(histories)} runs)": "\n".join(histories),
        "gateway /metrics": gateway_metrics,
        "worker /metrics": worker_metrics,
        f"webhook deliveries ({len(sink.deliveries)})": "\n".join(
            json.dumps(headers) + body.decode(errors="replace") for headers, body in sink.deliveries
        ),
    }
    secrets = secrets_of(tokens)
    report.leaks = scan(sources, secrets)
    report.scanned = {source: len(text) for source, text in sources.items()}
    # Positive control: the same search finds a secret that is there.
    report.control_found = bool(scan({"control": f"log line with {JWT_SECRET[-20:]} in it"}, secrets))
    return report


async def _alice_runs(
    api: Api, http: httpx.AsyncClient, headers: dict[str, str], sink: WebhookSink
) -> list[str]:
    task_ids = []
    for tag, extra in (("alice-1", {"callback_url": sink.url}), ("alice-2", {}), ("fatal", {})):
        response = await api.probe(
            "runs", f"dispatch {tag}", {202}, "POST", "/tasks/dispatch", headers=headers,
            json={"goal": goal_for(tag), "toolkits": [TOOLKIT], **extra},
        )
        if response is not None and response.status_code == 202:
            task_ids.append(response.json()["task_id"])
    done = await _wait_terminal(http, headers, task_ids, deadline=time.monotonic() + 90)
    api.report.probes.append(Probe("runs", "alice's runs reached a terminal status", "3",
                                   str(done), done == len(task_ids) == 3))
    delivered = len(sink.deliveries)
    signed = sum(1 for headers_, body in sink.deliveries if _verifies(headers_, body))
    api.report.probes.append(Probe("runs", "webhook delivered, verified by the standardwebhooks library",
                                   "1 (1 valid)", f"{delivered} ({signed} valid)", delivered == signed == 1))
    return task_ids


# Hosts a user must not reach through kron's worker (KRON_WEBHOOK_ALLOW_PRIVATE_NETWORKS=false).
SSRF_CALLBACKS = (
    "http://127.0.0.1:8080/admin", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:9464/metrics", "http://10.0.0.5/", "http://192.168.1.1/",
    "http://100.64.0.1/", "http://localhost:7233/", "http://metadata.google.internal/", "http://printer.local/",
    "http://user:pass@example.com/hook",
)


async def _ssrf(api: Api, headers: dict[str, str]) -> None:
    """callback_urls on loopback, private, link-local (cloud metadata) or local-only names: 422
    `callback_url_not_allowed` on dispatch and on schedule creation."""

    def not_allowed(response: httpx.Response) -> str | None:
        kinds = [e.get("type") for e in response.json().get("errors", [])]
        return None if kinds == ["callback_url_not_allowed"] else f"errors {kinds}"

    for url in SSRF_CALLBACKS:
        await api.probe("ssrf", f"dispatch callback_url {url}", {422}, "POST", "/tasks/dispatch", headers=headers,
                        json={"goal": "x", "callback_url": url}, check=not_allowed)
    await api.probe("ssrf", "schedule callback_url http://169.254.169.254/", {422}, "POST", "/schedules",
                    headers=headers, check=not_allowed, json={
                        "name": "ssrf", "timing": {"cron": ["0 0 1 1 *"]},
                        "run": {"goal": "x", "callback_url": "http://169.254.169.254/latest/meta-data/"}})


async def _wait_terminal(
    http: httpx.AsyncClient, headers: dict[str, str], task_ids: list[str], deadline: float
) -> int:
    pending = set(task_ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            response = await http.get(f"/tasks/{task_id}", headers=headers)
            if response.status_code == 200:
                body = response.json()
                if body["status"] in TERMINAL and body["execution_status"] != "running":
                    pending.discard(task_id)
        await asyncio.sleep(0.5)
    return len(task_ids) - len(pending)


async def _bodies(api: Api, headers: dict[str, str], sink: WebhookSink) -> None:
    group = "oversized and malformed bodies"
    json_headers = {**headers, "Content-Type": "application/json"}

    def dispatch(name: str, expected: set[int] | Callable[[int], bool], **kwargs: Any) -> Any:
        return api.probe(group, name, expected, "POST", "/tasks/dispatch", **kwargs)

    big = json.dumps({"goal": "x" * 100_000}).encode()
    await dispatch("100 KB body (Content-Length)", {413}, headers=json_headers, content=big)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"goal": "'
        for _ in range(200):
            yield b"y" * 1024
        yield b'"}'

    await dispatch("200 KB chunked body (no Content-Length)", {413}, headers=json_headers, content=chunks())
    # A declared length no client library will send short of: on a raw socket.
    declared = await raw_status(
        api.http.base_url.host, api.http.base_url.port or 80,
        b"POST /tasks/dispatch HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + f"Authorization: {headers['Authorization']}\r\nContent-Length: {10**12}\r\n\r\n{{}}".encode(),
    )
    api.report.probes.append(Probe(group, "Content-Length: 10^12, 2 bytes sent", "413/closed",
                                   str(declared), declared in (413, 0)))
    await dispatch("goal of 32,001 characters", {422}, headers=headers, json={"goal": "g" * 32_001})
    await dispatch("truncated JSON", {400, 422}, headers=json_headers, content=b'{"goal": "x"')
    await dispatch("JSON array", {422}, headers=headers, json=[{"goal": "x"}])
    await dispatch("JSON null", {422}, headers=json_headers, content=b"null")
    await dispatch("goal is a number", {422}, headers=headers, json={"goal": 12})
    depth = 5_000
    await dispatch(f"nested {depth} levels deep", four_xx, headers=json_headers,
                   content=b'{"goal": "x", "toolkits": ' + b"[" * depth + b"]" * depth + b"}")
    await dispatch("invalid UTF-8", {400, 422}, headers=json_headers, content=b'{"goal": "\xff\xfe\xfa"}')
    await dispatch("text/plain body", {415, 422}, headers={**headers, "Content-Type": "text/plain"},
                   content=b'{"goal": "x"}')
    await dispatch("user_id in the body (impersonation)", {422}, headers=headers,
                   json={"goal": "x", "user_id": "alice"})
    await dispatch("40 toolkits", {422}, headers=headers, json={"goal": "x", "toolkits": [f"t{i}" for i in range(40)]})
    await dispatch("toolkit '../../etc/passwd'", {422}, headers=headers, json={"goal": "x", "toolkits": ["../../etc/passwd"]})
    await dispatch("model with shell characters", {422}, headers=headers, json={"goal": "x", "model": "claude-x; rm -rf /"})
    await dispatch("max_iterations 10^30", {422}, headers=headers, json={"goal": "x", "max_iterations": 10**30})
    await dispatch("budget -1", {422}, headers=headers, json={"goal": "x", "budget": -1})
    await dispatch("callback_url file:///etc/passwd", {422}, headers=headers,
                   json={"goal": "x", "callback_url": "file:///etc/passwd"})
    await dispatch("callback_url javascript:", {422}, headers=headers,
                   json={"goal": "x", "callback_url": "javascript:alert(1)"})
    await dispatch("Idempotency-Key with control characters", {400, 422},
                   headers={**headers, "Idempotency-Key": "key\x01\x02"}, json={"goal": "x"})
    largest_accepted = 0
    for size in (64, 1024, 8192):
        response = await dispatch(f"{size} KiB header", not_5xx, json={"goal": "x"},
                                  headers={**headers, "X-Junk": "j" * size * 1024})
        if response is not None and response.status_code < 400:
            largest_accepted = size
    if largest_accepted:
        api.report.observations.append(
            f"a request with a {largest_accepted} KiB header was accepted (the body limit is "
            "KRON_MAX_BODY_BYTES; header size is left to the HTTP server)"
        )
    await api.probe(group, "PUT /tasks/dispatch", {405}, "PUT", "/tasks/dispatch", headers=headers, json={})
    await api.probe(group, "task id of 200 characters", {404, 422}, "GET", "/tasks/" + "a" * 200, headers=headers)
    await api.probe(group, "task id with encoded path traversal", {404, 422}, "GET",
                    "/tasks/..%2F..%2Fetc%2Fpasswd", headers=headers)
    await api.probe(group, "limit=10^6", {422}, "GET", "/tasks", headers=headers, params={"limit": 10**6})
    await api.probe(group, "cursor of garbage", {422}, "GET", "/tasks", headers=headers,
                    params={"cursor": "A" * 500})
    await api.probe(group, "2,000 query parameters", not_5xx, "GET", "/tasks", headers=headers,
                    params={f"p{i}": "v" for i in range(2000)})

    def no_injected_id(response: httpx.Response) -> str | None:
        return "echoed a hostile X-Request-ID" if "evil" in response.headers.get("x-request-id", "") else None

    await api.probe(group, "X-Request-ID with a quote and spaces", {200}, "GET", "/tasks",
                    headers={**headers, "X-Request-ID": 'evil" injected=1 x'}, check=no_injected_id)


async def _jwt_attacks(api: Api, mallory_token: str) -> None:
    group = "JWT attacks"
    secret = JWT_SECRET.encode()
    hs256 = {"alg": "HS256", "typ": "JWT"}
    cases: dict[str, str] = {
        "alg none": forge({"alg": "none", "typ": "JWT"}, claims_for("alice"), None),
        "alg None": forge({"alg": "None", "typ": "JWT"}, claims_for("alice"), None),
        "HS256 with a wrong secret": forge(hs256, claims_for("alice"), b"not-the-secret-0123456789abcdefgh"),
        "HS256 with an empty secret": forge(hs256, claims_for("alice"), b""),
        "HS512 with the real secret": forge({"alg": "HS512", "typ": "JWT"}, claims_for("alice"), secret,
                                            hashlib.sha512),
        "RS256 header, HMAC-signed with the secret": forge({"alg": "RS256", "typ": "JWT"},
                                                           claims_for("alice"), secret),
        "kid path traversal, empty key": forge({**hs256, "kid": "../../../../dev/null"}, claims_for("alice"), b""),
        "expired an hour ago": jwt.encode(claims_for("alice", iat=int(time.time()) - 7200,
                                                     exp=int(time.time()) - 3600), JWT_SECRET, "HS256"),
        "not valid for another hour (nbf)": jwt.encode(claims_for("alice", nbf=int(time.time()) + 3600),
                                                       JWT_SECRET, "HS256"),
        "wrong audience": jwt.encode(claims_for("alice", aud="someone-else"), JWT_SECRET, "HS256"),
        "wrong issuer": jwt.encode(claims_for("alice", iss="evil-idp"), JWT_SECRET, "HS256"),
        "no exp": jwt.encode({k: v for k, v in claims_for("alice").items() if k != "exp"}, JWT_SECRET, "HS256"),
        "no sub": jwt.encode({k: v for k, v in claims_for("alice").items() if k != "sub"}, JWT_SECRET, "HS256"),
        "sub is a number": forge(hs256, claims_for("alice", sub=12345), secret),
        "sub is empty": forge(hs256, claims_for("alice", sub=""), secret),
        "sub with a visibility-query injection": forge(
            hs256, claims_for('alice" OR KronUserId != "x'), secret),
        "sub of 500 characters": forge(hs256, claims_for("a" * 500), secret),
        "sub with a newline": forge(hs256, claims_for("alice\nadmin"), secret),
        "payload swapped to alice, mallory's signature": ".".join(
            [mallory_token.split(".")[0], _b64(json.dumps(claims_for("alice")).encode()),
             mallory_token.split(".")[2]]),
        "signature stripped": mallory_token.rsplit(".", 1)[0] + ".",
        "token of 5,000 characters": jwt.encode(claims_for("alice", pad="p" * 5000), JWT_SECRET, "HS256"),
        "not a JWT": "abc.def",
    }
    for name, token in cases.items():
        await api.probe(group, name, {401}, "GET", "/tasks", headers={"Authorization": f"Bearer {token}"},
                        check=_echoes(token))
    await api.probe(group, "no Authorization header", {401}, "GET", "/tasks")
    await api.probe(group, "bearer without a token", {401}, "GET", "/tasks", headers={"Authorization": "Bearer"})
    await api.probe(group, "Basic scheme", {401}, "GET", "/tasks",
                    headers={"Authorization": "Basic " + base64.b64encode(b"alice:alice").decode()})
    await api.probe(group, "valid token in the query string only", {401}, "GET", "/tasks",
                    params={"access_token": mallory_token})
    await api.probe(group, "valid token in a cookie only", {401}, "GET", "/tasks",
                    headers={"Cookie": f"access_token={mallory_token}"})


async def _cross_user(
    api: Api, http: httpx.AsyncClient, auth: dict[str, dict[str, str]], alice_tasks: list[str]
) -> None:
    group = "other users' ids"
    bob = auth["bob"]
    if not alice_tasks:
        api.report.probes.append(Probe(group, "alice has a task to attack", "1+", "0", False))
        return
    task = alice_tasks[0]
    await api.probe(group, "alice reads her own task (control)", {200}, "GET", f"/tasks/{task}", headers=auth["alice"])
    await api.probe(group, "bob reads alice's task", {404}, "GET", f"/tasks/{task}", headers=bob)
    await api.probe(group, "bob follows alice's task (SSE)", {404}, "GET", f"/tasks/{task}/events", headers=bob)
    await api.probe(group, "bob cancels alice's task", {404}, "DELETE", f"/tasks/{task}", headers=bob)
    await api.probe(group, "bob approves alice's task", {404}, "POST", f"/tasks/{task}/approve", headers=bob, json={})
    await api.probe(group, "bob denies alice's task", {404}, "POST", f"/tasks/{task}/deny", headers=bob, json={})
    await api.probe(group, "bob resolves alice's unknown outcomes", {404, 422}, "POST", f"/tasks/{task}/resolve",
                    headers=bob, json={"action": "skip"})

    def not_listed(response: httpx.Response) -> str | None:
        ids = {t["task_id"] for t in response.json().get("tasks", [])}
        return "lists alice's tasks" if ids & set(alice_tasks) else None

    await api.probe(group, "bob lists tasks", {200}, "GET", "/tasks", headers=bob, check=not_listed)
    await api.probe(group, "bob lists completed tasks", {200}, "GET", "/tasks", headers=bob,
                    params={"status": "completed"}, check=not_listed)
    first = await http.get("/tasks", headers=auth["alice"], params={"limit": 1})
    cursor = first.json().get("next_cursor") if first.status_code == 200 else None
    if cursor:
        await api.probe(group, "bob pages with alice's cursor", {422}, "GET", "/tasks", headers=bob,
                        params={"limit": 1, "cursor": cursor})
    key = f"shared-key-{uuid.uuid4().hex[:8]}"
    mine = await http.post("/tasks/dispatch", headers={**auth["alice"], "Idempotency-Key": key},
                           json={"goal": goal_for("alice-idem")})

    def different_task(response: httpx.Response) -> str | None:
        theirs = mine.json().get("task_id") if mine.status_code == 202 else None
        body = response.json()
        return "got alice's task" if body.get("task_id") == theirs or body.get("replayed") else None

    await api.probe(group, "bob reuses alice's Idempotency-Key", {202}, "POST", "/tasks/dispatch",
                    headers={**bob, "Idempotency-Key": key}, json={"goal": goal_for("alice-idem")},
                    check=different_task)


async def _flood(api: Api, http: httpx.AsyncClient, headers: dict[str, str], count: int) -> None:
    responses = await asyncio.gather(*(
        http.post("/tasks/dispatch", headers=headers, json={"goal": goal_for(f"flood-{i}")}) for i in range(count)
    ))
    accepted = sum(r.status_code == 202 for r in responses)
    limited = [r for r in responses if r.status_code == 429]
    with_retry_after = sum(1 for r in limited if r.headers.get("retry-after", "").isdigit())
    other = [r.status_code for r in responses if r.status_code not in (202, 429)]
    ok = accepted <= 11 and len(limited) == count - accepted and with_retry_after == len(limited) and not other
    api.report.probes.append(Probe(
        "dispatch flood", f"{count} dispatches at once by one user (burst 10)",
        "<= 11 x 202, rest 429 + Retry-After",
        f"{accepted} x 202, {len(limited)} x 429 ({with_retry_after} with Retry-After), other {other}", ok,
    ))


async def _schedules(api: Api, http: httpx.AsyncClient, auth: dict[str, dict[str, str]]) -> bool:
    schema = (await http.get("/openapi.json")).json()
    if not any(path.startswith("/schedules") for path in schema.get("paths", {})):
        return False
    group = "cron abuse on /schedules"
    alice, bob = auth["sched-alice"], auth["sched-bob"]
    name = f"digest-{uuid.uuid4().hex[:6]}"

    def body(**fields: Any) -> dict[str, Any]:
        values: dict[str, Any] = {"name": name, "timing": {"cron": ["0 8 * * 1-5"], "timezone": "UTC"},
                                  "run": {"goal": "summarise my notifications"}}
        values.update(fields)
        return values

    def timing(**fields: Any) -> dict[str, Any]:
        return body(name=f"bad-{uuid.uuid4().hex[:6]}", timing=fields)

    created = await api.probe(group, "alice creates a weekday schedule (control)", {201}, "POST", "/schedules",
                              headers=alice, json=body())
    bad: dict[str, dict[str, Any]] = {
        "every second (6-field cron)": timing(cron=["* * * * * *"]),
        "interval of 1 s": timing(interval_seconds=1),
        "100 cron expressions": timing(cron=["0 8 * * *"] * 100),
        "cron of 10,000 characters": timing(cron=["0 " * 5000]),
        "cron '@every 1s'": timing(cron=["@every 1s"]),
        "cron with out-of-range fields": timing(cron=["99 99 99 99 99"]),
        "timezone 'Mars/Olympus_Mons'": timing(cron=["0 8 * * *"], timezone="Mars/Olympus_Mons"),
        "timezone path traversal": timing(cron=["0 8 * * *"], timezone="../../etc/localtime"),
        "negative jitter": timing(cron=["0 8 * * *"], jitter_seconds=-5),
        "both cron and interval": timing(cron=["0 8 * * *"], interval_seconds=3600),
        "name '../x'": body(name="../x"),
        "name of 10,000 characters": body(name="n" * 10_000),
        "goal of 40,000 characters": body(name=f"g-{uuid.uuid4().hex[:6]}", run={"goal": "g" * 40_000}),
        "owner field in the body": body(name=f"o-{uuid.uuid4().hex[:6]}", owner="alice"),
    }
    for case, payload in bad.items():
        await api.probe(group, case, four_xx, "POST", "/schedules", headers=alice, json=payload)
    if created is not None and created.status_code == 201:
        path = f"/schedules/{name}"
        await api.probe(group, "bob reads alice's schedule", {404}, "GET", path, headers=bob)
        await api.probe(group, "bob changes alice's schedule", {404, 405}, "PATCH", path, headers=bob,
                        json={"suspend": True})
        await api.probe(group, "bob replaces alice's schedule", {404, 405}, "PUT", path, headers=bob, json=body())
        await api.probe(group, "bob triggers alice's schedule", {404}, "POST", f"{path}/trigger", headers=bob)
        await api.probe(group, "bob suspends alice's schedule", {404}, "POST", f"{path}/suspend", headers=bob)
        await api.probe(group, "bob reads alice's schedule runs", {404}, "GET", f"{path}/runs", headers=bob)
        await api.probe(group, "bob deletes alice's schedule", {404}, "DELETE", path, headers=bob)
        await api.probe(group, "bob creates a schedule of the same name (no clash with alice's)",
                        lambda s: s in (201, 409), "POST", "/schedules", headers=bob, json=body())
        triggers = await asyncio.gather(*(http.post(f"{path}/trigger", headers=alice) for _ in range(20)))
        statuses = sorted({r.status_code for r in triggers})
        api.report.probes.append(Probe(group, "20 triggers at once", "no 5xx", str(statuses),
                                       all(s < 500 for s in statuses)))
        await api.probe(group, "alice deletes her schedule (clean-up)", {200, 202, 204}, "DELETE", path,
                        headers=alice)
        await http.delete(path, headers=bob)
    return True


def _fuzz(report: AbuseReport, base_url: str, token: str, examples: int) -> None:
    """schemathesis over every operation of the process's OpenAPI schema: never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok

    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations() if isinstance(result, Ok)]
    cases = st.one_of([op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode])

    @given(case=cases)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        report.fuzz_cases += 1
        try:
            case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                   checks=[not_a_server_error], timeout=30)
        except Exception as failure:  # noqa: BLE001 - collected, reported as a finding
            text = str(failure).strip().splitlines()
            report.fuzz_failures.append(f"{case.method} {case.path}: {text[0] if text else failure!r}")

    check()


def secrets_of(tokens: dict[str, str]) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "COMPOSIO_API_KEY": COMPOSIO_KEY,
        "KRON_JWT_SECRET": JWT_SECRET,
        "KRON_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **{f"bearer token of {u}": t for u, t in tokens.items()},
        **{f"bearer token signature of {u}": t.rsplit(".", 1)[1] for u, t in tokens.items()},
    }


def scan(sources: dict[str, str], secrets: dict[str, str]) -> list[str]:
    """`<secret> in <source>` for each secret found whole, or (keys and secrets) as any 16
    consecutive characters of their random tail: a partly masked key is still a leak."""
    leaks = []
    for source, text in sources.items():
        for name, secret in secrets.items():
            pieces = {secret}
            if not name.startswith("bearer"):
                tail = secret[-32:]
                pieces |= {tail[i : i + 16] for i in range(len(tail) - 15)}
            if any(piece in text for piece in pieces):
                leaks.append(f"{name} in {source}")
    return leaks


async def _histories(client: Client) -> list[str]:
    ids = [execution.id async for execution in client.list_workflows()]

    async def history(workflow_id: str) -> str:
        return (await client.get_workflow_handle(workflow_id).fetch_history()).to_json()

    return await bounded(8, [functools.partial(history, i) for i in ids])


def _sum_metric(text: str, name: str, label: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = suite_parser(__doc__)
    parser.add_argument("--fuzz", type=int, default=400, help="schemathesis cases (0: skip)")
    parser.add_argument("--flood", type=int, default=15)
    args = parser.parse_args()
    config = AbuseConfig(fuzz=args.fuzz, flood=args.flood)
    report = asyncio.run(run_abuse(config))
    conclude(
        "Abuse: hostile requests against a gateway process (production settings) with a worker "
        "behind it, then a search for the run's secrets",
        report,
        [f"observation: {o}" for o in report.observations]
        + [f"failed: {p.group}: {p.name}: expected {p.expected}, got {p.got}" for p in report.probes if not p.ok],
    )


if __name__ == "__main__":
    main()
