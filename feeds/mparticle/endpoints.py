"""Whether a custom Events API endpoint (the sandbox pod's URL) may be sent a client's data and credentials.

A custom endpoint is set by staff only, and it must be a public host: one that is, or resolves to, a loopback,
private, link-local, multicast, reserved or unspecified address would let whoever sets it reach the partner's own
network (the site's database, a cloud's metadata service) with a client's credentials. Resolved when the
workspace is saved and again each time a client is built to send (a name may point elsewhere later).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def non_public_reason(url: str) -> str | None:
    """Why `url` is not a public http(s) endpoint, in words for staff; None when every address its host
    resolves to is public."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the endpoint URL is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the endpoint URL must start with https:// (or http://) and name a host"
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"the host {host} cannot be resolved"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        for candidate in (address, *_embedded_ipv4(address)):
            if not candidate.is_global or candidate.is_multicast:
                return f"{host} is a loopback, private or link-local address ({address}), not a public endpoint"
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: mapped (::ffff:a.b.c.d), 6to4 (2002::/16), Teredo, NAT64
    (64:ff9b::/96) and the old IPv4-compatible form (::a.b.c.d)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]
