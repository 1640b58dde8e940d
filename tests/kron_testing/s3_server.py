"""An S3-compatible server for tests: moto's ThreadedMotoServer on 127.0.0.1, a free port.

    with MotoS3() as s3:
        store = S3TranscriptStore("kron-test", endpoint_url=s3.endpoint_url, **s3.credentials)

In memory: stopping it loses every bucket. Any access key is accepted.
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any, Self

import httpx
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoS3:
    def __init__(self, bucket: str = "kron-test-transcripts") -> None:
        self.bucket = bucket
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.credentials: dict[str, Any] = {
            "access_key_id": "testing", "secret_access_key": "testing", "region": REGION
        }
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def __enter__(self) -> Self:
        self._server.start()
        # moto does not check signatures: a plain PUT creates the bucket (kron never creates one).
        httpx.put(f"{self.endpoint_url}/{self.bucket}", trust_env=False).raise_for_status()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop()
