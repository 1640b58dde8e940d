"""Standard Webhooks signing (standardwebhooks.com), the sender's half: a few lines of HMAC.

A secret is `whsec_<base64 key>`. Several may be active at once (rotation): a delivery carries one
`v1,<signature>` per secret, space-separated, and a receiver accepts it if any one verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # the spec: between 24 and 64 bytes of key


class BadWebhookSecret(ValueError):
    """A configured secret is not `whsec_<base64 key>`; the message never contains the secret."""


@dataclass(frozen=True)
class WebhookSigner:
    keys: tuple[bytes, ...]

    @classmethod
    def from_secrets(cls, secrets: str) -> WebhookSigner:
        """Secrets separated by spaces or commas (KRON_WEBHOOK_SECRET), each `whsec_<base64>`."""
        keys: list[bytes] = []
        for position, secret in enumerate(secrets.replace(",", " ").split(), start=1):
            if not secret.startswith(SECRET_PREFIX):
                raise BadWebhookSecret(f"webhook secret #{position} does not start with {SECRET_PREFIX}")
            try:
                key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
            except (binascii.Error, ValueError):
                raise BadWebhookSecret(f"webhook secret #{position} is not base64 after {SECRET_PREFIX}") from None
            if len(key) < MIN_KEY_BYTES:
                raise BadWebhookSecret(f"webhook secret #{position} is shorter than {MIN_KEY_BYTES} bytes")
            keys.append(key)
        return cls(tuple(keys))

    def headers(self, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt (no `webhook-signature` without secrets)."""
        headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
        if self.keys:
            signed = f"{webhook_id}.{timestamp}.".encode() + body
            headers["webhook-signature"] = " ".join(
                "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
                for key in self.keys
            )
        return headers
