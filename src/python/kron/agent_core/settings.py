"""Settings for talking to Anthropic and Composio, read from the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "claude-sonnet-5"


class AgentSettings(BaseSettings):
    """`ANTHROPIC_*` / `COMPOSIO_*` as the SDKs name them, `KRON_*` for kron's own knobs."""

    # An empty variable is an unset one: `ANTHROPIC_API_KEY=` is no key (kron up reads it so too).
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", env_ignore_empty=True)

    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    composio_api_key: SecretStr | None = None
    composio_base_url: str | None = None
    kron_model: str = DEFAULT_MODEL
    kron_max_tokens: int = Field(default=4096, ge=1, le=64_000)
    kron_model_timeout_seconds: float = Field(default=600.0, gt=0)

