"""Per-user limits in one shape: defaults, then overrides per role, then per user.

`KRON_USER_LIMITS` (JSON) overrides the defaults a deployment sets with the plain settings:

    {"roles": {"admin": {"dispatch_rate_per_second": 20, "dispatch_burst": 100}},
     "users": {"batch-bot": {"fairness_weight": 0.25}, "alice": {"max_streams": 20}}}

A user's limits: the defaults, then each of their roles' overrides in `ROLE_PRECEDENCE` order
(later wins), then their own. An override names only what it changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

# The roles kron knows (gateway.tokens maps a token's role claim onto them).
ROLE_USER = "user"
ROLE_ADMIN = "admin"
# Later roles win: an admin who is also a user gets the admin's overrides.
ROLE_PRECEDENCE = (ROLE_USER, ROLE_ADMIN)


class LimitOverride(BaseModel):
    """What one role or user changes; unset fields keep the value from before."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Dispatches: a token bucket of `dispatch_burst`, refilled at this rate (per gateway replica).
    dispatch_rate_per_second: float | None = Field(default=None, gt=0)
    dispatch_burst: int | None = Field(default=None, ge=1)
    # Open `GET /tasks/{id}/events` streams at once (per gateway replica).
    max_streams: int | None = Field(default=None, ge=1)
    # Share of the task queue when several users have a backlog (Temporal task-queue fairness):
    # a user of weight 2 is dispatched twice as often as one of weight 1.
    fairness_weight: float | None = Field(default=None, gt=0, le=1000)


class UserLimits(BaseModel):
    """The limits that apply to one user."""

    model_config = ConfigDict(frozen=True)

    dispatch_rate_per_second: float = Field(gt=0)
    dispatch_burst: int = Field(ge=1)
    max_streams: int = Field(ge=1)
    fairness_weight: float = Field(gt=0, le=1000)


class LimitOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: dict[str, LimitOverride] = Field(default_factory=dict)
    users: dict[str, LimitOverride] = Field(default_factory=dict)

    def resolve(self, defaults: UserLimits, user_id: str, roles: Iterable[str]) -> UserLimits:
        held = set(roles)
        layers = [self.roles[role] for role in ROLE_PRECEDENCE if role in held and role in self.roles]
        if user_id in self.users:
            layers.append(self.users[user_id])
        if not layers:
            return defaults
        values = defaults.model_dump()
        for layer in layers:
            values.update(layer.model_dump(exclude_none=True))
        return UserLimits(**values)
