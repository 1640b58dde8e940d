from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kron.cli.api import SseEvent, default_user, parse_sse
from kron.cli.config import DEFAULT_GATEWAY_URL, STATE_FILE, CachedToken, TokenCache, gateway_url


def test_parse_sse_events_ids_comments_and_multiline_data() -> None:
    lines = ["retry: 2000", "", ": keepalive", "", "id: 3", "event: step", 'data: {"a":', "data: 1}", "",
             "event: end", "data: {}"]
    assert list(parse_sse(lines)) == [SseEvent("step", '{"a":\n1}', "3"), SseEvent("end", "{}", None)]


def test_default_user_is_a_valid_user_id() -> None:
    assert default_user({"KRON_USER": "bob@example.com"}) == "bob@example.com"
    user = default_user({})
    assert user and " " not in user


def test_gateway_url_flag_then_env_then_a_running_kron_up_then_the_default(tmp_path: Path) -> None:
    env = {"KRON_DATA_DIR": str(tmp_path)}
    assert gateway_url(None, env) == DEFAULT_GATEWAY_URL
    (tmp_path / STATE_FILE).write_text(json.dumps({"pid": os.getpid(), "gateway_url": "http://127.0.0.1:1234"}))
    assert gateway_url(None, env) == "http://127.0.0.1:1234"
    assert gateway_url(None, {**env, "KRON_GATEWAY_URL": "http://env:1/"}) == "http://env:1"
    assert gateway_url("http://flag:2", {**env, "KRON_GATEWAY_URL": "http://env:1"}) == "http://flag:2"
    (tmp_path / STATE_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "gateway_url": "http://stale:1"}))
    assert gateway_url(None, env) == DEFAULT_GATEWAY_URL  # its kron up is gone


def test_token_cache_skips_tokens_about_to_expire(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "sub" / "tokens.json")
    assert cache.get("http://a") is None
    cache.put("http://a", CachedToken("t", "u", time.time() + 30))
    token = cache.get("http://a")
    assert token is not None and not token.usable()
    cache.put("http://b", CachedToken("t2", "u", time.time() + 3600))
    fresh = cache.get("http://b")
    assert fresh is not None and fresh.access_token == "t2" and fresh.usable()
    cache.forget("http://a")
    assert cache.get("http://a") is None and cache.get("http://b") is not None
