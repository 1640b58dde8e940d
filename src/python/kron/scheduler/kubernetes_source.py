"""ScheduledRun resources from the Kubernetes API (official `kubernetes` client): list, watch for
changes, patch the status subresource. A thin adapter: parsing and status shapes are in
`resources`, the sync logic in `sync`.

The client is synchronous; every call runs in a thread. Watching is only a wake-up: after any event
the sync lists everything again (level-triggered), so a missed or expired watch costs nothing but
latency. Status-only changes (ours) do not bump `metadata.generation` and are ignored.

Needs RBAC: get/list/watch on scheduledruns and patch on scheduledruns/status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

# kubernetes 36 ships no py.typed: mypy treats it as Any.
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from kron.common.logging import get_logger
from kron.scheduler.resources import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    STATUS_KEYS,
    VERSION,
    DeclaredSchedule,
    declared_from_resource,
)
from kron.scheduler.sources import SourceError

log = get_logger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# Requests other than the watch itself: a stuck API server must not stall the sync forever.
REQUEST_TIMEOUT_SECONDS = 30
# One watch request lasts at most this long (a blocked thread cannot be cancelled: this bounds how
# long shutting down waits for it); `wait_for_change` chains them up to its timeout.
WATCH_SLICE_SECONDS = 5


class KubernetesSource:
    def __init__(
        self,
        api: k8s_client.CustomObjectsApi,
        *,
        namespace: str | None = None,
        source_id: str = "kubernetes",
        watch_factory: Callable[[], k8s_watch.Watch] = k8s_watch.Watch,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.source_id = source_id
        self._watch_factory = watch_factory
        self._resource_version: str | None = None
        self._generations: dict[tuple[str | None, str], int | None] = {}

    @classmethod
    def from_environment(cls, *, namespace: str | None, source_id: str) -> KubernetesSource:
        """In-cluster service account config, else the local kubeconfig."""
        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            k8s_config.load_kube_config()
        return cls(k8s_client.CustomObjectsApi(), namespace=namespace, source_id=source_id)

    async def load(self) -> list[DeclaredSchedule]:
        return await asyncio.to_thread(self._load)

    async def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if await asyncio.to_thread(self._watch_once, min(remaining, WATCH_SLICE_SECONDS)):
                return True
        return False

    async def report_status(self, declared: DeclaredSchedule, status: dict[str, Any]) -> None:
        await asyncio.to_thread(self._patch_status, declared, status)

    # --- in threads

    def _list_call(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if self.namespace:
            return self.api.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)
        return self.api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)

    def _load(self) -> list[DeclaredSchedule]:
        call, args = self._list_call()
        try:
            response = call(*args, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as error:
            raise SourceError(f"listing {PLURAL} failed: HTTP {error.status} {error.reason}") from None
        except Exception as error:  # noqa: BLE001 - urllib3 connection errors and the like
            raise SourceError(f"listing {PLURAL} failed: {type(error).__name__}") from None
        if not isinstance(response, Mapping) or not isinstance(response.get("items"), list):
            raise SourceError(f"listing {PLURAL} returned no item list")
        metadata = response.get("metadata") or {}
        self._resource_version = metadata.get("resourceVersion")
        # List items carry apiVersion and kind; defaulted in case a proxy strips them.
        items = [{"apiVersion": API_VERSION, "kind": KIND, **item} for item in response["items"]]
        declared = [declared_from_resource(resource) for resource in items]
        self._generations = {(d.ref.namespace, d.ref.name): d.generation for d in declared}
        return declared

    def _watch_once(self, timeout: float) -> bool:
        """Block until a ScheduledRun is added, deleted or its spec changes (True), or `timeout`."""
        call, args = self._list_call()
        watcher = self._watch_factory()
        kwargs: dict[str, Any] = {"timeout_seconds": max(1, int(timeout)), "allow_watch_bookmarks": True}
        if self._resource_version:
            kwargs["resource_version"] = self._resource_version
        try:
            for event in watcher.stream(call, *args, **kwargs):
                kind = event.get("type")
                raw = event.get("raw_object") or event.get("object") or {}
                metadata = raw.get("metadata") or {} if isinstance(raw, Mapping) else {}
                if metadata.get("resourceVersion"):
                    self._resource_version = metadata["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                key = (metadata.get("namespace"), str(metadata.get("name") or ""))
                if kind == "MODIFIED" and key in self._generations and (
                    self._generations[key] == metadata.get("generation")
                ):
                    continue  # a status (or metadata) change: nothing to sync
                watcher.stop()
                return True
        except ApiException as error:
            # 410 Gone: our resourceVersion is too old. Relist (the caller's next load does).
            log.info("watch ended; relisting", status=error.status)
            self._resource_version = None
            return True
        return False

    def _patch_status(self, declared: DeclaredSchedule, status: dict[str, Any]) -> None:
        if not declared.ref.namespace:
            raise SourceError(f"{declared.ref.key}: a ScheduledRun without a namespace")
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, declared.ref.namespace, PLURAL, declared.ref.name,
            # Merge patch: lists (runHistory, conditions) are replaced whole; keys we no longer set
            # are removed with null.
            {"status": {**dict.fromkeys(STATUS_KEYS), **status}},
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
