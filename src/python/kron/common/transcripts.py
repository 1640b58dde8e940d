"""The transcript store: conversation content kept out of Temporal history (a claim check).

A run's content (its goal, each model reply, each tool result) is written here once, named by the
sha256 of its bytes, and the workflow carries only those names (`kron.contracts.models.ContentRef`).
Without this every model call's activity input held the whole conversation, so a run's history grew
with the square of its length (a 100-turn run with 20 KB tool results wrote ~100 MB).

Keys: `<prefix>/runs/<run id>/<sha256>`, one folder per run, so a run's transcript goes with one
prefix delete (`delete_run`: the gateway's DELETE of a finished task, and the retention `sweep`).

Two backends: a local directory (`kron up`, tests, the in-process runner) and any S3-compatible
bucket (Kubernetes: every worker and the gateway see the same bucket). Both sit behind a bounded
in-process LRU cache of recent content, so a worker that keeps serving a run (Temporal's sticky
queue) reads back nothing it wrote itself.

Reads check the sha256: a blob that is missing or does not match raises `TranscriptMissing`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kron.common.logging import get_logger

log = get_logger(__name__)

DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class TranscriptMissing(Exception):
    """Content a run's transcript should hold is not there (deleted, expired, or corrupt)."""

    def __init__(self, run_id: str, sha256: str, reason: str = "is missing from the store") -> None:
        super().__init__(f"transcript of run {run_id}: content sha256:{sha256} {reason}")
        self.run_id = run_id
        self.sha256 = sha256


class TranscriptSettings(BaseSettings):
    """`KRON_TRANSCRIPT_*`: where transcripts live. Read by the worker (writes and reads them) and
    the gateway (deletes a finished task's transcript)."""

    model_config = SettingsConfigDict(env_prefix="KRON_TRANSCRIPT_", extra="ignore", env_ignore_empty=True)

    store: Literal["local", "s3"] = "local"
    # local: a directory (default: $KRON_DATA_DIR/transcripts, else ~/.local/share/kron/transcripts).
    dir: str | None = None
    # s3: any S3-compatible bucket. Credentials unset: the SDK's own chain (IRSA, instance profile).
    s3_bucket: str | None = None
    s3_prefix: str = "kron/transcripts"
    s3_endpoint_url: str | None = None  # unset: AWS
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # A run whose transcript got no write for this long is over: the sweep deletes it.
    retention_days: float = Field(default=DEFAULT_RETENTION_DAYS, gt=0)
    # The worker's in-memory cache of recent content.
    cache_bytes: int = Field(default=DEFAULT_CACHE_BYTES, ge=0)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> TranscriptSettings:
        if self.store == "s3" and not self.s3_bucket:
            raise ValueError("KRON_TRANSCRIPT_STORE=s3 needs KRON_TRANSCRIPT_S3_BUCKET")
        return self

    def local_dir(self) -> Path:
        if self.dir:
            return Path(self.dir)
        data = os.environ.get("KRON_DATA_DIR") or os.path.join(
            os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"),
            "kron",
        )
        return Path(data) / "transcripts"


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _LruBytes:
    """sha256 -> bytes, bounded by the total size of the values (least recently used goes first)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.size = 0

    def get(self, key: tuple[str, str]) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._items[key] = value
        self.size += len(value)
        while self.size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)

    def drop_run(self, run_id: str) -> None:
        for key in [k for k in self._items if k[0] == run_id]:
            self.size -= len(self._items.pop(key))


class TranscriptStore:
    """Content-addressed blobs per run, with an LRU cache in front. Subclasses do the raw I/O."""

    def __init__(self, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._cache = _LruBytes(cache_bytes)
        self.reads = 0  # reads that missed the cache (benchmarks and tests look)

    async def put(self, run_id: str, data: bytes) -> str:
        """Store `data` in the run's transcript; returns its sha256. Always written (not skipped when
        present): the write refreshes the run's last-modified time the retention sweep reads."""
        sha = content_sha256(data)
        await self._write(self._key(run_id, sha), data)
        self._cache.put((run_id, sha), data)
        return sha

    async def get(self, run_id: str, sha256: str) -> bytes:
        cached = self._cache.get((run_id, sha256))
        if cached is not None:
            return cached
        self.reads += 1
        data = await self._read(self._key(run_id, sha256))
        if data is None:
            raise TranscriptMissing(run_id, sha256)
        if content_sha256(data) != sha256:
            raise TranscriptMissing(run_id, sha256, "is corrupt (its bytes do not match the name)")
        self._cache.put((run_id, sha256), data)
        return data

    async def delete_run(self, run_id: str) -> int:
        """Delete a run's whole transcript; returns how many blobs went."""
        self._cache.drop_run(run_id)
        return await self._delete_prefix(self._run_prefix(run_id))

    async def sweep(self, older_than_seconds: float, now: float | None = None) -> list[str]:
        """Delete the transcripts of runs whose newest write is older than this (runs that are
        over: a live run writes every turn, and no wait of a run lasts longer than 7 days)."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        deleted = []
        for run_key, newest in (await self._runs_last_modified()).items():
            if newest < cutoff:
                await self._delete_prefix(self._run_prefix_of_key(run_key))
                deleted.append(run_key)
        if deleted:
            log.info("transcripts swept", runs=len(deleted), older_than_days=round(older_than_seconds / 86400, 2))
        return deleted

    async def aclose(self) -> None:
        return None

    # ---- keys
    def _run_prefix(self, run_id: str) -> str:
        # Workflow ids may hold anything; quoted, a run is one path segment.
        return self._run_prefix_of_key(quote(run_id, safe=""))

    def _run_prefix_of_key(self, run_key: str) -> str:
        return f"runs/{run_key}/"

    def _key(self, run_id: str, sha: str) -> str:
        return self._run_prefix(run_id) + sha

    # ---- raw I/O (relative keys)
    async def _write(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def _read(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def _delete_prefix(self, prefix: str) -> int:
        raise NotImplementedError

    async def _runs_last_modified(self) -> dict[str, float]:
        """Run key (quoted id) -> the newest write's time (epoch seconds)."""
        raise NotImplementedError


