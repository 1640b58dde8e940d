from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from kron.gateway.settings import PLACEHOLDER_JWT_SECRET, GatewaySettings

REAL_SECRET = "a-real-secret-of-at-least-32-characters!"


def test_dev_mode_runs_with_the_placeholder_secret_and_no_composio() -> None:
    settings = GatewaySettings(dev_mode=True)
    assert settings.jwt_secret.get_secret_value() == PLACEHOLDER_JWT_SECRET
    assert settings.token_endpoint_active


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({}, "placeholder"),
        ({"jwt_secret": SecretStr("short")}, "at least 32"),
        ({"jwt_secret": SecretStr(REAL_SECRET)}, "COMPOSIO_API_KEY"),
    ],
)
def test_production_refuses_unsafe_configuration(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint) as raised:
        GatewaySettings.model_validate(overrides)
    assert REAL_SECRET not in str(raised.value)


def test_production_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRON_JWT_SECRET", REAL_SECRET)
    monkeypatch.setenv("COMPOSIO_API_KEY", "ck-from-env")
    monkeypatch.setenv("KRON_TASK_QUEUE", "queue-x")
    monkeypatch.setenv("KRON_PORT", "9999")
    settings = GatewaySettings()
    assert settings.task_queue == "queue-x" and settings.port == 9999
    assert settings.composio_api_key is not None
    assert settings.composio_api_key.get_secret_value() == "ck-from-env"
    assert not settings.token_endpoint_active  # off outside dev mode unless enabled
    assert "ck-from-env" not in repr(settings) and REAL_SECRET not in repr(settings)


def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # `COMPOSIO_API_KEY=` (a secret with an empty value) must not pass for a key: every preflight
    # would then fail at Composio instead of the gateway refusing to start.
    monkeypatch.setenv("KRON_JWT_SECRET", REAL_SECRET)
    monkeypatch.setenv("COMPOSIO_API_KEY", "")
    monkeypatch.setenv("KRON_PORT", "")
    with pytest.raises(ValidationError, match="COMPOSIO_API_KEY is not set"):
        GatewaySettings()
    monkeypatch.setenv("KRON_DEV_MODE", "true")
    settings = GatewaySettings()
    assert settings.composio_api_key is None and settings.port == GatewaySettings.model_fields["port"].default


def test_token_endpoint_can_be_enabled_explicitly() -> None:
    settings = GatewaySettings(
        jwt_secret=SecretStr(REAL_SECRET), composio_api_key=SecretStr("ck"), token_endpoint_enabled=True
    )
    assert settings.token_endpoint_active


def test_model_pattern_must_compile() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(dev_mode=True, allowed_model_pattern="claude-[")
    assert GatewaySettings(dev_mode=True).model_regex.fullmatch("claude-sonnet-4-5")


def test_demo_mode_needs_no_composio_key() -> None:
    settings = GatewaySettings(jwt_secret=SecretStr(REAL_SECRET), demo_mode=True)
    assert settings.composio_api_key is None and not settings.token_endpoint_active
