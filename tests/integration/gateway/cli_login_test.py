"""`kron login` against a real OpenID provider (device authorization flow), then the gateway accepts
the token it cached."""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

from kron.cli.config import TokenCache
from kron.cli.main import run
from kron_testing.oidc_provider import CLI_CLIENT_ID, OidcProvider

from .conftest import GatewayFactory, bearer, oidc_gateway, unique_user


async def test_device_flow_sign_in_gives_a_token_the_gateway_accepts(
    make_gateway: GatewayFactory, provider: OidcProvider, tmp_path: Path
) -> None:
    gateway = await oidc_gateway(make_gateway, provider)
    user = unique_user("carol")
    environ = {"KRON_CONFIG_DIR": str(tmp_path / "config"), "KRON_GATEWAY_URL": "http://gateway"}
    err = io.StringIO()
    argv = ["login", "--issuer", provider.issuer, "--client-id", CLI_CLIENT_ID, "--audience", provider.audience,
            "--scope", "openid api"]
    signing_in = asyncio.create_task(asyncio.to_thread(run, argv, environ=environ, out=io.StringIO(), err=err))

    deadline = time.monotonic() + 30
    while not (shown := re.search(r"confirm the code (\S+)", err.getvalue())):
        assert not signing_in.done() and time.monotonic() < deadline, err.getvalue()
        await asyncio.sleep(0.05)
    assert provider.issuer in err.getvalue()  # where to confirm it
    await asyncio.to_thread(provider.approve_device, shown.group(1), user)  # the user, in a browser

    assert await asyncio.wait_for(signing_in, 60) == 0, err.getvalue()
    assert f"signed in as {user}" in err.getvalue()
    cached = TokenCache(tmp_path / "config" / "tokens.json").get("http://gateway")
    assert cached is not None and cached.user == user and cached.usable()
    response = await gateway.http.get("/tasks", headers=bearer(cached.access_token))
    assert response.status_code == 200, response.text


async def test_a_provider_without_the_device_flow_says_to_pass_a_token(tmp_path: Path) -> None:
    err = io.StringIO()
    # The gateway-less case: the issuer is something that is not a provider at all.
    code = await asyncio.to_thread(
        run, ["login", "--issuer", "http://127.0.0.1:9", "--client-id", "x"],
        environ={"KRON_CONFIG_DIR": str(tmp_path)}, out=io.StringIO(), err=err,
    )
    assert code == 1 and "provider_unreachable" in err.getvalue()
