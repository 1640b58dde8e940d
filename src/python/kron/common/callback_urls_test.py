from __future__ import annotations

import socket
from typing import Any

import pytest

from kron.common.callback_urls import CallbackRefused, checked_url, pinned_request, url_problem

REFUSED = [
    "http://127.0.0.1:8080/admin",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://localhost:7233/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://metadata.google.internal/",
    "http://printer.local/",
    # Other spellings of loopback and 0.0.0.0 that URL parsers and the resolver (inet_aton) accept.
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://\u24dbocalhost/",  # ⓛocalhost: IDNA maps it to localhost
    "http://%6c%6fcalhost/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_hosts_are_refused_unless_allowed(url: str) -> None:
    problem = url_problem(url, allow_private=False)
    assert problem is not None and "public hosts only" in problem
    assert url_problem(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url,problem",
    [
        ("ftp://example.com/x", "must be an http or https URL"),
        ("file:///etc/passwd", "must be an http or https URL"),
        ("http:///path", "has no host"),
        ("https://user:secret@example.com/hook", "must not carry credentials"),
        ("http://example.com:99999/", "is not a valid URL"),
    ],
)
def test_malformed_urls_are_refused_even_when_private_networks_are_allowed(url: str, problem: str) -> None:
    assert url_problem(url, allow_private=True) == problem


def test_the_checked_url_is_the_normalised_one() -> None:
    assert checked_url("http://0x5db8d822:8080/hook", allow_private=False) == "http://93.184.216.34:8080/hook"
    assert checked_url("https://Hooks.Example.COM/x?y=1", allow_private=False) == "https://hooks.example.com/x?y=1"
    assert checked_url("http://0x7f000001/", allow_private=True) == "http://127.0.0.1/"
    with pytest.raises(CallbackRefused, match="callback_url points at a loopback address"):
        checked_url("http://0x7f000001/", allow_private=False)
    # Numeric-looking hosts that are not an IPv4 address do not parse at all.
    for url in ("http://09/", "http://1.2.3.4.5/"):
        assert url_problem(url, allow_private=True) == "is not a valid URL"


def test_public_hosts_pass() -> None:
    for url in ("https://hooks.example.com/kron?x=1", "http://93.184.216.34:8080/", "https://[2606:4700::1111]/"):
        assert url_problem(url, allow_private=False) is None


def _resolving(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> None:
    """Name resolution from a table (the code under test asks the event loop, which asks socket)."""

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def test_a_name_is_resolved_checked_and_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving(monkeypatch, {"hooks.example.com": ["93.184.216.34"], "v6.example.com": ["2606:4700::1111"]})
    pinned = await pinned_request("http://hooks.example.com:8080/done?run=1", allow_private=False)
    assert pinned.url == "http://93.184.216.34:8080/done?run=1"
    assert pinned.headers == {"Host": "hooks.example.com:8080"} and pinned.extensions == {}
    tls = await pinned_request("https://v6.example.com/done", allow_private=False)
    assert tls.url == "https://[2606:4700::1111]/done"
    assert tls.headers == {"Host": "v6.example.com"} and tls.extensions == {"sni_hostname": "v6.example.com"}


async def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving(monkeypatch, {"rebind.example.com": ["93.184.216.34", "10.0.0.7"], "loop.example.com": ["::1"]})
    with pytest.raises(CallbackRefused, match="resolves to a private address"):
        await pinned_request("https://rebind.example.com/x", allow_private=False)
    with pytest.raises(CallbackRefused, match="resolves to a loopback address"):
        await pinned_request("http://loop.example.com/x", allow_private=False)
    with pytest.raises(CallbackRefused, match="does not resolve"):
        await pinned_request("http://nowhere.example.com/x", allow_private=False)
    with pytest.raises(CallbackRefused, match="callback_url points at a link-local address"):
        await pinned_request("http://169.254.169.254/", allow_private=False)


async def test_allowed_private_networks_send_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving(monkeypatch, {})  # no lookup at all
    pinned = await pinned_request("http://localhost:9000/hook", allow_private=True)
    assert (pinned.url, pinned.headers, pinned.extensions) == ("http://localhost:9000/hook", {}, {})
