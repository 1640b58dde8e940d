from __future__ import annotations

import base64
import time

import httpx
import jwt
import pytest
from pydantic import SecretStr

from kron.common.user_limits import ROLE_USER
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import (
    Hs256Verifier,
    IdentityProviderUnavailable,
    InvalidToken,
    JwksCache,
    OidcVerifier,
    is_valid_user_id,
    issue_token,
    make_verifier,
    verify_hs256,
    verify_token,
)

SETTINGS = GatewaySettings(dev_mode=True, jwt_secret=SecretStr("unit-test-secret-0123456789abcdefghij"))


def test_issued_token_verifies_to_its_user() -> None:
    token = issue_token("alice@example.com", SETTINGS)
    assert verify_token(token.access_token, SETTINGS) == "alice@example.com"
    assert token.expires_in == SETTINGS.jwt_ttl_seconds


def test_expired_token_is_reported_as_expired() -> None:
    old = issue_token("alice", SETTINGS, now=time.time() - 2 * SETTINGS.jwt_ttl_seconds)
    with pytest.raises(InvalidToken) as raised:
        verify_token(old.access_token, SETTINGS)
    assert raised.value.error == "token_expired"


def test_other_deployments_tokens_are_invalid() -> None:
    other = SETTINGS.model_copy(update={"jwt_audience": "another-api"})
    with pytest.raises(InvalidToken) as raised:
        verify_token(issue_token("alice", other).access_token, SETTINGS)
    assert raised.value.error == "invalid_token"


def test_oversized_tokens_are_rejected_before_decoding() -> None:
    with pytest.raises(InvalidToken):
        verify_token("a" * 5000, SETTINGS)


def test_subject_must_be_a_valid_user_id() -> None:
    now = int(time.time())
    claims = {"sub": "a b", "iat": now, "exp": now + 60, "iss": SETTINGS.jwt_issuer, "aud": SETTINGS.jwt_audience}
    token = jwt.encode(claims, SETTINGS.jwt_secret.get_secret_value(), algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify_token(token, SETTINGS)


@pytest.mark.parametrize("user_id", ["bob", "bob-x", "auth0|123", "a.b+c@d.io", "x=y:z_1"])
def test_valid_user_ids(user_id: str) -> None:
    assert is_valid_user_id(user_id)


@pytest.mark.parametrize("user_id", ["", "o'brien", 'q"x', "back\\slash", "sp ace", "x" * 129, "tab\t", "ünï"])
def test_invalid_user_ids(user_id: str) -> None:
    assert not is_valid_user_id(user_id)


# --- roles


def _hs256(settings: GatewaySettings, **claims: object) -> str:
    now = int(time.time())
    base = {"sub": "alice", "iat": now, "exp": now + 60, "iss": settings.jwt_issuer, "aud": settings.jwt_audience}
    return jwt.encode({**base, **claims}, settings.jwt_secret.get_secret_value(), algorithm="HS256")


@pytest.mark.parametrize(
    ("claims", "admin"),
    [
        ({}, False),
        ({"roles": ["admin"]}, True),
        ({"roles": "viewer admin"}, True),
        ({"roles": ["viewer"]}, False),
        ({"roles": "administrator"}, False),
        ({"roles": [{"name": "admin"}]}, False),
        ({"roles": 7}, False),
    ],
)
def test_roles_from_the_roles_claim(claims: dict[str, object], admin: bool) -> None:
    identity = verify_hs256(_hs256(SETTINGS, **claims), SETTINGS)
    assert identity.user_id == "alice" and identity.is_admin is admin
    assert ROLE_USER in identity.roles  # no role claim: a user


def test_the_user_and_roles_claims_are_configurable() -> None:
    settings = SETTINGS.model_copy(update={
        "user_id_claim": "email", "roles_claim": "realm_access.roles", "admin_role_value": "kron-admin",
    })
    token = _hs256(settings, email="bob@example.com", realm_access={"roles": ["kron-admin"]})
    identity = verify_hs256(token, settings)
    assert identity.user_id == "bob@example.com" and identity.is_admin
    with pytest.raises(InvalidToken):
        verify_hs256(_hs256(settings), settings)  # no email claim


# --- the JWKS cache (HTTP through httpx.MockTransport; the real provider: tests/integration/gateway)

ISSUER = "https://idp.test"


class FakeIdp:
    def __init__(self) -> None:
        self.jwks: dict[str, object] = {"keys": [{"kty": "oct", "kid": "ignored", "k": "c2VjcmV0"}]}
        self.up = True
        self.jwks_requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("down")
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"})
        self.jwks_requests += 1
        return httpx.Response(200, json=self.jwks)


def _cache(idp: FakeIdp, clock: list[float]) -> JwksCache:
    http = httpx.AsyncClient(transport=httpx.MockTransport(idp))
    return JwksCache(ISSUER, http, refetch_seconds=30, max_age_seconds=600, clock=lambda: clock[0])


def _rsa_jwk(kid: str) -> dict[str, object]:
    # RFC 7517 appendix A.1's public RSA key: only parsing and lookup are under test here.
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
         "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZ"
         "Hzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kE"
         "gU8awapJzKnqDKgw")
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}


