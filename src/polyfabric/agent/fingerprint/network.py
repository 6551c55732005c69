"""The node's network identity as the owner sees it: hostname, addresses and interfaces.

Informational (shown in listings, useful to an operator who needs to reach the machine); the
agent dials out to the coordinator, so nothing here has to be reachable. Loopback and link-local
addresses are left out: they mean nothing off this machine.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import psutil

__all__ = ["detect_network"]


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0 has a zone
    except ValueError:
        return None


def _usable(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def detect_network() -> dict[str, Any]:
    """The hostname, usable addresses (IPv4 first) and the non-loopback interfaces.

    Interfaces are {name, up, speed_mbps, mtu, addresses}; speed and mtu are None when unknown.
    Never raises: what cannot be read is left out.
    """
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = ""
    try:
        if_addrs = psutil.net_if_addrs()
    except Exception:
        if_addrs = {}
    try:
        if_stats = psutil.net_if_stats()
    except Exception:
        if_stats = {}

    interfaces = []
    ipv4: list[str] = []
    ipv6: list[str] = []
    for name in sorted(set(if_addrs) | set(if_stats)):
        stats = if_stats.get(name)
        ips = [
            addr.address
            for addr in if_addrs.get(name, [])
            if addr.family in (socket.AF_INET, socket.AF_INET6)
        ]
        flags = (getattr(stats, "flags", "") or "").split(",")
        if "loopback" in flags or (ips and all((ip := _ip(a)) is not None and ip.is_loopback for a in ips)):
            continue
        addresses = [address for address in ips if _usable(address)]
        for address in addresses:
            (ipv4 if ":" not in address else ipv6).append(address)
        interfaces.append(
            {
                "name": name,
                "up": bool(stats.isup) if stats is not None else None,
                "speed_mbps": int(stats.speed) if stats is not None and stats.speed > 0 else None,
                "mtu": int(stats.mtu) if stats is not None and stats.mtu > 0 else None,
                "addresses": addresses,
            }
        )
    return {"hostname": hostname, "addresses": list(dict.fromkeys(ipv4 + ipv6)), "interfaces": interfaces}
