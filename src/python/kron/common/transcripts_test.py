from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kron.common.transcripts import (
    LocalTranscriptStore,
    MemoryTranscriptStore,
    S3TranscriptStore,
    TranscriptMissing,
    TranscriptSettings,
    TranscriptStore,
    content_sha256,
    open_store,
)
from kron_testing.s3_server import MotoS3


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with MotoS3() as server:
        yield server


@pytest.fixture(params=["memory", "local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TranscriptStore]:
    made: TranscriptStore
    if request.param == "memory":
        made = MemoryTranscriptStore()
    elif request.param == "local":
        made = LocalTranscriptStore(tmp_path / "transcripts", cache_bytes=0)
    else:
        s3: MotoS3 = request.getfixturevalue("moto_s3")
        made = S3TranscriptStore(
            s3.bucket, f"t-{time.monotonic_ns()}", endpoint_url=s3.endpoint_url, cache_bytes=0,
            **s3.credentials,
        )
    yield made
    await made.aclose()


async def test_content_is_named_by_its_sha256_and_read_back(store: TranscriptStore) -> None:
    sha = await store.put("run-1", b'"hello"')
    assert sha == content_sha256(b'"hello"')
    assert await store.get("run-1", sha) == b'"hello"'
    assert store.reads == 1  # no cache here: the backend was read


async def test_a_missing_blob_names_the_run_and_the_content(store: TranscriptStore) -> None:
    with pytest.raises(TranscriptMissing) as missing:
        await store.get("run-2", "ab" * 32)
    assert "run-2" in str(missing.value) and "ab" * 32 in str(missing.value)


async def test_runs_are_separate_and_deleted_whole(store: TranscriptStore) -> None:
    shas = [await store.put("run/a b", f"{i}".encode()) for i in range(3)]  # odd ids are quoted
    other = await store.put("run-other", b"x")
    assert await store.delete_run("run/a b") == 3
    for sha in shas:
        with pytest.raises(TranscriptMissing):
            await store.get("run/a b", sha)
    assert await store.get("run-other", other) == b"x"


async def test_the_sweep_deletes_runs_whose_newest_write_is_older_than_retention(
    store: TranscriptStore,
) -> None:
    old = await store.put("run-old", b"1")
    fresh = await store.put("run-fresh", b"2")
    deleted = await store.sweep(3600, now=time.time() + 7200)  # two hours on, retention one hour
    assert set(deleted) >= {"run-old", "run-fresh"}
    await store.put("run-new", b"3")
    assert "run-new" not in await store.sweep(3600)
    with pytest.raises(TranscriptMissing):
        await store.get("run-old", old)
    with pytest.raises(TranscriptMissing):
        await store.get("run-fresh", fresh)


async def test_local_sweep_keeps_a_run_with_one_recent_write(tmp_path: Path) -> None:
    store = LocalTranscriptStore(tmp_path)
    await store.put("run-long", b"early")
    await store.put("run-idle", b"early too")
    week_ago = time.time() - 7 * 86400
    for folder in (tmp_path / "runs").iterdir():
        for blob in folder.iterdir():
            os.utime(blob, (week_ago, week_ago))
    await store.put("run-long", b"today")
    assert await store.sweep(86400) == ["run-idle"]


async def test_corrupt_content_is_refused(tmp_path: Path) -> None:
    store = LocalTranscriptStore(tmp_path, cache_bytes=0)
    sha = await store.put("run", b"good")
    (tmp_path / "runs" / "run" / sha).write_bytes(b"evil")
    with pytest.raises(TranscriptMissing, match="corrupt"):
        await store.get("run", sha)


async def test_the_cache_serves_recent_content_and_is_bounded_by_bytes(tmp_path: Path) -> None:
    store = LocalTranscriptStore(tmp_path, cache_bytes=10)
    first = await store.put("run", b"123456")
    second = await store.put("run", b"abcdef")  # 12 bytes in all: the first is evicted
    assert await store.get("run", second) == b"abcdef" and store.reads == 0
    assert await store.get("run", first) == b"123456" and store.reads == 1


def test_settings_pick_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRON_TRANSCRIPT_DIR", str(tmp_path))
    local = open_store(TranscriptSettings())
    assert isinstance(local, LocalTranscriptStore) and local.root == tmp_path
    monkeypatch.delenv("KRON_TRANSCRIPT_DIR")
    monkeypatch.setenv("KRON_DATA_DIR", str(tmp_path / "data"))
    assert TranscriptSettings().local_dir() == tmp_path / "data" / "transcripts"
    monkeypatch.setenv("KRON_TRANSCRIPT_STORE", "s3")
    with pytest.raises(ValueError, match="KRON_TRANSCRIPT_S3_BUCKET"):
        TranscriptSettings()
    monkeypatch.setenv("KRON_TRANSCRIPT_S3_BUCKET", "b")
    assert isinstance(open_store(TranscriptSettings()), S3TranscriptStore)
