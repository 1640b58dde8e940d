"""`POST /auth/token`: a development stand-in for a real identity provider.

It hands a token to anyone who names a user id, so it is off outside dev mode unless
`KRON_TOKEN_ENDPOINT_ENABLED=true` says otherwise (then put it behind something that authenticates).
"""

from __future__ import annotations

from fastapi import APIRouter

from kron.common.logging import get_logger
from kron.gateway.deps import Settings
from kron.gateway.errors import error_responses, not_found
from kron.gateway.schemas import TokenRequest, TokenResponse
from kron.gateway.tokens import issue_token

log = get_logger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    operation_id="issue_token",
    response_model=TokenResponse,
    responses=error_responses(400, 404, 413, 422),
    summary="Issue an access token (development identity stand-in)",
)
async def issue(body: TokenRequest, settings: Settings) -> TokenResponse:
    if not settings.token_endpoint_active:
        raise not_found("route")
    token = issue_token(body.user_id, settings)
    log.info("token issued", user_id=body.user_id, expires_in=token.expires_in)
    return TokenResponse(access_token=token.access_token, expires_in=token.expires_in)
