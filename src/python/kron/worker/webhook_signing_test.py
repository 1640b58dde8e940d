"""The signing code against the Standard Webhooks reference library (a receiver's verifier this
project did not write)."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from kron.worker.webhook_signing import BadWebhookSecret, WebhookSigner

SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()
BODY = b'{"type":"run.completed","timestamp":"2026-01-01T00:00:00Z","data":{"task_id":"run-1"}}'


def _headers(secrets: str, timestamp: int | None = None) -> dict[str, str]:
    return WebhookSigner.from_secrets(secrets).headers("msg_1", timestamp or int(time.time()), BODY)


def test_the_reference_library_verifies_a_delivery() -> None:
    assert Webhook(SECRET_A).verify(BODY, _headers(SECRET_A))["data"]["task_id"] == "run-1"


def test_a_tampered_body_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(BODY.replace(b"run-1", b"run-2"), _headers(SECRET_A))


def test_a_stale_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(BODY, _headers(SECRET_A, int(time.time()) - 6 * 60))


def test_a_wrong_secret_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_B).verify(BODY, _headers(SECRET_A))


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    headers = _headers(f"{SECRET_A} {SECRET_B}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    for secret in (SECRET_A, SECRET_B):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"c" * 32).decode()).verify(BODY, headers)


def test_commas_separate_secrets_too() -> None:
    assert len(WebhookSigner.from_secrets(f"{SECRET_A},{SECRET_B}").keys) == 2


def test_no_secret_sends_no_signature() -> None:
    headers = WebhookSigner.from_secrets("").headers("msg_1", 1, BODY)
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": "1"}


@pytest.mark.parametrize("secret", ["sha256-old-style-secret", "whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_bad_secret_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(BadWebhookSecret) as refused:
        WebhookSigner.from_secrets(f"{SECRET_A} {secret}")
    assert "#2" in str(refused.value) and secret not in str(refused.value)
