"""Authentication: only a token this gateway signed, unexpired, for this issuer and audience, counts."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from kron.gateway.tokens import verify_token

from .conftest import JWT_SECRET, Gateway, GatewayFactory, unique_user


def _claims(gateway: Gateway, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        "iss": gateway.settings.jwt_issuer,
        "aud": gateway.settings.jwt_audience,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged(gateway: Gateway, attack: str) -> str:
    claims = _claims(gateway)
    if attack == "alg none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if attack == "expired":
        return jwt.encode(_claims(gateway, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), JWT_SECRET)
    if attack == "tampered":
        header, _, signature = jwt.encode(claims, JWT_SECRET).split(".")
        return f"{header}.{_b64({**claims, 'sub': 'admin'})}.{signature}"
    if attack == "wrong secret":
        return jwt.encode(claims, "some-other-secret-that-is-long-enough-0000")
    if attack == "wrong audience":
        return jwt.encode(_claims(gateway, aud="someone-else"), JWT_SECRET)
    if attack == "wrong issuer":
        return jwt.encode(_claims(gateway, iss="https://evil.example"), JWT_SECRET)
    if attack == "no expiry":
        return jwt.encode(_claims(gateway, exp=None), JWT_SECRET)
    if attack == "other HMAC algorithm":
        return jwt.encode(claims, JWT_SECRET, algorithm="HS512")
    if attack == "subject with a quote":
        return jwt.encode(_claims(gateway, sub="x' OR KronUserId != '"), JWT_SECRET)
    if attack == "garbage":
        return "not.a.jwt"
    raise AssertionError(attack)


ATTACKS = [
    "alg none", "expired", "tampered", "wrong secret", "wrong audience", "wrong issuer",
    "no expiry", "other HMAC algorithm", "subject with a quote", "garbage",
]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_tokens_are_401_json(gateway: Gateway, attack: str) -> None:
    token = _forged(gateway, attack)
    for method, path in [("GET", "/tasks"), ("POST", "/tasks/dispatch"), ("GET", "/tasks/run-x")]:
        response = await gateway.http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, json={"goal": "x"}
        )
        assert response.status_code == 401, (attack, path, response.text)
        body = response.json()
        assert body["error"] == ("token_expired" if attack == "expired" else "invalid_token")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert token not in response.text and JWT_SECRET not in response.text


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"],
    ids=["missing", "empty", "scheme only", "scheme and space", "basic", "other scheme"],
)
async def test_missing_or_non_bearer_credentials_are_401_json(gateway: Gateway, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await gateway.http.get("/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_token"


async def test_issued_tokens_carry_the_standard_claims(gateway: Gateway) -> None:
    user = unique_user()
    response = await gateway.http.post("/auth/token", json={"user_id": user})
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims["sub"] == user and claims["exp"] - claims["iat"] == 3600
    assert (claims["iss"], claims["aud"]) == ("kron-gateway", "kron-api")
    assert verify_token(body["access_token"], gateway.settings) == user
    bad = await gateway.http.post("/auth/token", json={"user_id": "quote'd"})
    assert bad.status_code == 422


async def test_token_endpoint_is_off_outside_dev_mode_unless_enabled(make_gateway: GatewayFactory) -> None:
    production = await make_gateway(token_endpoint_enabled=None)
    response = await production.http.post("/auth/token", json={"user_id": "someone"})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    dev = await make_gateway(token_endpoint_enabled=None, dev_mode=True)
    assert (await dev.http.post("/auth/token", json={"user_id": "someone"})).status_code == 200


async def test_tokens_and_secrets_stay_out_of_logs(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    user = unique_user()
    headers = await gateway.headers(user)
    token = headers["Authorization"].removeprefix("Bearer ")
    await gateway.http.get("/tasks", headers=headers)
    await gateway.http.get("/tasks", headers={"Authorization": "Bearer " + token[:-3] + "xyz"})
    await gateway.dispatch(user, toolkits=["github"])  # preflight against Composio, with its key
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "request" in logged  # the access log did write
    assert token not in logged and JWT_SECRET not in logged
    assert gateway.settings.composio_api_key is not None
    assert gateway.settings.composio_api_key.get_secret_value() not in logged
