"""Which addresses ``web_fetch`` may connect to.

Only public unicast addresses: loopback, private, link-local (where cloud
metadata services live), shared (CGNAT), multicast, reserved, documentation
and unspecified ranges are refused, for IPv4 and IPv6 alike. An IPv6 address
that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged by the IPv4
address it leads to. CIDRs of ``tools.ssrfWhitelist`` are exempt.

The check runs on the addresses the name resolved to, inside the resolver the
HTTP client connects through (see :mod:`nanobot.tools.web_fetch`), so the
address checked is the address connected to: no DNS rebinding in between.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BLOCKED: list[tuple[IPNetwork, str]] = [
    (ipaddress.ip_network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("169.254.0.0/16", "link-local (where cloud metadata services live)"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("100::/64", "reserved (discard)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("::/8", "reserved"),
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_whitelist(cidrs: list[str]) -> list[IPNetwork]:
    """The configured CIDRs as networks; a bad entry raises ``ValueError`` naming it."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"tools.ssrfWhitelist: {cidr!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
    return out


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (mapped, NAT64 or 6to4), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def refusal(address: str, whitelist: list[IPNetwork]) -> str | None:
    """Why ``address`` must not be fetched, or None when it may be.

    ``address`` is an IP literal as a resolver returns it (an IPv6 zone
    suffix such as ``%eth0`` is ignored).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = embedded_ipv4(ip)
    candidates = [ip] if inner is None else [ip, inner]
    if any(c in net for c in candidates for net in whitelist if c.version == net.version):
        return None
    judged = inner or ip  # a wrapper is judged by the IPv4 address it leads to
    for net, reason in _BLOCKED:
        if judged.version == net.version and judged in net:
            return f"{reason} address"
    if not judged.is_global:
        return "non-public address"
    return None


@dataclass
class SsrfRefused(Exception):
    """A hop of ``web_fetch`` resolved only to addresses it must not reach."""

    host: str
    address: str
    reason: str

    def __str__(self) -> str:
        named = self.address if self.host.strip("[]") == self.address else f"{self.host} ({self.address})"
        return (
            f"refused to connect to {named}: {self.reason}; web_fetch reaches only public "
            "addresses (an operator can exempt networks with tools.ssrfWhitelist)"
        )
