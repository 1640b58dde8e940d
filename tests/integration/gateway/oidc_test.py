"""Identity from a real OpenID provider (npm oidc-provider on loopback): discovery, JWKS, what is
accepted and refused, key rotation and provider outages without a gateway restart, and roles.

Tokens come from the provider itself (CIBA for users, client credentials for services); the
refusals that a provider would never issue (wrong audience, expired, `none`, HS256 keyed with the
public key, an unpublished key) are signed here with the provider's own private keys, so only the
claim under test is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from kron_testing import fake_anthropic as replies
from kron_testing.oidc_provider import OidcProvider, ec_key, ed_key, private_jwk, rsa_key

from ..conftest import Stack
from .conftest import Gateway, GatewayFactory, bearer, oidc_gateway, unique_user


def _claims(provider: OidcProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "mallory", "iat": now, "exp": now + 600, "iss": provider.issuer, "aud": provider.audience}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: dict[str, Any], claims: dict[str, Any], alg: str | None = None) -> str:
    signing = jwt.PyJWK(private_jwk(key)).key
    return jwt.encode(claims, signing, algorithm=alg or key["alg"], headers={"kid": key["kid"]})


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _status(gateway: Gateway, token: str) -> tuple[int, dict[str, Any]]:
    response = await gateway.http.get("/tasks", headers=bearer(token))
    return response.status_code, response.json()


async def test_a_provider_token_is_accepted_after_discovery_and_one_jwks_fetch(
    make_gateway: GatewayFactory, provider: OidcProvider
) -> None:
    gateway = await oidc_gateway(make_gateway, provider)
    user = unique_user("alice")
    token = await asyncio.to_thread(provider.user_token, user)
    assert jwt.get_unverified_header(token)["kid"] == "key-1"
    for _ in range(3):
        status, body = await _status(gateway, token)
        assert status == 200, body
    service = await asyncio.to_thread(provider.service_token)  # sub = the client id
    assert (await _status(gateway, service))[0] == 200
    assert gateway.app.state.gateway.verifier.jwks.fetches == 1  # cached after the first
    # HS256 tokens (the dev stand-in) are refused once OIDC is on, and so is the stand-in.
    assert (await gateway.http.post("/auth/token", json={"user_id": user})).status_code == 404


@pytest.mark.parametrize("make_key", [ec_key, ed_key], ids=["ES256", "EdDSA"])
async def test_elliptic_curve_keys(make_gateway: GatewayFactory, tmp_path: Path, make_key: Any) -> None:
    # The first key signs access tokens; an RSA key too, for ID tokens (RS256 is OIDC's default).
    with OidcProvider(tmp_path / "oidc", keys=[make_key("ec-1"), rsa_key("rsa-1")]) as provider:
        gateway = await oidc_gateway(make_gateway, provider)
        token = await asyncio.to_thread(provider.user_token, unique_user())
        assert jwt.get_unverified_header(token)["alg"] == provider.keys[0]["alg"]
        status, body = await _status(gateway, token)
        assert status == 200, body


def _refused(provider: OidcProvider, attack: str) -> str:
    key = provider.keys[0]
    if attack == "wrong audience":
        return _sign(key, _claims(provider, aud="https://someone-else.test/api"))
    if attack == "wrong issuer":
        return _sign(key, _claims(provider, iss="https://evil.example"))
    if attack == "expired":
        return _sign(key, _claims(provider, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
    if attack == "not yet valid":
        return _sign(key, _claims(provider, nbf=int(time.time()) + 3600))
    if attack == "unknown kid":
        return _sign(rsa_key("never-published"), _claims(provider))
    if attack == "known kid, other key":
        return _sign({**rsa_key("x"), "kid": key["kid"]}, _claims(provider))
    if attack == "HS256 keyed with the public key":
        header = {"alg": "HS256", "typ": "JWT", "kid": key["kid"]}
        signing_input = f"{_b64(header)}.{_b64(_claims(provider))}"
        signature = hmac.new(key["_public_pem"].encode(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    if attack == "alg none":
        return f"{_b64({'alg': 'none', 'kid': key['kid']})}.{_b64(_claims(provider))}."
    if attack == "no kid":
        return jwt.encode(_claims(provider), jwt.PyJWK(private_jwk(key)).key, algorithm="RS256")
    if attack == "no subject":
        return _sign(key, _claims(provider, sub=None))
    raise AssertionError(attack)


@pytest.mark.parametrize("attack", [
    "wrong audience", "wrong issuer", "expired", "not yet valid", "unknown kid", "known kid, other key",
    "HS256 keyed with the public key", "alg none", "no kid", "no subject",
])
async def test_refused_tokens_are_401_json(make_gateway: GatewayFactory, provider: OidcProvider, attack: str) -> None:
    gateway = await oidc_gateway(make_gateway, provider)
    good = await asyncio.to_thread(provider.user_token, unique_user())
    assert (await _status(gateway, good))[0] == 200  # the keys are loaded: only the attack differs
    status, body = await _status(gateway, _refused(provider, attack))
    assert status == 401, (attack, body)
    assert body["error"] == ("token_expired" if attack == "expired" else "invalid_token")
    assert set(body) == {"error", "detail"}


async def test_the_gateway_audience_must_match_the_providers(
    make_gateway: GatewayFactory, provider: OidcProvider
) -> None:
    gateway = await oidc_gateway(make_gateway, provider, oidc_audience="https://other-api.test")
    status, body = await _status(gateway, await asyncio.to_thread(provider.user_token, unique_user()))
    assert status == 401 and body["error"] == "invalid_token"


async def test_key_rotation_without_a_gateway_restart(make_gateway: GatewayFactory, provider: OidcProvider) -> None:
    gateway = await oidc_gateway(make_gateway, provider)
    old_token = await asyncio.to_thread(provider.user_token, unique_user())
    assert (await _status(gateway, old_token))[0] == 200
    first, second = provider.keys[0], rsa_key("key-2")
    await asyncio.to_thread(provider.restart, [second, first])  # key-2 signs, key-1 still published
    new_token = await asyncio.to_thread(provider.user_token, unique_user())
    assert jwt.get_unverified_header(new_token)["kid"] == "key-2"
    assert (await _status(gateway, new_token))[0] == 200  # an unknown kid refetched the JWKS
    assert (await _status(gateway, old_token))[0] == 200
    assert gateway.app.state.gateway.verifier.jwks.fetches == 2
    # key-1 retired: once the cache is refreshed, its tokens stop working.
    await asyncio.to_thread(provider.restart, [second])
    gateway.app.state.gateway.verifier.jwks._fetched_at = -1e9  # the cache's max age has passed
    status, body = await _status(gateway, old_token)
    assert status == 401 and body["error"] == "invalid_token"
    assert (await _status(gateway, new_token))[0] == 200


async def test_cached_keys_keep_working_while_the_provider_is_down(
    make_gateway: GatewayFactory, provider: OidcProvider
) -> None:
    gateway = await oidc_gateway(make_gateway, provider, oidc_http_timeout_seconds=2)
    token = await asyncio.to_thread(provider.user_token, unique_user())
    assert (await _status(gateway, token))[0] == 200
    await asyncio.to_thread(provider.stop)
    gateway.app.state.gateway.verifier.jwks._fetched_at = -1e9  # even past the cache's max age
    assert (await _status(gateway, token))[0] == 200
    # A key the gateway has never seen cannot be checked: 503, not 401 (nor 500).
    unknown = _sign(rsa_key("rotated-while-down"), _claims(provider))
    response = await gateway.http.get("/tasks", headers=bearer(unknown))
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "identity_provider_unavailable",
        "detail": "The identity provider cannot be reached to check this token; try again shortly",
    }
    assert response.headers["retry-after"]
    # Back up: the same kind of token is a plain 401 again (the key really is unknown).
    await asyncio.to_thread(provider.start)
    response = await gateway.http.get("/tasks", headers=bearer(unknown))
    assert response.status_code == 401


async def test_unknown_key_ids_refetch_at_most_once_per_interval(
    make_gateway: GatewayFactory, provider: OidcProvider
) -> None:
    gateway = await oidc_gateway(make_gateway, provider, oidc_jwks_refetch_seconds=60)
    assert (await _status(gateway, await asyncio.to_thread(provider.user_token, unique_user())))[0] == 200
    for i in range(5):
        assert (await _status(gateway, _sign(rsa_key(f"made-up-{i}"), _claims(provider))))[0] == 401
    assert gateway.app.state.gateway.verifier.jwks.fetches == 1


# --- roles


async def test_an_admin_reads_and_cancels_another_users_run_and_a_user_cannot(
    make_gateway: GatewayFactory, provider: OidcProvider, running_stack: Stack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = await oidc_gateway(make_gateway, provider)
    running_stack.llm.responder = lambda body, i: replies.delay(60, replies.text("too late"))
    alice, bob = unique_user("alice"), unique_user("bob")
    alice_token, bob_token, admin_token = await asyncio.gather(*(
        asyncio.to_thread(provider.user_token, account) for account in (alice, bob, "root-admin")
    ))
    assert "admin" in jwt.decode(admin_token, options={"verify_signature": False})["roles"]
    dispatched = await gateway.http.post("/tasks/dispatch", json={"goal": "wait"}, headers=bearer(alice_token))
    assert dispatched.status_code == 202, dispatched.text
    task_id = dispatched.json()["task_id"]

    for token, expected in [(bob_token, 404), (admin_token, 200), (alice_token, 200)]:
        response = await gateway.http.get(f"/tasks/{task_id}", headers=bearer(token))
        assert response.status_code == expected, response.text
    assert (await gateway.http.delete(f"/tasks/{task_id}", headers=bearer(bob_token))).status_code == 404
    # An admin's own listing is theirs: reading a run by id is the admin path, not listing.
    assert (await gateway.http.get("/tasks", headers=bearer(admin_token))).json()["tasks"] == []

    cancelled = await gateway.http.delete(f"/tasks/{task_id}", headers=bearer(admin_token))
    assert cancelled.status_code == 202, cancelled.text
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "admin action" in logged and "root-admin" in logged and alice in logged and "cancel" in logged


async def test_an_admin_reads_another_users_usage_and_a_user_cannot(
    make_gateway: GatewayFactory, provider: OidcProvider
) -> None:
    gateway = await oidc_gateway(make_gateway, provider)
    alice = unique_user("alice")
    bob_token, admin_token = await asyncio.gather(
        asyncio.to_thread(provider.user_token, unique_user("bob")),
        asyncio.to_thread(provider.user_token, "root-admin"),
    )
    refused = await gateway.http.get("/usage", params={"user": alice}, headers=bearer(bob_token))
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    allowed = await gateway.http.get("/usage", params={"user": alice}, headers=bearer(admin_token))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["total_usd"] == 0
