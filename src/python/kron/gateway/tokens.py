"""Access tokens: who a bearer token says the caller is (`Identity`), checked here and only here.

Two kinds, chosen by the settings (`make_verifier`):
- OIDC (`KRON_OIDC_ISSUER` set): tokens from an OpenID provider, signed with its asymmetric keys.
  The issuer's discovery document names its JWKS; keys are cached, a key id not in the cache
  refetches the JWKS (at most once per `oidc_jwks_refetch_seconds`: rotation needs no restart, a
  flood of made-up key ids costs one fetch), and cached keys keep working while the provider is
  unreachable. A token whose key cannot be known because the provider is down is a 503
  `identity_provider_unavailable`, not a 401: the token may well be good.
- HS256 (otherwise; dev mode and deployments that choose it): tokens signed with `jwt_secret`
  (`issue_token`: the /auth/token stand-in).

Either way: `iss`, `aud`, `exp` (and `nbf` if present) with `jwt_leeway_seconds` of leeway; the
user id from `user_id_claim` (default `sub`), roles from `roles_claim`. A token without roles is a
user's; `admin_role_value` among them makes an admin.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt

from kron.common.logging import get_logger
from kron.common.user_limits import ROLE_ADMIN, ROLE_USER
from kron.gateway.settings import GatewaySettings

log = get_logger(__name__)

ALGORITHM = "HS256"
# User ids end up in Temporal visibility queries (quoted) and log lines: a conservative alphabet,
# no quotes, backslashes, spaces or control characters. Covers emails, UUIDs and `auth0|123` subs.
USER_ID_PATTERN = r"^[A-Za-z0-9._@|:+=-]{1,128}$"
_USER_ID = re.compile(USER_ID_PATTERN)
_MAX_TOKEN_CHARS = 4096
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud"]
_OIDC_REQUIRED_CLAIMS = ["exp", "iss", "aud"]  # iat is optional in RFC 9068 practice
_MAX_JWKS_BYTES = 512 * 1024


class InvalidToken(Exception):
    """A 401: the token is not one this gateway accepts."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


class IdentityProviderUnavailable(Exception):
    """A 503: the token's signing key is not cached and the provider cannot be asked for it."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    roles: frozenset[str]  # kron's roles (ROLE_USER, ROLE_ADMIN), never empty

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity: ...

    async def aclose(self) -> None: ...


def is_valid_user_id(user_id: str) -> bool:
    return _USER_ID.fullmatch(user_id) is not None


def make_verifier(settings: GatewaySettings) -> TokenVerifier:
    if not settings.oidc_issuer:
        return Hs256Verifier(settings)
    # Without it PyJWT knows no asymmetric algorithm and every token would be refused: refuse to
    # start instead, saying why.
    if not jwt.algorithms.has_crypto:
        raise RuntimeError("KRON_OIDC_ISSUER needs the `cryptography` package (pyjwt[crypto]) for RS256/ES256/EdDSA")
    return OidcVerifier(settings)


# --- claims → identity (both kinds)


def identity_from_claims(claims: dict[str, Any], settings: GatewaySettings) -> Identity:
    user_id = claims.get(settings.user_id_claim)
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise InvalidToken("invalid_token", "The bearer token's subject is not a valid user id")
    roles = {ROLE_USER}
    if settings.admin_role_value in _claimed_roles(claims, settings.roles_claim):
        roles.add(ROLE_ADMIN)
    return Identity(user_id, frozenset(roles))


def _claimed_roles(claims: dict[str, Any], path: str) -> set[str]:
    """The roles claim as a set of strings: a list, or a space-separated string (like `scope`); a
    dotted path reaches into nested objects. Anything else counts as no roles."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {role for role in value if isinstance(role, str)}
    return set()


# --- HS256


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


def verify_hs256(token: str, settings: GatewaySettings) -> Identity:
    """Only HS256 is accepted (no `none`, and no algorithm confusion), with this gateway's issuer and
    audience, and every claim present."""
    _check_size(token)
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": [*_REQUIRED_CLAIMS, settings.user_id_claim]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token_expired", "The bearer token has expired") from None
    except jwt.InvalidTokenError:
        # One message for every other failure: which check failed is of no use to a client.
        raise InvalidToken("invalid_token", "The bearer token is not valid") from None
    return identity_from_claims(claims, settings)


def verify_token(token: str, settings: GatewaySettings) -> str:
    """The verified user id of an HS256 token, or `InvalidToken`."""
    return verify_hs256(token, settings).user_id


class Hs256Verifier:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings

    async def verify(self, token: str) -> Identity:
        return verify_hs256(token, self._settings)

    async def aclose(self) -> None:
        return None


def _check_size(token: str) -> None:
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken("invalid_token", "The bearer token is not valid")


# --- OIDC


class _FetchFailed(Exception):
    pass


