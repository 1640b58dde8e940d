"""A real OpenID provider on loopback for identity tests: npm `oidc-provider` (panva's certified
library) run by node from `oidc_provider_node/` (provider.mjs, package.json, package-lock.json).

Its node modules are installed with `npm ci` from the committed lockfile into a cache directory
keyed by the lockfile's digest (once per machine; a file lock keeps parallel test processes from
installing twice). Without `node`/`npm` the tests that use it skip, or fail under
KRON_REQUIRE_TOOLS=1 (CI), like the other external tools (kron_testing.tools).

Keys are private JWKs made by node (`rsa_key`, `ec_key`, `ed_key`); the provider signs with the
first and publishes all. `restart(keys)` rotates them on the same port (the issuer URL stays valid).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from kron_testing.temporal_server import free_port
from kron_testing.tools import require_tool

SOURCES = Path(__file__).parent / "oidc_provider_node"
CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
CLI_CLIENT_ID = "kron-cli"  # a public client allowed the device flow
_SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


# --- keys (made by node's crypto: the test venv has no direct cryptography requirement)

_KEYGEN = """
const { generateKeyPairSync } = require('node:crypto');
const [type, options] = JSON.parse(process.argv[1]);
const { privateKey, publicKey } = generateKeyPairSync(type, options);
console.log(JSON.stringify({ jwk: privateKey.export({ format: 'jwk' }),
  pem: publicKey.export({ format: 'pem', type: 'spki' }) }));
"""
_KEY_TYPES = {
    "RS256": ["rsa", {"modulusLength": 2048}],
    "ES256": ["ec", {"namedCurve": "P-256"}],
    "EdDSA": ["ed25519", {}],
}


def new_key(kid: str, alg: str = "RS256") -> dict[str, Any]:
    """A private JWK (with kid, alg, use) for the provider to sign with; its public key's PEM is
    kept under `_public_pem` (not a JWK member: the provider is given the key without it)."""
    node, _ = node_binaries()
    made = subprocess.run([node, "-e", _KEYGEN, json.dumps(_KEY_TYPES[alg])], capture_output=True, text=True,
                          check=True, timeout=30, stdin=subprocess.DEVNULL)
    key = json.loads(made.stdout)
    return {**key["jwk"], "kid": kid, "alg": alg, "use": "sig", "_public_pem": key["pem"]}


def rsa_key(kid: str) -> dict[str, Any]:
    return new_key(kid, "RS256")


def ec_key(kid: str) -> dict[str, Any]:
    return new_key(kid, "ES256")


def ed_key(kid: str) -> dict[str, Any]:
    return new_key(kid, "EdDSA")


def private_jwk(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if not k.startswith("_")}


def public_jwk(key: dict[str, Any]) -> dict[str, Any]:
    """What the provider publishes of a private JWK."""
    private_members = {"d", "p", "q", "dp", "dq", "qi"}
    return {k: v for k, v in private_jwk(key).items() if k not in private_members}


# --- node and its modules


def node_binaries() -> tuple[str, str]:
    node = require_tool("node", "KRON_NODE", "install Node.js (Debian: nodejs npm)")
    npm = require_tool("npm", "KRON_NPM", "install npm (Debian: npm)")
    return node, npm


def install_dir(npm: str) -> Path:
    """A directory with provider.mjs and its node_modules, installed by `npm ci` if needed."""
    lock = (SOURCES / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (SOURCES / "package.json").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("KRON_TEST_CACHE_DIR") or Path(tempfile.gettempdir()) / "kron-test-cache")
    target = cache / f"oidc-provider-{digest}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"oidc-provider-{digest}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (target / "node_modules" / "oidc-provider" / "package.json").exists():
            _npm_ci(npm, target)
        # The script can change without the lockfile changing: refreshed every time (cheap), beside
        # node_modules so that node resolves `import 'oidc-provider'` from there.
        script = SOURCES / "provider.mjs"
        if not (target / script.name).exists() or (target / script.name).read_bytes() != script.read_bytes():
            shutil.copyfile(script, target / f".{script.name}.new")
            os.replace(target / f".{script.name}.new", target / script.name)
    return target


def _npm_ci(npm: str, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(SOURCES / name, staging / name)
    env = dict(os.environ)
    env.setdefault("HOME", str(staging))  # the Pants sandbox has none; npm wants one
    env["npm_config_cache"] = str(target.parent / "npm-cache")
    if "NODE_EXTRA_CA_CERTS" not in env and os.path.exists(_SYSTEM_CA_BUNDLE):
        env["NODE_EXTRA_CA_CERTS"] = _SYSTEM_CA_BUNDLE  # proxies that re-sign TLS use the system store
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"npm ci failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


# --- the provider


class OidcProvider:
    """One provider process on 127.0.0.1; only the process it started is ever signalled."""

    def __init__(
        self,
        workdir: Path,
        *,
        audience: str = "https://kron.test/api",
        keys: list[dict[str, Any]] | None = None,
        roles: dict[str, list[str]] | None = None,
        roles_claim: str = "roles",
    ) -> None:
        self.node, npm = node_binaries()
        self.directory = install_dir(npm)
        self.workdir = workdir
        self.audience = audience
        self.keys = keys or [rsa_key("key-1")]
        self.roles = roles or {}
        self.roles_claim = roles_claim
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.issuer, timeout=10.0, trust_env=False)

    def start(self, timeout: float = 30.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "oidc-provider.json"
        config.write_text(json.dumps({
            "port": self.port, "audience": self.audience, "keys": [private_jwk(k) for k in self.keys],
            "roles": self.roles, "roles_claim": self.roles_claim,
        }))
        self._process = subprocess.Popen(
            [self.node, str(self.directory / "provider.mjs"), str(config)],
            cwd=self.directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self._process, ready), daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("oidc-provider did not start:\n" + "\n".join(self.output[-30:]))
        return self

    def _pump(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if line.startswith("READY "):
                ready.set()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._wait_port_free()

    def _wait_port_free(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._http.get("/jwks", timeout=0.2)
            except httpx.HTTPError:
                return
            time.sleep(0.05)

    def restart(self, keys: list[dict[str, Any]] | None = None) -> None:
        """Stop, then start on the same port (and issuer) with `keys` (the first signs)."""
        self.stop()
        if keys is not None:
            self.keys = keys
        self.start()

    # --- tokens, without a browser

    def service_token(self) -> str:
        """client_credentials: `sub` is the client id."""
        response = self._http.post(
            "/token", auth=(CLIENT_ID, CLIENT_SECRET),
            data={"grant_type": "client_credentials", "resource": self.audience, "scope": "api"},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def user_token(self, account: str) -> str:
        """An access token for `account` (CIBA poll mode, approved at once by the provider)."""
        started = self._http.post(
            "/backchannel", auth=(CLIENT_ID, CLIENT_SECRET),
            data={"login_hint": account, "scope": "openid api", "resource": self.audience},
        )
        assert started.status_code == 200, started.text
        response = self._http.post(
            "/token", auth=(CLIENT_ID, CLIENT_SECRET),
            data={"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": started.json()["auth_req_id"]},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def approve_device(self, user_code: str, account: str) -> None:
        """What `account` does on the verification page: confirm the code the CLI shows."""
        response = self._http.post("/test/approve-device", json={"user_code": user_code, "account": account})
        assert response.status_code == 204, response.status_code

    def cleanup(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
