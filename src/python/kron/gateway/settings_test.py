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


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"oidc_issuer": "https://idp.example"}, "KRON_OIDC_AUDIENCE"),
        ({"oidc_issuer": "idp.example", "oidc_audience": "api"}, "http"),
        ({"oidc_issuer": "https://idp.example", "oidc_audience": "api", "oidc_algorithms": ["HS256"]}, "HS256"),
        ({"oidc_issuer": "https://idp.example", "oidc_audience": "api", "oidc_algorithms": ["none"]}, "none"),
        ({"oidc_issuer": "https://idp.example", "oidc_audience": "api", "token_endpoint_enabled": True}, "HS256"),
    ],
)
def test_oidc_settings_are_complete_and_asymmetric(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        GatewaySettings.model_validate({"dev_mode": True, **overrides})


def test_per_user_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRON_DEV_MODE", "true")
    monkeypatch.setenv("KRON_DISPATCH_BURST", "4")
    monkeypatch.setenv("KRON_USER_LIMITS", '{"roles": {"admin": {"dispatch_burst": 40}}, "users": {"bot": {"fairness_weight": 0.5}}}')
    settings = GatewaySettings()
    assert settings.limits_for("alice", frozenset({"user"})).dispatch_burst == 4
    assert settings.limits_for("ada", frozenset({"user", "admin"})).dispatch_burst == 40
    assert settings.limits_for("bot", frozenset({"user"})).fairness_weight == 0.5
    monkeypatch.setenv("KRON_USER_LIMITS", '{"users": {"bot": {"fairness": 2}}}')  # a typo is an error
    with pytest.raises(ValidationError):
        GatewaySettings()
    monkeypatch.delenv("KRON_USER_LIMITS")
    assert not GatewaySettings(dev_mode=True, oidc_issuer="https://idp", oidc_audience="a").token_endpoint_active