@dataclass(frozen=True)
class _Key:
    jwk: jwt.PyJWK
    declared_alg: str | None  # the JWK's own `alg`, if it names one


class JwksCache:
    """The issuer's signing keys by key id, fetched over HTTP without blocking the event loop.

    One fetch at a time (concurrent misses wait for it). An unknown key id refetches only if the last
    attempt is `refetch_seconds` old; keys older than `max_age_seconds` are refreshed when used, and
    kept if that fails. `fetches` counts JWKS requests (tests and logs read it).
    """

    def __init__(
        self,
        issuer: str,
        http: httpx.AsyncClient,
        *,
        refetch_seconds: float,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer.rstrip("/")
        self._http = http
        self._refetch_seconds = refetch_seconds
        self._max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, _Key] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._last_failed = False
        self.fetches = 0

    async def key(self, kid: str) -> _Key:
        cached = self._keys.get(kid)
        if cached is not None and not self._stale():
            return cached
        if not self._may_fetch():
            return self._cached_or_refuse(kid)
        async with self._lock:
            # Another request may have fetched while this one waited.
            if self._may_fetch() and (kid not in self._keys or self._stale()):
                try:
                    await self._fetch()
                except _FetchFailed as failed:
                    log.warning("identity provider unreachable", issuer=self._issuer, reason=str(failed),
                                cached_keys=len(self._keys))
        return self._cached_or_refuse(kid)

    def _cached_or_refuse(self, kid: str) -> _Key:
        cached = self._keys.get(kid)
        if cached is not None:
            return cached
        if self._last_failed:
            raise IdentityProviderUnavailable()
        raise InvalidToken("invalid_token", "The bearer token is not valid")

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age_seconds

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= self._refetch_seconds

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self._last_failed = True
        if self._jwks_uri is None:
            discovery = await self._get_json(f"{self._issuer}/.well-known/openid-configuration")
            if discovery.get("issuer") != self._issuer and discovery.get("issuer") != self._issuer + "/":
                raise _FetchFailed("the discovery document names another issuer")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise _FetchFailed("the discovery document has no jwks_uri")
            self._jwks_uri = jwks_uri
        self.fetches += 1
        document = await self._get_json(self._jwks_uri)
        keys: dict[str, _Key] = {}
        for data in document.get("keys") or []:
            if not isinstance(data, dict) or data.get("use", "sig") != "sig" or not isinstance(data.get("kid"), str):
                continue
            try:
                jwk = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key type this gateway cannot use; the others still count
            alg = data.get("alg")
            keys[data["kid"]] = _Key(jwk, alg if isinstance(alg, str) else None)
        previous = set(self._keys)
        self._keys = keys
        self._fetched_at = self._clock()
        self._last_failed = False
        if set(keys) != previous:
            log.info("identity provider keys loaded", issuer=self._issuer, key_ids=sorted(keys))

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise _FetchFailed(type(error).__name__) from None
        if response.status_code != 200:
            raise _FetchFailed(f"HTTP {response.status_code}")
        if len(response.content) > _MAX_JWKS_BYTES:
            raise _FetchFailed("response too large")
        try:
            document = response.json()
        except ValueError:
            raise _FetchFailed("not JSON") from None
        if not isinstance(document, dict):
            raise _FetchFailed("not a JSON object")
        return document


class OidcVerifier:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.oidc_issuer is not None and settings.oidc_audience is not None
        self._settings = settings
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._algorithms = frozenset(settings.oidc_algorithms)
        self._http = http or httpx.AsyncClient(timeout=settings.oidc_http_timeout_seconds, follow_redirects=False)
        self.jwks = JwksCache(
            settings.oidc_issuer,
            self._http,
            refetch_seconds=settings.oidc_jwks_refetch_seconds,
            max_age_seconds=settings.oidc_jwks_max_age_seconds,
            clock=clock,
        )

    async def verify(self, token: str) -> Identity:
        _check_size(token)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("invalid_token", "The bearer token is not valid") from None
        alg, kid = header.get("alg"), header.get("kid")
        # Checked before any key is looked up: `none`, HS* (a public key used as an HMAC secret)
        # and anything not configured never reach a verifier.
        if alg not in self._algorithms or not isinstance(kid, str) or not kid:
            raise InvalidToken("invalid_token", "The bearer token is not valid")
        key = await self.jwks.key(kid)
        if key.declared_alg is not None and key.declared_alg != alg:
            raise InvalidToken("invalid_token", "The bearer token is not valid")
        try:
            claims = jwt.decode(
                token,
                key.jwk.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={"require": [*_OIDC_REQUIRED_CLAIMS, self._settings.user_id_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token_expired", "The bearer token has expired") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # A key of another type than the algorithm needs raises outside InvalidTokenError.
            raise InvalidToken("invalid_token", "The bearer token is not valid") from None
        return identity_from_claims(claims, self._settings)

    async def aclose(self) -> None:
        await self._http.aclose()
