"""Gateway settings from the environment: `KRON_*`, and Composio's key under the SDK's own names.

Outside dev mode the gateway refuses to start with the placeholder JWT secret (or a short one) and
without a Composio key (it could not check toolkit connections before starting runs).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kron.common.user_limits import LimitOverrides, UserLimits
from kron.contracts.names import AGENT_TASK_QUEUE

# Signature algorithms an OIDC provider's tokens may use: asymmetric only (no HS*, no `none`).
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")

# Only good for a laptop: anyone who reads this file can mint tokens with it.
PLACEHOLDER_JWT_SECRET = "kron-dev-placeholder-jwt-secret-never-use-in-production"
MIN_JWT_SECRET_CHARS = 32


class GatewaySettings(BaseSettings):
    # An empty variable is an unset one: `COMPOSIO_API_KEY=` is no key.
    model_config = SettingsConfigDict(env_prefix="KRON_", extra="ignore", env_ignore_empty=True, populate_by_name=True)

    # Dev mode: the placeholder JWT secret, /auth/token and running without Composio are allowed.
    dev_mode: bool = False
    # Offline demo (`kron up` without keys): the preflight knows only the local `demo` toolkit
    # (kron.agent_core.demo), like a worker with KRON_DEMO_MODE=true. No Composio key needed.
    demo_mode: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: pick a free port (printed when ready)
    log_level: str = "INFO"

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = AGENT_TASK_QUEUE
    # Start-up waits this long for Temporal, then serves anyway (not ready) while it keeps trying.
    temporal_startup_wait_seconds: float = Field(default=3.0, ge=0, le=60)
    temporal_rpc_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Queries need a worker to answer; past this a task shows what Temporal alone knows about it.
    query_timeout_seconds: float = Field(default=3.0, gt=0, le=60)

    jwt_secret: SecretStr = SecretStr(PLACEHOLDER_JWT_SECRET)
    jwt_issuer: str = "kron-gateway"
    jwt_audience: str = "kron-api"
    jwt_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    jwt_leeway_seconds: int = Field(default=5, ge=0, le=300)
    # Identity from an OpenID provider (kron.gateway.tokens.OidcVerifier): set the issuer and every
    # token must be signed by a key in its JWKS (discovery → jwks_uri) with an asymmetric algorithm,
    # for this audience; HS256 tokens are then refused. Unset: HS256 tokens signed with jwt_secret.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None  # required with oidc_issuer (the API's identifier at the provider)
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    # A token signed by a key id not in the cached JWKS refetches it, at most this often.
    oidc_jwks_refetch_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Cached keys are refreshed when older than this (kept if the provider cannot be reached).
    oidc_jwks_max_age_seconds: float = Field(default=600.0, gt=0, le=86400)
    oidc_http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Which claim names the user, and which holds roles (a list or a space-separated string; a
    # dotted path reaches into objects, e.g. Keycloak's `realm_access.roles`). Both token kinds.
    user_id_claim: str = Field(default="sub", min_length=1, max_length=128)
    roles_claim: str = Field(default="roles", min_length=1, max_length=128)
    # The role value (in roles_claim) that makes a caller a kron admin; no role claim: a user.
    admin_role_value: str = Field(default="admin", min_length=1, max_length=128)
    # POST /auth/token is a stand-in for a real identity provider: on in dev mode, off otherwise
    # unless this says so.
    token_endpoint_enabled: bool | None = None

    # What a dispatch may ask for.
    allowed_model_pattern: str = r"claude-[a-z0-9.-]+"
    model_max_length: int = Field(default=64, ge=1, le=256)
    max_iterations_limit: int = Field(default=100, ge=1, le=1000)
    max_token_budget: int = Field(default=5_000_000, ge=1)
    max_goal_chars: int = Field(default=32_000, ge=1, le=32_000)  # the contract's own bound
    max_toolkits: int = Field(default=16, ge=0, le=32)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)

    # Connections (kron.gateway.server): headers must be in this long after a connection opens (or
    # after the previous response), a body this long after its request started; past
    # `max_connections` open connections new ones get a 503. An ingress in front should time out
    # no later (deploy/k8s/README.md).
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_connections: int = Field(default=1000, ge=1)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)

    # Per-user limits (kron.common.user_limits): these defaults, overridden per role and per user
    # by user_limits (KRON_USER_LIMITS, JSON). Dispatches: a token bucket of `dispatch_burst`,
    # refilled at this rate; event streams open at once; share of the task queue under a backlog.
    dispatch_rate_per_second: float = Field(default=1.0, gt=0)
    dispatch_burst: int = Field(default=10, ge=1)
    max_streams: int = Field(default=10, ge=1)
    fairness_weight: float = Field(default=1.0, gt=0, le=1000)
    user_limits: LimitOverrides = Field(default_factory=LimitOverrides)

    # DELETE /tasks/{id}: a graceful `cancel` signal, then a hard cancel after this long.
    cancel_grace_seconds: float = Field(default=30.0, ge=0, le=3600)

    # GET /tasks/{id}/events
    sse_poll_seconds: float = Field(default=0.3, ge=0.05, le=5)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    sse_max_seconds: float = Field(default=3600.0, gt=0)  # then the client reconnects

    list_default_page_size: int = Field(default=20, ge=1, le=100)

    # Toolkit preflight (Composio). Without a key (dev mode only) dispatches skip the check.
    composio_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KRON_COMPOSIO_API_KEY", "COMPOSIO_API_KEY")
    )
    composio_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("KRON_COMPOSIO_BASE_URL", "COMPOSIO_BASE_URL")
    )
    preflight_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # MCP servers (kron.common.mcp_connect): URL prefixes a dispatch may name (JSON list; empty: none),
    # where Secrets for header values are mounted, and how long each server has to answer the preflight.
    mcp_url_allowlist: list[str] = Field(default_factory=list)
    mcp_secrets_dir: Path | None = None
    mcp_preflight_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Where Composio sends the user back after connecting a toolkit.
    connect_callback_url: str | None = None
    # callback_urls on loopback/private/link-local hosts (kron.common.callback_urls); the worker's
    # setting of the same name decides at send time. Off in production.
    webhook_allow_private_networks: bool = False

    @field_validator("allowed_model_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        refused = [a for a in algorithms if a not in OIDC_ALGORITHMS]
        if refused or not algorithms:
            raise ValueError(f"OIDC algorithms must be some of {', '.join(OIDC_ALGORITHMS)} (not {refused})")
        return algorithms

    @model_validator(mode="after")
    def _oidc_complete(self) -> GatewaySettings:
        if self.oidc_issuer is None:
            return self
        if not self.oidc_issuer.startswith(("https://", "http://")):
            raise ValueError("KRON_OIDC_ISSUER must be the provider's http(s) URL")
        if not self.oidc_audience:
            raise ValueError("KRON_OIDC_AUDIENCE is required with KRON_OIDC_ISSUER (the API's identifier)")
        if self.token_endpoint_enabled:
            raise ValueError("KRON_TOKEN_ENDPOINT_ENABLED issues HS256 tokens, which an OIDC gateway refuses")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> GatewaySettings:
        if self.dev_mode:
            return self
        secret = self.jwt_secret.get_secret_value()
        if secret == PLACEHOLDER_JWT_SECRET:
            raise ValueError(
                "KRON_JWT_SECRET is the development placeholder: set a real secret "
                "(or KRON_DEV_MODE=true on a laptop)"
            )
        if len(secret) < MIN_JWT_SECRET_CHARS:
            raise ValueError(f"KRON_JWT_SECRET must be at least {MIN_JWT_SECRET_CHARS} characters")
        if self.composio_api_key is None and not self.demo_mode:
            raise ValueError(
                "COMPOSIO_API_KEY is not set: the gateway checks toolkit connections before it "
                "starts a run (KRON_DEV_MODE=true skips the check)"
            )
        return self

    @property
    def token_endpoint_active(self) -> bool:
        if self.oidc_issuer is not None:
            return False  # it would issue HS256 tokens
        return self.dev_mode if self.token_endpoint_enabled is None else self.token_endpoint_enabled

    @property
    def default_limits(self) -> UserLimits:
        return UserLimits(
            dispatch_rate_per_second=self.dispatch_rate_per_second,
            dispatch_burst=self.dispatch_burst,
            max_streams=self.max_streams,
            fairness_weight=self.fairness_weight,
        )

    def limits_for(self, user_id: str, roles: frozenset[str]) -> UserLimits:
        return self.user_limits.resolve(self.default_limits, user_id, roles)

    @property
    def model_regex(self) -> re.Pattern[str]:
        return _compiled(self.allowed_model_pattern)


@lru_cache(maxsize=16)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
