"""KubernetesSource on recorded API payloads (testdata/): the real `kubernetes` client builds the
requests and parses the responses; only urllib3's pool manager is replaced."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from kubernetes import client as k8s_client

from kron.scheduler.kubernetes_source import MERGE_PATCH, KubernetesSource
from kron.scheduler.resources import STATUS_KEYS
from kron.scheduler.sources import SourceError

TESTDATA = Path(__file__).parent / "testdata"


@dataclass
class FakeResponse:
    """What urllib3 hands the client: a status, headers, the body at once or in chunks."""

    status: int
    body: bytes
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    @property
    def data(self) -> bytes:
        return self.body

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.body.splitlines(keepends=True)  # the API server flushes one event per chunk

    # kubernetes 36 reads headers the urllib3 1.x way.
    def getheaders(self) -> dict[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), default)

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class FakePoolManager:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.responses: list[FakeResponse] = []

    def reply(self, fixture: str, status: int = 200, reason: str = "OK") -> None:
        self.responses.append(FakeResponse(status, (TESTDATA / fixture).read_bytes(), reason))

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        parts = urlsplit(url)
        body = kwargs.get("body")
        # kubernetes 36 hands GET parameters to urllib3 as `fields` (urllib3 puts them in the URL).
        query = parse_qs("&".join(q for q in (parts.query, urlencode(kwargs.get("fields") or [])) if q))
        self.requests.append(Request(method, parts.path, query, dict(kwargs.get("headers") or {}),
                                     json.loads(body) if body else None))
        if not self.responses and [w.lower() for w in query.get("watch", [])] == ["true"]:
            # Like the API server: a watch with nothing to report ends after its timeoutSeconds.
            time.sleep(float(query["timeoutSeconds"][0]))
            return FakeResponse(200, b"")
        return self.responses.pop(0)


@pytest.fixture
def pool() -> FakePoolManager:
    return FakePoolManager()


def source_for(pool: FakePoolManager, namespace: str | None = None) -> KubernetesSource:
    api_client = k8s_client.ApiClient(k8s_client.Configuration(host="https://k8s.test"))
    api_client.rest_client.pool_manager = pool
    return KubernetesSource(k8s_client.CustomObjectsApi(api_client), namespace=namespace, source_id="kubernetes")


async def test_load_lists_every_namespace_and_parses_each_resource(pool: FakePoolManager) -> None:
    pool.reply("scheduledruns_list.json")
    declared = await source_for(pool).load()

    [request] = pool.requests
    assert request.method == "GET" and request.path == "/apis/kron.dev/v1alpha1/scheduledruns"
    digest, triage, broken = declared
    assert (digest.ref.key, digest.owner, digest.generation) == ("team-a/github-digest", "alice", 3)
    assert digest.definition is not None and digest.error is None
    assert digest.definition.timing.cron == ["0 8 * * 1-5"] and digest.definition.timing.jitter_seconds == 30
    assert digest.definition.run.max_iterations == 20 and digest.definition.run.token_budget == 200_000
    assert digest.status["conditions"][0]["reason"] == "Synced"  # kept for transition times
    assert triage.definition is not None and triage.definition.timing.interval_seconds == 3600
    assert triage.definition.concurrency_policy.value == "Forbid" and triage.definition.run.toolkits == ["zendesk", "slack"]
    assert broken.definition is None and broken.error and "unknown timezone 'Mars/Olympus_Mons'" in broken.error


async def test_load_one_namespace(pool: FakePoolManager) -> None:
    pool.reply("scheduledruns_list.json")
    await source_for(pool, namespace="team-a").load()
    assert pool.requests[0].path == "/apis/kron.dev/v1alpha1/namespaces/team-a/scheduledruns"


async def test_an_api_error_is_a_source_error(pool: FakePoolManager) -> None:
    pool.reply("scheduledrun_forbidden.json", status=403, reason="Forbidden")
    with pytest.raises(SourceError, match="HTTP 403"):
        await source_for(pool).load()


async def test_watch_ignores_status_only_changes_and_wakes_on_spec_changes(pool: FakePoolManager) -> None:
    source = source_for(pool, namespace="team-a")
    pool.reply("scheduledruns_list.json")
    await source.load()
    pool.reply("scheduledruns_watch_status_then_spec.jsonl")

    assert await source.wait_for_change(timeout=30) is True
    watch = pool.requests[-1]
    assert watch.path == "/apis/kron.dev/v1alpha1/namespaces/team-a/scheduledruns"
    # "True" from kubernetes 36 (the API server parses it like Go's ParseBool).
    assert watch.query["watch"][0].lower() == "true" and watch.query["resourceVersion"] == ["48213"]
    assert watch.query["timeoutSeconds"] == ["5"] and watch.query["allowWatchBookmarks"][0].lower() == "true"
    # The next watch resumes after the event that woke us.
    pool.reply("scheduledruns_watch_added.jsonl")
    assert await source.wait_for_change(timeout=5) is True
    assert pool.requests[-1].query["resourceVersion"] == ["48231"]


async def test_watch_times_out_quietly_and_relists_after_expiry(pool: FakePoolManager) -> None:
    source = source_for(pool)
    pool.reply("scheduledruns_list.json")
    await source.load()
    assert await source.wait_for_change(timeout=1) is False  # nothing changed for a whole watch
    assert pool.requests[-1].query["timeoutSeconds"] == ["1"]

    pool.reply("scheduledruns_watch_expired.jsonl")  # 410: our resourceVersion is too old
    assert await source.wait_for_change(timeout=1) is True
    await source.wait_for_change(timeout=1)
    assert "resourceVersion" not in pool.requests[-1].query  # watches from now until the next list


async def test_report_status_merge_patches_the_status_subresource(pool: FakePoolManager) -> None:
    source = source_for(pool)
    pool.reply("scheduledruns_list.json")
    digest = (await source.load())[0]
    pool.responses.append(FakeResponse(200, json.dumps({"kind": "ScheduledRun", "metadata": {}}).encode()))
    status = {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]}

    await source.report_status(digest, status)
    patch = pool.requests[-1]
    assert patch.method == "PATCH"
    assert patch.path == "/apis/kron.dev/v1alpha1/namespaces/team-a/scheduledruns/github-digest/status"
    assert patch.headers["Content-Type"] == MERGE_PATCH
    assert patch.body["status"]["observedGeneration"] == 3
    assert set(patch.body["status"]) == set(STATUS_KEYS)  # keys we no longer set are nulled
    assert patch.body["status"]["nextRunTime"] is None
