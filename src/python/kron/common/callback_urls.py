"""Where a run's (or a schedule's) webhooks may go: every event type, checked at every attempt.

Whoever dispatches a run chooses its `callback_url`, and the worker POSTs to it from inside the
cluster. Unchecked, any user could make kron call what only the cluster reaches: cloud metadata
(169.254.169.254), admin APIs on private addresses, the pod's own loopback. So unless
`KRON_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true` (local stacks, tests, single-tenant installs that post to
internal receivers on purpose):

- the gateway refuses (422) a URL whose host is an IP address outside the public internet or a name
  reserved for local use (`localhost`, `*.localhost`, `*.local`, `*.internal`), judging the host
  the way URL parsers and the resolver read it (WHATWG: `0x7f000001`, `2130706433`, `0177.0.0.1`,
  `127.1` and `0` are IPv4 addresses, `ⓛocalhost` is `localhost`), and stores the normalised URL;
- the worker resolves the host when it sends, refuses if any address is not public (a public-looking
  name can point anywhere), and connects to the address it checked, not to a second lookup's (no DNS
  rebinding in between; TLS still verifies the name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pydantic import AnyUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


class CallbackRefused(Exception):
    """The URL may not receive webhooks; the message says why (no secrets, no path or query)."""


class CallbackUnresolved(CallbackRefused):
    """The host does not resolve now: refused for this attempt, a later one may succeed."""


@dataclass(frozen=True)
class PinnedRequest:
    """Send to `url` (the checked address in place of the name) with these headers and httpx
    request extensions (`sni_hostname`, so TLS verifies the original name)."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def _non_public(address: IPAddress) -> str | None:
    if address.is_global and not address.is_multicast:
        return None
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    return "a non-public address"


def normalized_url(url: str) -> str:
    """`url` as a WHATWG URL parser (browsers, pydantic's `HttpUrl`) reads it: the host lowercased
    and IDNA-mapped, IPv4 in any notation the resolver accepts written as a dotted quad. Raises
    ValueError when it does not parse."""
    return str(AnyUrl(url))


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why `url` cannot receive webhooks, judged without DNS; None when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if port == 0:
        return "has no valid port"
    try:
        # The host as it will be reached: `http://0x7f000001/` is loopback, `ⓛocalhost` localhost.
        host = (urlsplit(normalized_url(url)).hostname or "").rstrip(".")
    except ValueError:
        return "is not a valid URL"
    if allow_private:
        return None
    address = _address(host)
    if address is not None:
        kind = _non_public(address)
        return None if kind is None else f"points at {kind}: webhooks go to public hosts only"
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return "names a local-only host: webhooks go to public hosts only"
    return None


def checked_url(url: str, *, allow_private: bool) -> str:
    """The normalised URL to store and send to, after every check without DNS; raises
    `CallbackRefused`. The one validator for every route that takes a callback URL."""
    problem = url_problem(url, allow_private=allow_private)
    if problem is not None:
        raise CallbackRefused(f"callback_url {problem}")
    return normalized_url(url)


async def pinned_request(url: str, *, allow_private: bool) -> PinnedRequest:
    """The request to make for `url`, after every check; raises `CallbackRefused`."""
    url = checked_url(url, allow_private=allow_private)
    if allow_private:
        return PinnedRequest(url, {}, {})
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if _address(host) is not None:  # an address literal, checked above
        return PinnedRequest(url, {}, {})
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise CallbackUnresolved(f"callback_url host does not resolve ({type(error).__name__})") from None
    addresses = [a for a in (_address(str(info[4][0])) for info in infos) if a is not None]
    if not addresses:
        raise CallbackUnresolved("callback_url host does not resolve")
    for address in addresses:
        kind = _non_public(address)
        if kind is not None:
            raise CallbackRefused(f"callback_url host resolves to {kind}: webhooks go to public hosts only")
    chosen = addresses[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return PinnedRequest(
        urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), {"Host": host_header}, extensions
    )
