from __future__ import annotations

import json

import pytest
import structlog

from kron.common.logging import configure_logging, get_logger


def test_json_lines_carry_bound_context_and_redact_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    log = get_logger("test")
    with structlog.contextvars.bound_contextvars(workflow_id="run-123", request_id="req-9"):
        log.info("hello", api_key="sk-ant-secret", authorization="Bearer xyz", turns=3,
                 access_token="eyJ.secret", input_tokens=120)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "hello" and line["turns"] == 3
    assert line["workflow_id"] == "run-123" and line["request_id"] == "req-9"
    assert line["api_key"] == "[redacted]" and line["authorization"] == "[redacted]"
    assert line["access_token"] == "[redacted]" and line["input_tokens"] == 120
    assert "sk-ant-secret" not in json.dumps(line)
