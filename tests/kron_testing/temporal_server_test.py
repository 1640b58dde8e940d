"""The tests' Temporal dev server starts again when Temporal lost a port while starting, and says
what went wrong (the error line, not only a Go stack trace) when it failed for another reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from kron_testing.temporal_server import TemporalDevServer, port_losing_temporal


def test_a_server_that_lost_a_port_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRON_TEMPORAL_BIN", str(port_losing_temporal(tmp_path, starts_lost=2)))
    with TemporalDevServer() as server:
        assert server.process is not None and server.process.poll() is None
    assert (tmp_path / "start-dev-count").read_text().strip() == "3"


def test_it_gives_up_after_three_starts_and_shows_the_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRON_TEMPORAL_BIN", str(port_losing_temporal(tmp_path, starts_lost=5)))
    server = TemporalDevServer()
    try:
        with pytest.raises(RuntimeError, match=r"(?s)exited with code 2 while starting:\n.*address already in use"):
            server.start()
    finally:
        server.cleanup()
    assert (tmp_path / "start-dev-count").read_text().strip() == "3"


def test_other_failures_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "temporal"
    broken.write_text(f"#!/bin/sh\necho started >> '{tmp_path / 'starts'}'\n"
                      "echo 'Error: sqlite: unable to open database file'\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("KRON_TEMPORAL_BIN", str(broken))
    server = TemporalDevServer()
    try:
        with pytest.raises(RuntimeError, match="exited with code 1 while starting:\nError: sqlite: unable to open"):
            server.start()
    finally:
        server.cleanup()
    assert (tmp_path / "starts").read_text().splitlines() == ["started"]
