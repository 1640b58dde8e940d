"""Where declarative schedules come from. The sync (`kron.scheduler.sync`) sees only this protocol:
the local YAML file here, the Kubernetes adapter in `kubernetes_source`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from kron.common.logging import get_logger
from kron.scheduler.resources import DeclaredSchedule, declared_from_resource, expand_documents

log = get_logger(__name__)


class SourceError(Exception):
    """The source could not be read. The sync changes nothing then (above all, deletes nothing)."""


class DefinitionSource(Protocol):
    # Stored on every schedule the source makes; the sync deletes only schedules carrying it.
    source_id: str

    async def load(self) -> list[DeclaredSchedule]:
        """Every ScheduledRun the source has now. Raises SourceError when it cannot tell."""
        ...

    async def wait_for_change(self, timeout: float) -> bool:
        """Return True soon after the definitions change, False after `timeout` seconds without."""
        ...

    async def report_status(self, declared: DeclaredSchedule, status: dict[str, Any]) -> None:
        """Publish a ScheduledRun's status (called only when it changed)."""
        ...


class YamlFileSource:
    """ScheduledRun documents in one YAML file (multi-document, or `kind: List`), for local use.

    Statuses go to `status_path` as JSON (`{"<name>": status}`), written atomically, if set."""

    def __init__(
        self, path: str | Path, *, source_id: str = "yaml", status_path: str | Path | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.source_id = source_id
        self.status_path = Path(status_path) if status_path else None
        self.poll_seconds = poll_seconds
        self._fingerprint: str | None = None
        self._statuses: dict[str, dict[str, Any]] = self._read_statuses()

    async def load(self) -> list[DeclaredSchedule]:
        text, fingerprint = await asyncio.to_thread(self._read)
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise SourceError(f"{self.path}: not valid YAML ({error.__class__.__name__})") from None
        self._fingerprint = fingerprint
        declared = [declared_from_resource(resource) for resource in expand_documents(documents)]
        for item in declared:
            item.status = dict(self._statuses.get(item.ref.key, {}))
        return declared

    async def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, fingerprint = await asyncio.to_thread(self._read)
            except SourceError:
                fingerprint = None
            if fingerprint != self._fingerprint:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.poll_seconds, remaining))

    async def report_status(self, declared: DeclaredSchedule, status: dict[str, Any]) -> None:
        self._statuses[declared.ref.key] = status
        if self.status_path is not None:
            await asyncio.to_thread(self._write_statuses)

    def statuses(self) -> dict[str, dict[str, Any]]:
        return dict(self._statuses)

    def _read(self) -> tuple[str, str]:
        # A missing file is an error, not "no schedules": a typo in the path must not delete them all.
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise SourceError(f"{self.path}: cannot read ({error.strerror})") from None
        return data.decode("utf-8", errors="replace"), hashlib.sha256(data).hexdigest()

    def _read_statuses(self) -> dict[str, dict[str, Any]]:
        if self.status_path is None or not self.status_path.exists():
            return {}
        try:
            loaded = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            log.warning("ignoring an unreadable status file", path=str(self.status_path))
            return {}
        return {k: v for k, v in loaded.items() if isinstance(v, dict)} if isinstance(loaded, dict) else {}

    def _write_statuses(self) -> None:
        assert self.status_path is not None
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.status_path.parent, prefix=".status-")
        with os.fdopen(fd, "w") as out:
            json.dump(self._statuses, out, indent=2, sort_keys=True)
        os.replace(tmp, self.status_path)
