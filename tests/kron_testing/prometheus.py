"""A real Prometheus server (Debian's `prometheus`) on a free loopback port, scraping what a test
names, with kron's rule files loaded. Started and stopped (by PID) by the test that uses it."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml

from kron_testing.temporal_server import free_port


class PrometheusServer:
    """`targets` maps a job name to `host:port` (path /metrics)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Mapping[str, str],
        rule_files: Sequence[Path] = (),
        interval_seconds: float = 1.0,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.targets = dict(targets)
        self.rule_files = list(rule_files)
        self.interval = f"{interval_seconds:g}s"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    def start(self, timeout: float = 60.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval,
                       "scrape_timeout": self.interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in self.targets.items()
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited {self._process.returncode}:\n{self.log()}")
            try:
                if self._http.get("/-/ready").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready in {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._http.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def _get(self, path: str, **params: Any) -> Any:
        response = self._http.get(path, params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {response.status_code}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query (`/api/v1/query`): the vector's samples (a scalar as one sample)."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(expr)]

    def value(self, expr: str) -> float:
        """The single finite value of `expr`, or NaN when it returns nothing."""
        found = [v for v in self.values(expr) if math.isfinite(v)]
        assert len(found) <= 1, f"{expr}: more than one value: {found}"
        return found[0] if found else math.nan

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets", state="active")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def wait_for(self, expr: str, predicate: Any = lambda v: v > 0, timeout: float = 60.0) -> float:
        """Poll until `expr`'s single value satisfies `predicate`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(expr)
            if not math.isnan(value) and predicate(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} is {value} after {timeout} s")
            time.sleep(0.5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