class MemoryTranscriptStore(TranscriptStore):
    """In this process only (the in-process runner, unit tests)."""

    def __init__(self) -> None:
        super().__init__(cache_bytes=0)
        self._blobs: dict[str, tuple[bytes, float]] = {}

    async def _write(self, key: str, data: bytes) -> None:
        self._blobs[key] = (data, time.time())

    async def _read(self, key: str) -> bytes | None:
        found = self._blobs.get(key)
        return found[0] if found else None

    async def _delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self._blobs if k.startswith(prefix)]
        for key in keys:
            del self._blobs[key]
        return len(keys)

    async def _runs_last_modified(self) -> dict[str, float]:
        newest: dict[str, float] = {}
        for key, (_, written) in self._blobs.items():
            run = key.split("/")[1]
            newest[run] = max(newest.get(run, 0.0), written)
        return newest


class LocalTranscriptStore(TranscriptStore):
    """A directory: `<dir>/runs/<run>/<sha256>`. Writes go through a temporary file and a rename,
    so a reader never sees half a blob (another worker process may read it at once)."""

    def __init__(self, root: Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        super().__init__(cache_bytes)
        self.root = root

    async def _write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_sync, self.root / key, data)

    @staticmethod
    def _write_sync(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
        partial.write_bytes(data)
        os.replace(partial, path)

    async def _read(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread((self.root / key).read_bytes)
        except FileNotFoundError:
            return None

    async def _delete_prefix(self, prefix: str) -> int:
        folder = self.root / prefix
        if not folder.is_dir():
            return 0
        count = sum(1 for _ in folder.iterdir())
        await asyncio.to_thread(shutil.rmtree, folder, True)
        return count

    async def _runs_last_modified(self) -> dict[str, float]:
        return await asyncio.to_thread(self._runs_last_modified_sync)

    def _runs_last_modified_sync(self) -> dict[str, float]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return {}
        newest: dict[str, float] = {}
        for folder in runs.iterdir():
            times = [f.stat().st_mtime for f in folder.iterdir()] if folder.is_dir() else []
            newest[folder.name] = max(times, default=folder.stat().st_mtime)
        return newest


class S3TranscriptStore(TranscriptStore):
    """Any S3-compatible bucket, through aioboto3. The bucket must exist (kron never creates it).

    Retention on S3 can also be a lifecycle rule on `<prefix>/runs/` expiring objects after the
    retention period (see README); the sweep does the same from the worker.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "kron/transcripts",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        super().__init__(cache_bytes)
        import aioboto3  # only S3 deployments pay for the import

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        self._endpoint_url = endpoint_url
        self._client: Any = None
        self._client_cm: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        # One client per store (its connection pool), opened on first use in the running loop.
        async with self._lock:
            if self._client is None:
                self._client_cm = self._session.client("s3", endpoint_url=self._endpoint_url)
                self._client = await self._client_cm.__aenter__()
        return self._client

    async def aclose(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
            self._client = self._client_cm = None

    async def _write(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    async def _read(self, key: str) -> bytes | None:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except s3.exceptions.NoSuchKey:
            return None
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def _delete_prefix(self, prefix: str) -> int:
        s3 = await self._s3()
        count = 0
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:  # at most 1000 per page: the DeleteObjects limit
                await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                count += len(keys)
        return count

    async def _runs_last_modified(self) -> dict[str, float]:
        s3 = await self._s3()
        newest: dict[str, float] = {}
        runs_prefix = self.prefix + "runs/"
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=runs_prefix):
            for obj in page.get("Contents", []):
                run = obj["Key"][len(runs_prefix):].split("/", 1)[0]
                written = obj["LastModified"].timestamp()
                newest[run] = max(newest.get(run, 0.0), written)
        return newest


def open_store(settings: TranscriptSettings) -> TranscriptStore:
    if settings.store == "s3":
        assert settings.s3_bucket is not None  # the settings' validator
        return S3TranscriptStore(
            settings.s3_bucket,
            settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=(
                settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
            ),
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
            ),
            cache_bytes=settings.cache_bytes,
        )
    return LocalTranscriptStore(settings.local_dir(), cache_bytes=settings.cache_bytes)
