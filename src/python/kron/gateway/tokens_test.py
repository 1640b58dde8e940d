from __future__ import annotations

import time

import jwt
import pytest
from pydantic import SecretStr

from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import InvalidToken, is_valid_user_id, issue_token, verify_token

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
