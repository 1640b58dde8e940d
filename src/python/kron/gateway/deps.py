"""Dependencies shared by the routers, as `Annotated` aliases.

Identity: `Caller` is who the bearer token says the caller is (user id and roles), checked here and
only here (the app's `tokens.TokenVerifier`: OIDC/JWKS or HS256 by the settings); `CurrentUser` is
its user id, for routes that act for the caller only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kron.common.agents import AgentStore
from kron.common.schedules import ScheduleStore
from kron.common.transcripts import TranscriptStore
from kron.gateway.errors import ApiError, unauthorized
from kron.gateway.runs import RunStore
from kron.gateway.settings import GatewaySettings
from kron.gateway.state import GatewayState
from kron.gateway.tokens import Identity, IdentityProviderUnavailable, InvalidToken

# Dependencies are `async def` although they do not await: FastAPI runs plain `def` dependencies in
# its thread pool, a thread hop per request for nothing.

# auto_error=False: a missing or non-Bearer Authorization header gets our JSON 401, not FastAPI's.
_bearer = HTTPBearer(auto_error=False, description="A kron access token (JWT).")


async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


State = Annotated[GatewayState, Depends(get_state)]


async def get_app_settings(state: State) -> GatewaySettings:
    # The app's own settings rather than `get_settings()`: tests run several apps in one process.
    return state.settings


Settings = Annotated[GatewaySettings, Depends(get_app_settings)]


def _not_connected() -> ApiError:
    return ApiError(503, "temporal_unavailable", "The task service is not connected yet", headers={"Retry-After": "2"})


async def get_run_store(state: State) -> RunStore:
    if state.runs is None:
        raise _not_connected()
    return state.runs


Runs = Annotated[RunStore, Depends(get_run_store)]


async def get_schedule_store(state: State) -> ScheduleStore:
    if state.schedules is None:
        raise _not_connected()
    return state.schedules


Schedules = Annotated[ScheduleStore, Depends(get_schedule_store)]


async def get_agent_store(state: State) -> AgentStore:
    if state.agents is None:
        raise _not_connected()
    return state.agents


Agents = Annotated[AgentStore, Depends(get_agent_store)]


async def get_transcript_store(state: State) -> TranscriptStore:
    return state.transcripts


Transcripts = Annotated[TranscriptStore, Depends(get_transcript_store)]


async def current_identity(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    state: State,
) -> Identity:
    if credentials is None:
        raise unauthorized("missing_token", "Send a bearer token: Authorization: Bearer <token>")
    try:
        return await state.verifier.verify(credentials.credentials)
    except InvalidToken as invalid:
        raise unauthorized(invalid.error, invalid.detail) from None
    except IdentityProviderUnavailable:
        raise ApiError(503, "identity_provider_unavailable",
                       "The identity provider cannot be reached to check this token; try again shortly",
                       headers={"Retry-After": "5"}) from None


Caller = Annotated[Identity, Depends(current_identity)]


async def current_user(caller: Caller) -> str:
    return caller.user_id


CurrentUser = Annotated[str, Depends(current_user)]


async def get_request_id(request: Request) -> str | None:
    request_id = getattr(request.state, "request_id", None)
    return request_id if isinstance(request_id, str) else None


RequestId = Annotated[str | None, Depends(get_request_id)]
