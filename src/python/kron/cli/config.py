"""Where the CLI keeps things, and which gateway it talks to.

- Config (the token cache): `$KRON_CONFIG_DIR`, else `$XDG_CONFIG_HOME/kron`, else `~/.config/kron`.
- Data (`kron up`: the Temporal sqlite file, logs, `up.json`): `$KRON_DATA_DIR`, else
  `$XDG_DATA_HOME/kron`, else `~/.local/share/kron`.
- Gateway URL: `--gateway`, else `$KRON_GATEWAY_URL`, else the one a running `kron up` on the same
  data directory announced in `up.json`, else http://127.0.0.1:8080 (`kron up`'s default).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
STATE_FILE = "up.json"
TOKEN_FILE = "tokens.json"
# A cached token this close to expiry is not used (a long `run --wait` would outlive it).
TOKEN_MIN_REMAINING_SECONDS = 60


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("KRON_CONFIG_DIR"):
        return Path(environ["KRON_CONFIG_DIR"])
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(_home(environ), ".config")
    return Path(base) / "kron"


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("KRON_DATA_DIR"):
        return Path(environ["KRON_DATA_DIR"])
    base = environ.get("XDG_DATA_HOME") or os.path.join(_home(environ), ".local", "share")
    return Path(base) / "kron"


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_up_state(directory: Path) -> dict[str, Any] | None:
    """What a running `kron up` wrote about itself, or None (none running, or a stale file)."""
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return None
    return state


def gateway_url(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    url = explicit or environ.get("KRON_GATEWAY_URL")
    if not url:
        state = read_up_state(data_dir(environ))
        url = str(state["gateway_url"]) if state and state.get("gateway_url") else DEFAULT_GATEWAY_URL
    return url.rstrip("/")


def write_private_json(path: Path, data: Any) -> None:
    """Atomically, readable by the owner only (the token cache holds bearer tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    user: str
    expires_at: float

    def usable(self, now: float | None = None) -> bool:
        return self.expires_at - (time.time() if now is None else now) > TOKEN_MIN_REMAINING_SECONDS


class TokenCache:
    """Tokens per gateway URL in `<config dir>/tokens.json` (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, gateway: str) -> CachedToken | None:
        entry = self._load().get(gateway)
        if not isinstance(entry, dict):
            return None
        try:
            return CachedToken(str(entry["access_token"]), str(entry["user"]), float(entry["expires_at"]))
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, gateway: str, token: CachedToken) -> None:
        data = self._load()
        data[gateway] = {"access_token": token.access_token, "user": token.user, "expires_at": token.expires_at}
        write_private_json(self.path, data)

    def forget(self, gateway: str) -> None:
        data = self._load()
        if data.pop(gateway, None) is not None:
            write_private_json(self.path, data)
