"""`kron login`: a token for the gateway from its OpenID provider, by the device authorization flow
(RFC 8628: the CLI shows a code, you confirm it in a browser anywhere), or a token you already have.

The provider's discovery document (`<issuer>/.well-known/openid-configuration`) names its
`device_authorization_endpoint`; a provider without one cannot sign in a CLI this way (pass
`--token`). The CLI is a public client: no secret. The token is cached per gateway like a dev token
(`kron.cli.config.TokenCache`); its user and expiry are read from its claims for display and for
knowing when it is stale (the gateway, not the CLI, verifies it).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from kron.cli.api import CliError
from kron.cli.config import CachedToken

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid"
# Used when a token's expiry cannot be read (an opaque token): re-login after this long.
UNKNOWN_EXPIRY_SECONDS = 3600


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_in: float


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, not verified (only to show who it is for and when it expires); {} if the
    token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def cached_token(access_token: str, *, expires_in: float | None = None, now: float | None = None) -> CachedToken:
    now = time.time() if now is None else now
    claims = unverified_claims(access_token)
    exp = claims.get("exp")
    if isinstance(exp, int | float):
        expires_at = float(exp)
    else:
        expires_at = now + (expires_in if expires_in else UNKNOWN_EXPIRY_SECONDS)
    subject = claims.get("sub")
    return CachedToken(access_token, subject if isinstance(subject, str) else "(unknown)", expires_at)


class DeviceLogin:
    """One sign-in at `issuer` as public client `client_id`, for the API `audience` (sent as the
    RFC 8707 `resource` and `audience` parameters: providers differ in which they read)."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        *,
        http: httpx.Client,
        audience: str | None = None,
        scope: str = DEFAULT_SCOPE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.audience = audience
        self.scope = scope
        self._http = http
        self._sleep = sleep
        self._clock = clock

    def _endpoints(self) -> tuple[str, str]:
        discovery = self._json("GET", f"{self.issuer}/.well-known/openid-configuration")
        device, token = discovery.get("device_authorization_endpoint"), discovery.get("token_endpoint")
        if not isinstance(device, str) or not isinstance(token, str):
            raise CliError("no_device_flow", f"{self.issuer} does not offer the device authorization flow: "
                                             "get a token another way and pass it with `kron login --token`")
        return device, token

    def start(self) -> tuple[DeviceAuthorization, str]:
        """Ask for a device code; returns it and the token endpoint to poll."""
        device_endpoint, token_endpoint = self._endpoints()
        form = {"client_id": self.client_id, "scope": self.scope}
        if self.audience:
            form |= {"resource": self.audience, "audience": self.audience}
        body = self._json("POST", device_endpoint, data=form)
        try:
            authorization = DeviceAuthorization(
                device_code=str(body["device_code"]),
                user_code=str(body["user_code"]),
                verification_uri=str(body.get("verification_uri") or body["verification_url"]),
                verification_uri_complete=body.get("verification_uri_complete"),
                interval=float(body.get("interval") or 5),
                expires_in=float(body.get("expires_in") or 600),
            )
        except (KeyError, TypeError, ValueError):
            raise CliError("bad_response", "the provider's device authorization answer lacks its codes") from None
        return authorization, token_endpoint

    def wait_for_token(self, authorization: DeviceAuthorization, token_endpoint: str) -> dict[str, Any]:
        """Poll the token endpoint until the user confirms (or refuses, or the code expires)."""
        interval = authorization.interval
        deadline = self._clock() + authorization.expires_in
        while self._clock() < deadline:
            self._sleep(interval)
            response = self._send("POST", token_endpoint, data={
                "grant_type": DEVICE_GRANT, "device_code": authorization.device_code, "client_id": self.client_id,
            })
            body = _json_or_empty(response)
            if response.status_code == 200 and isinstance(body.get("access_token"), str):
                return body
            error = body.get("error")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5  # RFC 8628 §3.5
                continue
            if error == "access_denied":
                raise CliError("login_denied", "the sign-in was refused in the browser")
            if error == "expired_token":
                break
            raise CliError(str(error or "login_failed"),
                           str(body.get("error_description") or f"the token endpoint answered {response.status_code}"))
        raise CliError("login_expired", "the code expired before it was confirmed: run `kron login` again")

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, url, **kwargs)
        body = _json_or_empty(response)
        if response.status_code != 200:
            raise CliError(str(body.get("error") or "provider_error"),
                           str(body.get("error_description") or f"{url} answered {response.status_code}"))
        return body

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise CliError("provider_unreachable", f"cannot reach {url}: {type(error).__name__}") from None


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
