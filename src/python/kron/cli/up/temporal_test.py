from __future__ import annotations

from pathlib import Path

import pytest

from kron.cli.api import CliError
from kron.cli.up.temporal import find_temporal_binary, lost_port_race


def test_a_lost_port_is_told_apart_from_other_start_failures() -> None:
    assert lost_port_race('level=ERROR msg="Failed to start gRPC listener" error="listen tcp 127.0.0.1:40'
                          '001: bind: address already in use" service=frontend\npanic: runtime error')
    assert not lost_port_race("Error: sqlite: unable to open database file")


def test_temporal_binary_explicit_or_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "temporal"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert find_temporal_binary(str(binary), {}) == str(binary)
    assert find_temporal_binary(None, {"KRON_TEMPORAL_BIN": str(binary)}) == str(binary)
    with pytest.raises(CliError, match="--temporal-bin .*nope: not an executable file"):
        find_temporal_binary(str(tmp_path / "nope"), {})
    with pytest.raises(CliError, match="KRON_TEMPORAL_BIN=.*nope: not an executable file"):
        find_temporal_binary(None, {"KRON_TEMPORAL_BIN": str(tmp_path / "nope")})
