"""Listing cursors: Temporal's page token, signed and bound to (user, filter), so a client can hand
it back but not forge it or reuse it for another listing, and garbage never reaches Temporal (which
retries it)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"kron-gateway list cursor", hashlib.sha256).digest()

    def encode(self, page_token: bytes, scope: str) -> str:
        return f"{_b64(page_token)}.{_b64(self._sign(page_token, scope))}"

    def decode(self, cursor: str, scope: str) -> bytes | None:
        """The page token, or None when the cursor is not one this codec made for `scope`."""
        token_part, _, signature_part = cursor.partition(".")
        try:
            page_token = _unb64(token_part)
            signature = _unb64(signature_part)
        except (binascii.Error, ValueError):
            return None
        if not page_token or not hmac.compare_digest(signature, self._sign(page_token, scope)):
            return None
        return page_token

    def _sign(self, page_token: bytes, scope: str) -> bytes:
        return hmac.new(self._key, scope.encode() + b"\0" + page_token, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
