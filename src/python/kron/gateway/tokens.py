"""Access tokens: HS256 JWTs with `sub` (the user id), `exp`, `iat`, `iss`, `aud`.

`verify_token` is the only place a token is checked (through `deps.CurrentUser`); replacing it with
OIDC/JWKS verification changes this module and nothing else.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

import jwt

from kron.gateway.settings import GatewaySettings

ALGORITHM = "HS256"
# User ids end up in Temporal visibility queries (quoted) and log lines: a conservative alphabet,
# no quotes, backslashes, spaces or control characters. Covers emails, UUIDs and `auth0|123` subs.
USER_ID_PATTERN = r"^[A-Za-z0-9._@|:+=-]{1,128}$"
_USER_ID = re.compile(USER_ID_PATTERN)
_MAX_TOKEN_CHARS = 4096
_REQUIRED_CLAIMS = ["sub", "exp", "iat", "iss", "aud"]


class InvalidToken(Exception):
    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


def is_valid_user_id(user_id: str) -> bool:
    return _USER_ID.fullmatch(user_id) is not None


def issue_token(user_id: str, settings: GatewaySettings, *, now: float | None = None) -> IssuedToken:
    issued_at = int(time.time() if now is None else now)
    claims = {
        "sub": user_id,
        "iat": issued_at,
        "exp": issued_at + settings.jwt_ttl_seconds,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)
    return IssuedToken(token, settings.jwt_ttl_seconds)


def verify_token(token: str, settings: GatewaySettings) -> str:
    """The verified user id (`sub`), or `InvalidToken`. Only HS256 is accepted (no `none`, and no
    algorithm confusion), with this gateway's issuer and audience, and every claim present."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken("invalid_token", "The bearer token is not valid")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token_expired", "The bearer token has expired") from None
    except jwt.InvalidTokenError:
        # One message for every other failure: which check failed is of no use to a client.
        raise InvalidToken("invalid_token", "The bearer token is not valid") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not is_valid_user_id(subject):
        raise InvalidToken("invalid_token", "The bearer token's subject is not a valid user id")
    return subject
