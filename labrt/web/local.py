"""Is a request from someone at the lab machine itself? One rule for the operator endpoints
(``operator_access = "local"``) and the dev pages.

A loopback peer is not enough. A browser on the lab machine that visits a hostile site whose
name resolves to 127.0.0.1 (DNS rebinding) connects from loopback too, but names that site in
``Host``; and a reverse proxy on the machine relays the whole internet from loopback, saying so
in the headers it adds. So "local" is: a loopback peer, a loopback name in ``Host``, and no
relay header at all.
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

# A Host header: a bracketed IPv6 address or a name without colons, then an optional port.
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]@/\\\s]+))(?::[0-9]{1,5})?")


def loopback_host(request: web.Request) -> bool:
    """The ``Host`` header names this machine: ``localhost``, ``127.0.0.0/8`` or ``[::1]``,
    any port, any case. No ``Host`` (HTTP/1.0) is not a loopback name: aiohttp would put the
    machine's own network name in its place."""
    found = _HOST.fullmatch(request.headers.get("Host", ""))
    if found is None:
        return False
    if found["name"] is not None and found["name"].lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(found["v6"] or found["name"])
    except ValueError:
        return False
    return address.is_loopback and (address.version == 6) == (found["v6"] is not None)


def relayed(request: web.Request) -> bool:
    """A proxy's header is present: the request started somewhere else, whatever its peer."""
    return any(
        name.lower() in ("forwarded", "x-real-ip") or name.lower().startswith("x-forwarded-")
        for name in request.headers
    )


def is_local(request: web.Request) -> bool:
    """From the lab machine itself: a loopback peer, a loopback ``Host``, nothing relayed."""
    try:
        peer = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        peer = False
    return peer and loopback_host(request) and not relayed(request)