async def test_an_unknown_key_id_refetches_at_most_once_per_interval() -> None:
    idp, clock = FakeIdp(), [1000.0]
    idp.jwks = {"keys": [_rsa_jwk("k1")]}
    cache = _cache(idp, clock)
    assert (await cache.key("k1")).declared_alg == "RS256"
    for kid in ("k2", "k3", "k4"):
        with pytest.raises(InvalidToken):
            await cache.key(kid)
    assert idp.jwks_requests == 1  # within 30 s of the first fetch: no refetch
    idp.jwks = {"keys": [_rsa_jwk("k2"), _rsa_jwk("k1")]}
    clock[0] += 30
    await cache.key("k2")  # rotated in: found by one refetch
    assert idp.jwks_requests == 2


async def test_cached_keys_outlive_an_outage_and_unknown_ones_are_unavailable() -> None:
    idp, clock = FakeIdp(), [1000.0]
    idp.jwks = {"keys": [_rsa_jwk("k1")]}
    cache = _cache(idp, clock)
    await cache.key("k1")
    idp.up = False
    clock[0] += 3600  # stale, and may refetch: the refetch fails, the cached key still serves
    await cache.key("k1")
    with pytest.raises(IdentityProviderUnavailable):
        await cache.key("k9")
    clock[0] += 1  # within the refetch interval after a failure: still unavailable, no new attempt
    with pytest.raises(IdentityProviderUnavailable):
        await cache.key("k9")


async def test_a_discovery_document_for_another_issuer_is_refused() -> None:
    def idp(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://evil.test", "jwks_uri": "https://evil.test/keys"})

    cache = JwksCache(ISSUER, httpx.AsyncClient(transport=httpx.MockTransport(idp)), refetch_seconds=0,
                      max_age_seconds=600)
    with pytest.raises(IdentityProviderUnavailable):
        await cache.key("k1")


async def test_oidc_refuses_symmetric_and_none_algorithms_before_any_fetch() -> None:
    settings = SETTINGS.model_copy(update={"oidc_issuer": ISSUER, "oidc_audience": "api"})
    idp = FakeIdp()
    verifier = OidcVerifier(settings, http=httpx.AsyncClient(transport=httpx.MockTransport(idp)))
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=").decode() + ".e30."
    for token in (_hs256(SETTINGS), unsigned):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
    assert idp.jwks_requests == 0
    await verifier.aclose()


def test_oidc_without_cryptography_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SETTINGS.model_copy(update={"oidc_issuer": ISSUER, "oidc_audience": "api"})
    assert isinstance(make_verifier(SETTINGS), Hs256Verifier)
    monkeypatch.setattr(jwt.algorithms, "has_crypto", False)
    with pytest.raises(RuntimeError, match="cryptography"):
        make_verifier(settings)
